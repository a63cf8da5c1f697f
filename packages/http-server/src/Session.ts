/**
 * Browser sessions: `POST /session` trades an API key for a random session
 * id in an `HttpOnly; SameSite=Strict` cookie (`Secure` when the server's
 * origin is https), so the web app never keeps the key. The store keeps only
 * the id's SHA-256, the user, the key it came from (revoking the key ends
 * the session) and the expiry.
 *
 * CSRF: a state-changing request authenticated by the cookie must carry an
 * `Origin` equal to the server's own origin ({@link serverOrigin}).
 * `SameSite=Strict` already keeps other sites' requests cookie-less in
 * current browsers; the Origin check also covers sibling subdomains (same
 * site, other origin) and older browsers. Bearer requests carry no ambient
 * credential and are exempt.
 *
 * @since 0.1.0
 */
import { HttpServerRequest } from "@effect/platform"
import { ApiKeys } from "@voice-journal/core"
import { Option, Redacted } from "effect"
import { randomBytes } from "node:crypto"

/** The cookie's name. @since 0.1.0 */
export const cookieName = "vj_session"

/** Default session lifetime: 30 days (`VJ_SESSION_SECONDS`). @since 0.1.0 */
export const defaultLifetimeSeconds = 30 * 24 * 3600

/** @since 0.1.0 */
export interface SessionOptions {
  /** How long a session lasts (the cookie's Max-Age and the stored expiry). */
  readonly lifetimeSeconds: number
  /** The origin clients see (`VJ_PUBLIC_ORIGIN`), when a reverse proxy stands in front; else the request's own. */
  readonly publicOrigin?: string | undefined
  /** Whether the listener itself speaks TLS. */
  readonly tls: boolean
}

/** A new session id: 256 random bits. @since 0.1.0 */
export const generateId = (): Redacted.Redacted<string> => Redacted.make(randomBytes(32).toString("base64url"))

/** The stored form of a session id (as for API keys: SHA-256, looked up by digest). @since 0.1.0 */
export const hashId = ApiKeys.hash

/** The session id the request's cookie carries, if any. @since 0.1.0 */
export const fromRequest = (request: HttpServerRequest.HttpServerRequest): Option.Option<Redacted.Redacted<string>> => {
  const value = request.cookies[cookieName]
  return value === undefined || value === "" ? Option.none() : Option.some(Redacted.make(value))
}

/**
 * The server's origin as clients reach it: `VJ_PUBLIC_ORIGIN` if set, else
 * the scheme of the listener and the request's `Host`.
 * @since 0.1.0
 */
export const serverOrigin = (request: HttpServerRequest.HttpServerRequest, options: SessionOptions): string | undefined => {
  if (options.publicOrigin !== undefined) return options.publicOrigin
  const host = request.headers["host"]
  return host === undefined ? undefined : normalizeOrigin(`${options.tls ? "https" : "http"}://${host}`)
}

/** `scheme://host[:port]`, lower-cased, default port dropped; undefined when `value` is not an http(s) origin. @since 0.1.0 */
export const normalizeOrigin = (value: string): string | undefined => {
  try {
    const url = new URL(value)
    if (url.protocol !== "http:" && url.protocol !== "https:") return undefined
    return url.origin
  } catch {
    // not a URL: no origin ("null", garbage)
    return undefined
  }
}

/**
 * Why a request's `Origin` is not acceptable for a cookie-authenticated
 * state change, or None when it is the server's own.
 * @since 0.1.0
 */
export const originProblem = (request: HttpServerRequest.HttpServerRequest, options: SessionOptions): Option.Option<string> => {
  const origin = request.headers["origin"]
  const expected = serverOrigin(request, options)
  if (origin === undefined) {
    return Option.some("a request signed in with the session cookie must carry an Origin header (browsers send it); API clients use Authorization: Bearer <key>")
  }
  if (expected === undefined || normalizeOrigin(origin) !== expected) {
    return Option.some(`Origin ${origin.slice(0, 100)} is not this server's origin${expected === undefined ? "" : ` (${expected})`}; cross-site requests are refused`)
  }
  return Option.none()
}

/** True for methods that change state (and so need the Origin check). @since 0.1.0 */
export const isStateChanging = (method: string) => method !== "GET" && method !== "HEAD" && method !== "OPTIONS"

/** Whether the cookie gets `Secure`: the listener speaks TLS, or the public origin is https. */
const secure = (options: SessionOptions) => options.tls || (options.publicOrigin?.startsWith("https:") ?? false)

/** The `Set-Cookie` value that signs a browser in. @since 0.1.0 */
export const setCookie = (id: Redacted.Redacted<string>, options: SessionOptions): string =>
  `${cookieName}=${Redacted.value(id)}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${Math.floor(options.lifetimeSeconds)}${
    secure(options) ? "; Secure" : ""
  }`

/** The `Set-Cookie` value that signs a browser out (same attributes, expired). @since 0.1.0 */
export const clearCookie = (options: SessionOptions): string =>
  `${cookieName}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0${secure(options) ? "; Secure" : ""}`
