/**
 * Per-key request limits (uploads stricter than everything else) and a
 * per-client-address limit on failed authentication, answered with
 * `429 Too Many Requests` and `Retry-After`. Fixed one-minute windows, kept
 * in memory per process (with several nodes, each node enforces its own).
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
  let window = -1
  const counts = new Map<string, number>()
  const current = (now: number) => {
    const w = Math.floor(now / windowMillis)
    if (w !== window) {
      window = w
      counts.clear() // old windows are gone: memory stays bounded by one minute of clients
    }
  }
  const tooMany = (now: number, what: string) =>
    HttpServerResponse.unsafeJson(
      { error: "rate_limited", message: `too many ${what}; try again later` },
      { status: 429, headers: { "retry-after": String(Math.max(1, Math.ceil(((window + 1) * windowMillis - now) / 1000))) } }
    )

  return <E, R>(app: HttpApp.Default<E, R>): HttpApp.Default<E, R | HttpServerRequest.HttpServerRequest> =>
    Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      const now = Date.now()
      current(now)
      const address = Option.getOrElse(request.remoteAddress, () => "unknown")
      const failedKey = `auth-failures:${address}`
      if ((counts.get(failedKey) ?? 0) >= limits.authFailuresPerMinute) return tooMany(now, "failed authentications")
      const authorization = request.headers["authorization"]
      if (authorization !== undefined) {
        // counted under a digest of the key: the key itself is never kept
        const key = createHash("sha256").update(authorization).digest("base64url").slice(0, 22)
        const isUpload = request.method === "POST" && new URL(request.url, "http://x").pathname === "/entries"
        const bucket = `${isUpload ? "uploads" : "requests"}:${key}`
        const used = (counts.get(bucket) ?? 0) + 1
        counts.set(bucket, used)
        if (used > (isUpload ? limits.uploadsPerMinute : limits.perMinute)) return tooMany(now, isUpload ? "uploads" : "requests")
      }
      const response = yield* app
      if (response.status === 401) counts.set(failedKey, (counts.get(failedKey) ?? 0) + 1)
      return response
    })
}
