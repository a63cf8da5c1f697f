/**
 * Serves the web app (built from `web/` by `web/build.ts` into `web-dist/`)
 * at `/` and `/app/*` (the single-page app's routes all get its shell),
 * with its hashed assets under `/assets/`, the service worker at `/sw.js`
 * and the manifest. Every answer carries a strict Content-Security-Policy:
 * scripts, styles, fonts and connections from this origin only, nothing
 * inline, no framing — the app needs no CDN and works with no internet.
 *
 * Caching: hashed assets never change under their name (`immutable`, a
 * year); the shell, the service worker and the manifest are revalidated on
 * every load (`no-cache`), so a new build reaches clients on their next visit.
 *
 * @since 0.1.0
 */
import { HttpApiBuilder, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

/** Where `web/build.ts` writes the app (next to `src/` and `dist/`, so both find it). @since 0.1.0 */
export const defaultDirectory = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../web-dist")

/** @since 0.1.0 */
export const contentSecurityPolicy = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data: blob:",
  "media-src 'self' blob:",
  "connect-src 'self'",
  "font-src 'self'",
  "worker-src 'self'",
  "manifest-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'"
].join("; ")

const securityHeaders = {
  "content-security-policy": contentSecurityPolicy,
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin"
}

const revalidate = "no-cache"
const immutable = "public, max-age=31536000, immutable"

const contentTypes: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".webmanifest": "application/manifest+json",
  ".map": "application/json"
}

/** The paths outside `/assets/` the app answers (besides `/` and `/app/*`); listed for the 405 table. @since 0.1.0 */
export const rootFiles = ["/sw.js", "/manifest.webmanifest", "/icon.svg"] as const

interface File {
  readonly body: Uint8Array
  readonly contentType: string
}

/** The built app, read once at start (it is small); `undefined` when it was never built. */
const load = (directory: string): ReadonlyMap<string, File> | undefined => {
  if (!fs.existsSync(path.join(directory, "index.html"))) return undefined
  const files = new Map<string, File>()
  const walk = (dir: string) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name)
      if (entry.isDirectory()) walk(full)
      else {
        files.set("/" + path.relative(directory, full).split(path.sep).join("/"), {
          body: new Uint8Array(fs.readFileSync(full)),
          contentType: contentTypes[path.extname(entry.name)] ?? "application/octet-stream"
        })
      }
    }
  }
  walk(directory)
  return files
}

const respond = (file: File, cacheControl: string) =>
  HttpServerResponse.uint8Array(file.body, {
    contentType: file.contentType,
    headers: { ...securityHeaders, "cache-control": cacheControl }
  })

const notBuilt = HttpServerResponse.text(
  "The web app is not built: run `pnpm build` (or `pnpm serve`, which builds it), then restart the server.",
  { status: 503, headers: { ...securityHeaders, "cache-control": "no-store" } }
)

/**
 * The routes of the web app on the API's router.
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: { readonly directory?: string } = {}) =>
  HttpApiBuilder.Router.use((router) =>
    Effect.gen(function*() {
      const directory = options.directory ?? defaultDirectory
      const files = load(directory)
      if (files === undefined) {
        yield* Effect.logWarning(`web app not built (no ${path.join(directory, "index.html")}): / answers 503 until \`pnpm build\` has run`)
      }
      const shell = Effect.sync(() => {
        const index = files?.get("/index.html")
        return index === undefined ? notBuilt : respond(index, revalidate)
      })
      const notFound = HttpServerResponse.unsafeJson({ error: "not_found", message: "no such file" }, { status: 404, headers: securityHeaders })
      const asset = Effect.map(HttpServerRequest.HttpServerRequest, (request) => {
        const pathname = new URL(request.url, "http://localhost").pathname
        const file = files?.get(pathname)
        return file === undefined ? notFound : respond(file, immutable)
      })
      yield* router.get("/", shell)
      yield* router.get("/app", shell)
      yield* router.get("/app/*", shell)
      yield* router.get("/assets/*", asset)
      for (const name of rootFiles) {
        yield* router.get(name, Effect.sync(() => {
          const file = files?.get(name)
          return file === undefined ? notFound : respond(file, revalidate)
        }))
      }
    })
  )
