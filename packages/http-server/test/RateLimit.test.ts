/**
 * Rate limits and request logs over real HTTP against the started server:
 * counters key on the authenticated key's id and the route, the
 * failed-authentication limit refuses only failed attempts, X-Forwarded-For
 * is trusted only when configured, every 429 is logged, and request logs
 * never hold a key (query string, Authorization header or cookie).
 */
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Either, FiberRef, HashSet, Logger } from "effect"
import { audioBytes } from "../../core/test/support/Audio.js"
import * as Config from "../src/Config.js"
import { call, keyWithId, start, waitFor } from "./support/TestServer.js"

/** Runs `self` (a server start) with a logger that collects every formatted line the server writes. */
const withCapturedLogs = <A, E, R>(self: Effect.Effect<A, E, R>) => {
  const lines: Array<string> = []
  const collector = Logger.map(Logger.logfmtLogger, (line) => {
    lines.push(line)
  })
  return Effect.map(Effect.locallyWith(self, FiberRef.currentLoggers, HashSet.add(collector)), (a) => [a, lines] as const)
}

const raw = (url: string, pathname: string, headers: Record<string, string>, init: RequestInit = {}) =>
  Effect.promise(async () => {
    const response = await fetch(url + pathname, { ...init, headers })
    const text = await response.text()
    return { status: response.status, headers: response.headers, text }
  })

/**
 * A transcriber that answers at once: the loopback OpenAI fake runs
 * pocketsphinx synchronously in this process, and an event loop blocked for
 * seconds lets the server's keep-alive timeout race the client's next request
 * (a reset that has nothing to do with rate limits).
 */
const quick = { transcription: { kind: "command", command: "echo transcribed", convert: "none" } } as const

const wav = () => ({ method: "POST", body: audioBytes("wav"), headers: { "content-type": "audio/wav" } })

