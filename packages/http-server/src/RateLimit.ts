/**
 * Request limits, applied where a request is authenticated (the
 * `Authentication` middleware in `Http.ts`), answered with
 * `429 Too Many Requests` and `Retry-After`:
 *
 * - per API key **id** — after the key authenticated, so the spelling of the
 *   header cannot open a second budget and an unauthenticated request never
 *   spends a valid key's — with uploads stricter than everything else. What
 *   counts as an upload is the **route** the router chose, not the path
 *   string: the router is case-insensitive and ignores trailing and
 *   duplicate slashes, so `/ENTRIES`, `/entries/` and `//entries` are the
 *   upload route and are counted as it.
 * - per client address for **failed** authentication. It refuses only
 *   attempts that fail: behind a reverse proxy every client shares one
 *   address, and a valid key, `/healthz` and `/readyz` keep working while
 *   someone else at that address guesses. (Keys carry 256 random bits: the
 *   entropy makes guessing hopeless; this limit makes it visible and slows
 *   careless clients.)
 *
 * The client address is the socket's peer. `X-Forwarded-For` is read only
 * when `trustProxy` says how many proxies in front of the server append to
 * it; otherwise a client could invent an address per attempt.
 *
 * Every refusal is logged at warning with the key id or the address and the
 * route — never the key. Counters are one-minute windows kept in memory per
 * process: with several nodes, each node enforces its own.
 *
 * @since 0.1.0
 */
import { HttpApp, HttpRouter, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Context, Data, Effect, Layer, Option } from "effect"
import { isIP } from "node:net"
import { EntriesGroup } from "./Api.js"

/** @since 0.1.0 */
export interface Limits {
  readonly perMinute: number
  readonly uploadsPerMinute: number
  readonly authFailuresPerMinute: number
}

/** @since 0.1.0 */
export interface Options extends Limits {
  /**
   * How many reverse proxies in front of the server append the address of
   * their peer to `X-Forwarded-For`. `0` (the default): the header is
   * ignored. `n`: the client is the `n`-th entry from the right (the
   * left-most if there are fewer); entries further left are the client's own
   * claims and are ignored.
   */
  readonly trustProxy?: number | undefined
}

/**
 * A request refused by a limit. The `429` response has already been
 * arranged when this fails; the caller only has to stop.
 * @since 0.1.0
 * @category errors
 */
export class RateLimited extends Data.TaggedError("RateLimited")<{ readonly message: string }> {}

/**
 * The limiter the authentication middleware consults.
 * @since 0.1.0
 * @category tags
 */
export class RateLimiter extends Context.Tag("@voice-journal/http-server/RateLimiter")<RateLimiter, {
  /** Counts an authenticated request against its key's budget for the current route. */
  readonly admit: (
    keyId: string
  ) => Effect.Effect<void, RateLimited, HttpServerRequest.HttpServerRequest | HttpRouter.RouteContext>
  /** Counts a failed authentication against the client's address; refuses once the address's budget is spent. */
  readonly failed: Effect.Effect<void, RateLimited, HttpServerRequest.HttpServerRequest | HttpRouter.RouteContext>
}>() {}

const windowMillis = 60_000

const upload = EntriesGroup.endpoints.upload

/**
 * The client's address: the socket's peer, or with `trustProxy` hops the
 * `trustProxy`-th `X-Forwarded-For` entry from the right.
 * @since 0.1.0
 */
export const clientAddress = (request: HttpServerRequest.HttpServerRequest, trustProxy = 0): string => {
  const peer = Option.getOrElse(request.remoteAddress, () => "unknown")
  const forwarded = request.headers["x-forwarded-for"]
  if (trustProxy <= 0 || forwarded === undefined) return peer
  // Node joins repeated headers with ", "
  const hops = forwarded.split(",").map((hop) => hop.trim()).filter((hop) => hop !== "")
  const client = hops[Math.max(0, hops.length - trustProxy)]
  // a proxy that writes something other than an address (e.g. "unknown") gives us nothing to key on
  return client !== undefined && isIP(client) !== 0 ? client : peer
}

/**
 * A limiter with its own counters.
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): RateLimiter["Type"] => {
  // each counter's window starts at its first request, so a burst is never split by a clock boundary
  const counters = new Map<string, { start: number; count: number }>()
  let lastSweep = 0
  const counter = (key: string, now: number) => {
    if (now - lastSweep >= windowMillis) {
      lastSweep = now
      for (const [k, c] of counters) if (now - c.start >= windowMillis) counters.delete(k)
    }
    let c = counters.get(key)
    if (c === undefined || now - c.start >= windowMillis) {
      c = { start: now, count: 0 }
      counters.set(key, c)
    }
    return c
  }

  /** Logs the refusal and makes the response a 429, whatever the rest of the request answers. */
  const refuse = (now: number, c: { readonly start: number }, what: string, annotations: Record<string, string>) => {
    const retryAfter = Math.max(1, Math.ceil((c.start + windowMillis - now) / 1000))
    const message = `too many ${what}; try again in ${retryAfter} s`
    const response = HttpServerResponse.unsafeJson(
      { error: "rate_limited", message },
      { status: 429, headers: { "retry-after": String(retryAfter) } }
    )
    return Effect.logWarning(`rate limited: too many ${what}`).pipe(
      Effect.annotateLogs(annotations),
      Effect.zipRight(HttpApp.appendPreResponseHandler(() => Effect.succeed(response))),
      Effect.zipRight(Effect.fail(new RateLimited({ message })))
    )
  }

  const current = Effect.all([HttpServerRequest.HttpServerRequest, HttpRouter.RouteContext])
  const routeName = (route: HttpRouter.Route<unknown, unknown>) => `${route.method} ${route.path}`

  return {
    admit: (keyId) =>
      Effect.flatMap(current, ([request, { route }]) => {
        const now = Date.now()
        const isUpload = route.method === upload.method && route.path === upload.path
        const c = counter(`${isUpload ? "uploads" : "requests"}:${keyId}`, now)
        c.count++
        if (c.count <= (isUpload ? options.uploadsPerMinute : options.perMinute)) return Effect.void
        return refuse(now, c, isUpload ? "uploads" : "requests", {
          "rate_limit.key_id": keyId,
          "http.route": routeName(route),
          "client.address": clientAddress(request, options.trustProxy)
        })
      }),
    failed: Effect.flatMap(current, ([request, { route }]) => {
      const now = Date.now()
      const address = clientAddress(request, options.trustProxy)
      const c = counter(`auth-failures:${address}`, now)
      if (c.count < options.authFailuresPerMinute) {
        c.count++
        return Effect.void
      }
      return refuse(now, c, "failed authentications", { "client.address": address, "http.route": routeName(route) })
    })
  }
}

/**
 * The limiter as a Layer; each build has its own counters.
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<RateLimiter> => Layer.sync(RateLimiter, () => make(options))
