/**
 * The request log: one line per response with method, URL, status and
 * duration, like `HttpMiddleware.logger`, except that query values are
 * redacted — a client that puts its key in the URL (`?api_key=vj_…`) must
 * not find it in the server's log. Parameter names stay, so the line still
 * says what was asked. No header is logged (so no `Authorization`, no
 * cookie). A failure's cause is logged with the same redaction: platform
 * error messages (route not found, unreadable body) quote the URL; and
 * the session cookie's value (`vj_session=…`) is replaced wherever a
 * message quotes it.
 *
 * @since 0.1.0
 */
import { type HttpApp, HttpMiddleware, HttpServerError, HttpServerRequest } from "@effect/platform"
import { Cause, Context, Effect, Option } from "effect"

const redacted = "REDACTED"

/**
 * `url` with every query value replaced by `REDACTED` (a part without `=`
 * is all value, so all of it is replaced); the fragment is dropped.
 * @since 0.1.0
 */
export const redactUrl = (url: string): string => {
  const q = url.indexOf("?")
  if (q === -1) return url.split("#")[0]!
  const query = url.slice(q + 1).split("#")[0]!
  const parts = query.split("&").map((part) => {
    if (part === "") return part
    const eq = part.indexOf("=")
    return eq === -1 ? redacted : `${part.slice(0, eq)}=${redacted}`
  })
  return `${url.slice(0, q)}?${parts.join("&")}`
}

/**
 * `text` with every `vj_session=<id>` replaced by `vj_session=REDACTED`.
 * @since 0.1.0
 */
export const redactSessionCookie = (text: string): string => text.replace(/vj_session=[^;,\s"']+/g, `vj_session=${redacted}`)

/** `text` with every occurrence of the raw URL's query replaced by its redacted form, and session ids. */
const scrub = (text: string, urls: ReadonlyArray<string>) => {
  let out = redactSessionCookie(text)
  for (const url of urls) {
    const q = url.indexOf("?")
    if (q === -1) continue
    const query = url.slice(q)
    out = out.split(query).join(redactUrl(`x${query}`).slice(1))
  }
  return out
}

/**
 * The middleware. Honours `HttpMiddleware.withLoggerDisabled`.
 * @since 0.1.0
 */
export const logger: <E, R>(httpApp: HttpApp.Default<E, R>) => HttpApp.Default<E, R> = HttpMiddleware.make((httpApp) => {
  let counter = 0
  return Effect.withFiberRuntime((fiber) => {
    const request = Context.unsafeGet(fiber.currentContext, HttpServerRequest.HttpServerRequest)
    const annotations = { "http.method": request.method, "http.url": redactUrl(request.url) }
    return Effect.withLogSpan(
      Effect.flatMap(Effect.exit(httpApp), (exit) => {
        if (fiber.getFiberRef(HttpMiddleware.loggerDisabled)) return exit
        if (exit._tag === "Success") {
          return Effect.zipRight(
            Effect.annotateLogs(Effect.log("Sent HTTP response"), { ...annotations, "http.status": exit.value.status }),
            exit
          )
        }
        const [response, cause] = HttpServerError.causeResponseStripped(exit.cause)
        const line = Option.match(cause, {
          onNone: () => Effect.log("Sent HTTP response"),
          // the cause as text, scrubbed of the query; an answer the server could not give is an error
          onSome: (c) => {
            const text = scrub(Cause.pretty(c), [request.url, request.originalUrl])
            return response.status >= 500 ? Effect.logError(text) : Effect.log(text)
          }
        })
        return Effect.zipRight(Effect.annotateLogs(line, { ...annotations, "http.status": response.status }), exit)
      }),
      `http.span.${++counter}`
    )
  })
})
