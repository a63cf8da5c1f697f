/**
 * How the server serves the web app: the shell at / and every /app route,
 * hashed assets cached for good, the shell and service worker revalidated,
 * a strict Content-Security-Policy on all of it, and no inline script.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { contentSecurityPolicy } from "../src/WebApp.js"
import * as WebApp from "../src/WebApp.js"
import { call, start } from "./support/TestServer.js"

const get = (url: string, pathname: string) => call(url, undefined, pathname)

describe("the web app's files", () => {
  it.scopedLive("the shell at / and /app/*, hashed assets immutable, shell and service worker no-cache, CSP everywhere", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const shells = yield* Effect.all(["/", "/app", "/app/entries/some-id"].map((p) => get(s.url, p)))
      for (const r of shells) {
        expect(r.status).toBe(200)
        expect(r.headers.get("content-type")).toMatch(/^text\/html/)
        expect(r.headers.get("cache-control")).toBe("no-cache")
        expect(r.headers.get("content-security-policy")).toBe(contentSecurityPolicy)
        expect(r.headers.get("x-content-type-options")).toBe("nosniff")
      }
      const html = shells[0]!.body as string
      expect(html).toBe(shells[2]!.body)
      // no inline script or style, nothing from another origin
      expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/)
      expect(html).not.toMatch(/<style|style=|https?:\/\//)
      const assets = [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1]!)
      expect(assets.some((a) => /^\/assets\/app-[A-Z0-9]{8}\.js$/.test(a))).toBe(true)
      expect(assets.some((a) => /^\/assets\/app-[A-Z0-9]{8}\.css$/.test(a))).toBe(true)
      for (const asset of assets) {
        const r = yield* get(s.url, asset)
        expect(r.status).toBe(200)
        expect(r.headers.get("cache-control")).toBe("public, max-age=31536000, immutable")
        expect(r.headers.get("content-type")).toMatch(asset.endsWith(".js") ? /^text\/javascript/ : /^text\/css/)
        // the bundle loads nothing from elsewhere (no CDN, no web fonts): the only URLs in it are
        // XML namespace names (Preact's SVG/MathML) and the link to an entry's Notion page
        const urls = [...String(r.body).matchAll(/https?:\/\/[^"'`\s)]+/g)].map((m) => m[0])
        expect(urls.filter((u) => !/^http:\/\/www\.w3\.org\/|^https:\/\/www\.notion\.so\//.test(u))).toEqual([])
      }
      const sw = yield* get(s.url, "/sw.js")
      expect(sw.status).toBe(200)
      expect(sw.headers.get("cache-control")).toBe("no-cache")
      expect(sw.headers.get("content-type")).toMatch(/^text\/javascript/)
      // the service worker caches exactly this build's shell
      for (const asset of assets) expect(sw.body).toContain(asset)
      const manifest = yield* get(s.url, "/manifest.webmanifest")
      expect(manifest.headers.get("content-type")).toMatch(/^application\/manifest\+json/)
      expect(manifest.body).toMatchObject({ start_url: "/app", display: "standalone" })

      // what is not there is 404 in the envelope; a wrong method on the shell is 405
      const missing = yield* get(s.url, "/assets/app-NOTTHERE.js")
      expect(missing.status).toBe(404)
      expect(missing.body).toMatchObject({ error: "not_found" })
      const post = yield* call(s.url, undefined, "/", { method: "POST" })
      expect(post.status).toBe(405)
      expect(post.headers.get("allow")).toBe("GET")
      // the API is unchanged next to it
      expect((yield* get(s.url, "/entries")).status).toBe(401)
    }))

  it.scopedLive("a server whose web app was never built says how to build it (503), and the API still works", () =>
    Effect.gen(function*() {
      const s = yield* start({ webDir: path.join(fs.mkdtempSync(path.join(process.env["TMPDIR"] ?? "/tmp", "vj-noweb-")), "web-dist") })
      const r = yield* get(s.url, "/app")
      expect(r.status).toBe(503)
      expect(r.body).toMatch(/pnpm build/)
      expect(r.headers.get("content-security-policy")).toBe(WebApp.contentSecurityPolicy)
      expect((yield* get(s.url, "/healthz")).status).toBe(200)
    }))
})
