/**
 * Per-key request limits (uploads stricter than everything else) and a
 * per-client-address limit on failed authentication, answered with
 * `429 Too Many Requests` and `Retry-After`. One-minute windows per counter,
 * kept in memory per process (with several nodes, each node enforces its own).
 *
 * @since 0.1.0
 */
import { type HttpApp, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Effect, Option } from "effect"
import { createHash } from "node:crypto"

/** @since 0.1.0 */
export interface Limits {
  readonly perMinute: number
  readonly uploadsPerMinute: number
  readonly authFailuresPerMinute: number
}

const windowMillis = 60_000

/**
 * An HTTP middleware enforcing `limits`. Each call makes independent counters.
 * @since 0.1.0
 */
export const middleware = (limits: Limits) => {
  // each counter's window starts at its first request, so a burst is never split by a clock boundary
  const counters = new Map<string, { start: number; count: number }>()
  let lastSweep = 0
  const sweep = (now: number) => {
    if (now - lastSweep < windowMillis) return
    lastSweep = now
    for (const [key, c] of counters) if (now - c.start >= windowMillis) counters.delete(key)
  }
  const counter = (key: string, now: number) => {
    let c = counters.get(key)
    if (c === undefined || now - c.start >= windowMillis) {
      c = { start: now, count: 0 }
      counters.set(key, c)
    }
    return c
  }
  const tooMany = (now: number, c: { start: number }, what: string) =>
    HttpServerResponse.unsafeJson(
      { error: "rate_limited", message: `too many ${what}; try again later` },
      { status: 429, headers: { "retry-after": String(Math.max(1, Math.ceil((c.start + windowMillis - now) / 1000))) } }
    )

  return <E, R>(app: HttpApp.Default<E, R>): HttpApp.Default<E, R | HttpServerRequest.HttpServerRequest> =>
    Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      const now = Date.now()
      sweep(now)
      const address = Option.getOrElse(request.remoteAddress, () => "unknown")
      const failures = counter(`auth-failures:${address}`, now)
      if (failures.count >= limits.authFailuresPerMinute) return tooMany(now, failures, "failed authentications")
      const authorization = request.headers["authorization"]
      if (authorization !== undefined) {
        // counted under a digest of the key: the key itself is never kept
        const key = createHash("sha256").update(authorization).digest("base64url").slice(0, 22)
        const isUpload = request.method === "POST" && new URL(request.url, "http://x").pathname === "/entries"
        const c = counter(`${isUpload ? "uploads" : "requests"}:${key}`, now)
        c.count++
        if (c.count > (isUpload ? limits.uploadsPerMinute : limits.perMinute)) return tooMany(now, c, isUpload ? "uploads" : "requests")
      }
      const response = yield* app
      if (response.status === 401) failures.count++
      return response
    })
}