describe("rate limits", () => {
  // moved here from Server.test.ts
  it.scopedLive("rate limits: per key (uploads stricter) and per address for failed authentication → 429 with Retry-After", () =>
    Effect.gen(function*() {
      const s = yield* start({ ...quick, limits: { perMinute: 5, uploadsPerMinute: 2, authFailuresPerMinute: 3 } })
      const key = yield* s.key("alice")
      for (let i = 0; i < 2; i++) {
        expect((yield* call(s.url, key, "/entries", { method: "POST", body: audioBytes("wav"), headers: { "content-type": "audio/wav" } })).status).toBe(201)
      }
      const third = yield* call(s.url, key, "/entries", { method: "POST", body: audioBytes("wav"), headers: { "content-type": "audio/wav" } })
      expect(third.status).toBe(429)
      expect(Number(third.headers.get("retry-after"))).toBeGreaterThan(0)
      const statuses: Array<number> = []
      for (let i = 0; i < 6; i++) statuses.push((yield* call(s.url, key, "/entries")).status)
      expect(statuses.slice(0, 5)).toEqual([200, 200, 200, 200, 200])
      expect(statuses[5]).toBe(429)
      for (let i = 0; i < 3; i++) expect((yield* call(s.url, `vj_wrong_${i}`, "/entries")).status).toBe(401)
      const blocked = yield* call(s.url, "vj_wrong_again", "/entries")
      expect(blocked.status).toBe(429)
      expect(blocked.body.error).toBe("rate_limited")
    }))

  it.scopedLive("the scheme's spelling and extra spaces share one counter: it is the key's id that counts", () =>
    Effect.gen(function*() {
      const s = yield* start({ ...quick, limits: { perMinute: 3, uploadsPerMinute: 10, authFailuresPerMinute: 100 } })
      const key = yield* s.key("alice")
      const statuses: Array<number> = []
      for (const scheme of ["bearer ", "BEARER ", "BeArEr   ", "Bearer "]) {
        statuses.push((yield* raw(s.url, "/entries", { authorization: scheme + key })).status)
      }
      expect(statuses).toEqual([200, 200, 200, 429])
    }))

  for (const spelling of ["/ENTRIES", "/entries/", "//entries", "/Entries//", "/entries?x=1"]) {
    it.scopedLive(`an upload to ${spelling} counts as an upload (the router routes it to POST /entries)`, () =>
      Effect.gen(function*() {
        const s = yield* start({ ...quick, limits: { perMinute: 100, uploadsPerMinute: 1, authFailuresPerMinute: 100 } })
        const key = yield* s.key("alice")
        expect((yield* call(s.url, key, "/entries", wav())).status).toBe(201)
        const again = yield* call(s.url, key, spelling, wav())
        expect([spelling, again.status, again.body.error]).toEqual([spelling, 429, "rate_limited"])
        expect(Number(again.headers.get("retry-after"))).toBeGreaterThan(0)
        // other routes keep their own budget
        const list = yield* call(s.url, key, "/entries")
        expect([list.status, list.body]).toEqual([200, expect.anything()])
      }))
  }

  it.scopedLive("after an address exhausts failed authentications: a wrong key is 429, a valid key and health still answer", () =>
    Effect.gen(function*() {
      const s = yield* start({ ...quick, limits: { perMinute: 100, uploadsPerMinute: 10, authFailuresPerMinute: 2 } })
      const key = yield* s.key("alice")
      expect((yield* call(s.url, "vj_wrong_1", "/entries")).status).toBe(401)
      expect((yield* call(s.url, "vj_wrong_2", "/entries")).status).toBe(401)
      const blocked = yield* call(s.url, "vj_wrong_3", "/entries")
      expect([blocked.status, blocked.body.error]).toEqual([429, "rate_limited"])
      expect(Number(blocked.headers.get("retry-after"))).toBeGreaterThan(0)
      expect((yield* call(s.url, key, "/entries")).status).toBe(200)
      expect((yield* call(s.url, key, "/entries", wav())).status).toBe(201)
      expect((yield* call(s.url, undefined, "/healthz")).status).toBe(200)
      expect((yield* call(s.url, undefined, "/readyz")).status).toBe(200)
      // a wrong key sent to a health route is not an attempt: health is never refused
      expect((yield* call(s.url, "vj_wrong_4", "/healthz")).status).toBe(200)
      expect((yield* call(s.url, "vj_wrong_5", "/entries")).status).toBe(429)
    }))

  it.scopedLive("X-Forwarded-For is ignored by default: inventing addresses does not dodge the failure limit", () =>
    Effect.gen(function*() {
      const s = yield* start({ ...quick, limits: { perMinute: 100, uploadsPerMinute: 10, authFailuresPerMinute: 2 } })
      const statuses: Array<number> = []
      for (const forwarded of ["10.0.0.1", "10.0.0.2", "10.0.0.3"]) {
        statuses.push((yield* raw(s.url, "/entries", { authorization: "Bearer vj_wrong", "x-forwarded-for": forwarded })).status)
      }
      expect(statuses).toEqual([401, 401, 429])
    }))

  it.scopedLive("with trustProxy: 1 the right-most X-Forwarded-For entry is the client; entries to its left are ignored", () =>
    Effect.gen(function*() {
      const s = yield* start({ ...quick, trustProxy: 1, limits: { perMinute: 100, uploadsPerMinute: 10, authFailuresPerMinute: 2 } })
      const attempt = (forwarded: string | undefined) =>
        Effect.map(
          raw(s.url, "/entries", { authorization: "Bearer vj_wrong", ...(forwarded !== undefined ? { "x-forwarded-for": forwarded } : {}) }),
          (r) => r.status
        )
      expect(yield* attempt("6.6.6.6, 10.0.0.1")).toBe(401)
      expect(yield* attempt("10.0.0.1")).toBe(401)
      // a client prepending invented addresses is still 10.0.0.1 to us
      expect(yield* attempt("7.7.7.7, 10.0.0.1")).toBe(429)
      // another client behind the same proxy has its own budget
      expect(yield* attempt("10.0.0.2")).toBe(401)
      // no header: the socket's address
      expect(yield* attempt(undefined)).toBe(401)
    }))

  it.scopedLive("every 429 is logged at warning with the key id or address and the route, never the key", () =>
    Effect.gen(function*() {
      const [s, lines] = yield* withCapturedLogs(start({ ...quick, limits: { perMinute: 1, uploadsPerMinute: 1, authFailuresPerMinute: 1 } }))
      const { apiKey, keyId } = yield* keyWithId(s, "alice")
      expect((yield* call(s.url, apiKey, "/entries")).status).toBe(200)
      expect((yield* call(s.url, apiKey, "/entries")).status).toBe(429)
      const keyLine = yield* waitFor(async () => lines.find((l) => l.includes("level=WARN") && l.includes(keyId)), 5_000)
      expect(keyLine).toContain("GET /entries")
      expect((yield* call(s.url, "vj_wrong_secret_1", "/entries/abc")).status).toBe(401)
      expect((yield* call(s.url, "vj_wrong_secret_2", "/entries/abc")).status).toBe(429)
      const addressLine = yield* waitFor(
        async () => lines.find((l) => l.includes("level=WARN") && l.includes("/entries/:id") && l.includes("127.0.0.1")),
        5_000
      )
      expect(addressLine).toContain("failed authentications")
      for (const line of lines) {
        expect(line).not.toContain(apiKey)
        expect(line).not.toContain("vj_wrong_secret")
      }
    }))
})

describe("request logs", () => {
  it.scopedLive("query values, the Authorization header and cookies never reach the log; parameter names do", () =>
    Effect.gen(function*() {
      const [s, lines] = yield* withCapturedLogs(start(quick))
      const key = yield* s.key("alice")
      const headers = { authorization: `Bearer ${key}`, cookie: "session=cookie-secret-value" }
      expect((yield* raw(s.url, `/entries?api_key=${key}&limit=5`, headers)).status).toBe(200)
      // unknown route: the router's own error message carries the URL
      expect((yield* raw(s.url, `/no-such-route?api_key=${key}&token=query-secret-value`, headers)).status).toBe(404)
      // a failing request (bad paging) and an unauthenticated one
      expect((yield* raw(s.url, `/entries?limit=query-secret-value`, headers)).status).toBe(400)
      expect((yield* raw(s.url, `/entries?api_key=${key}`, { cookie: "session=cookie-secret-value" })).status).toBe(401)
      yield* waitFor(async () => lines.filter((l) => l.includes("http.url")).length >= 4 ? true : undefined, 5_000)
      const requestLines = lines.filter((l) => l.includes("http.url"))
      expect(requestLines.some((l) => l.includes("/entries?api_key=") && l.includes("limit="))).toBe(true)
      expect(requestLines.some((l) => l.includes("/no-such-route?api_key=") && l.includes("token="))).toBe(true)
      for (const line of lines) {
        expect(line).not.toContain(key)
        expect(line).not.toContain(key.slice(3))
        expect(line).not.toContain("query-secret-value")
        expect(line).not.toContain("cookie-secret-value")
      }
    }))
})

describe("VJ_TRUST_PROXY", () => {
  const read = (env: Record<string, string>) =>
    Effect.either(Effect.withConfigProvider(Config.config, ConfigProvider.fromMap(new Map(Object.entries(env)))))
  it.effect("defaults to 0 (X-Forwarded-For ignored), takes a number of hops, and refuses anything else naming the variable", () =>
    Effect.gen(function*() {
      expect(Either.map(yield* read({}), (c) => c.trustProxy)).toEqual(Either.right(0))
      expect(Either.map(yield* read({ VJ_TRUST_PROXY: "2" }), (c) => c.trustProxy)).toEqual(Either.right(2))
      for (const bad of ["-1", "yes", "1.5"]) {
        const result = yield* read({ VJ_TRUST_PROXY: bad })
        expect(Either.isLeft(result) && String(result.left)).toContain("VJ_TRUST_PROXY")
      }
    }))
})
