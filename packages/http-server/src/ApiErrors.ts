/**
 * How failures become HTTP answers: every non-2xx body is
 * `{ "error": <code>, "message": <text> }` (the codes are declared in `Api.ts`).
 *
 * @since 0.1.0
 */
import {
  Headers,
  HttpApi,
  HttpApiBuilder,
  HttpApiError,
  type HttpApp,
  HttpServerError,
  HttpServerRequest,
  HttpServerResponse
} from "@effect/platform"
import { Errors } from "@voice-journal/core"
import { Cause, Effect, Schema } from "effect"
import {
  type ApiError,
  BadRequest,
  Conflict,
  Forbidden,
  Internal,
  NotFound,
  PayloadTooLarge,
  Unauthorized,
  Unavailable,
  UnsupportedMediaType,
  VoiceJournalApi
} from "./Api.js"

/** @since 0.1.0 */
export type Tagged = { readonly _tag: string; readonly message: string }

/**
 * Maps a core error to the API's `{ error, message }`. Internal failures are
 * logged and answered without detail (no stack traces, no secrets).
 * @since 0.1.0
 */
export const toApiError = (e: Tagged): Effect.Effect<never, ApiError> => {
  if (Errors.isStoreBusy(e)) return databaseBusy
  switch (e._tag) {
    case "NotFound":
    case "AudioMissing":
      return Effect.fail({ error: "not_found", message: e.message })
    case "InvalidState":
    case "PrimaryConflict":
    case "NameTaken":
      return Effect.fail({ error: "conflict", message: e.message })
    case "PayloadTooLarge":
    case "AudioTooLong":
      return Effect.fail({ error: "payload_too_large", message: e.message })
    case "UnsupportedMediaType":
      return Effect.fail({ error: "unsupported_media_type", message: e.message })
    case "InvalidSearch":
    case "InvalidDestination":
      return Effect.fail({ error: "bad_request", message: e.message })
    case "InvalidUpload":
    case "MultipartError":
    case "RequestError":
      return Effect.fail({ error: "bad_request", message: e._tag === "InvalidUpload" ? e.message : `the request body could not be read: ${e.message}` })
    default:
      return Effect.logError("request failed", e).pipe(
        Effect.zipRight(Effect.fail({ error: "internal", message: "internal error" } as const))
      )
  }
}

/** How long a client is asked to wait when the database is locked by another process. */
const busyRetryAfterSeconds = 5

/**
 * `503` + `Retry-After` when the database stayed locked by another process
 * (a `StoreError` marked `busy`): nothing was written, the same request may
 * succeed shortly. HttpApi error schemas cannot carry headers, so the answer
 * is raised as the response itself — the platform sends a defect that is a
 * response as that response, and does not report it as a failure.
 * @since 0.1.0
 */
export const databaseBusy: Effect.Effect<never> = Effect.logWarning("database busy (locked by another process): answered 503").pipe(
  Effect.zipRight(Effect.die(HttpServerResponse.unsafeJson(
    { error: "unavailable", message: "the database is busy (locked by another process); retry shortly" },
    { status: 503, headers: { "retry-after": String(busyRetryAfterSeconds) } }
  )))
)

/** @since 0.1.0 */
export const orApiError = <A, E extends Tagged, R>(self: Effect.Effect<A, E, R>) => Effect.catchAll(self, toApiError)


// --- the envelope for what no handler answers ---------------------------------

/** The code of a status the handlers did not choose (empty platform answers, defects). */
const codeOf = (status: number): string => {
  switch (status) {
    case 401:
      return "unauthorized"
    case 403:
      return "forbidden"
    case 404:
      return "not_found"
    case 405:
      return "method_not_allowed"
    case 409:
      return "conflict"
    case 413:
      return "payload_too_large"
    case 415:
      return "unsupported_media_type"
    case 408:
      return "request_timeout"
    case 416:
      return "range_not_satisfiable"
    case 429:
      return "rate_limited"
    case 503:
      return "unavailable"
    default:
      return status >= 500 ? "internal" : "bad_request"
  }
}

const defaultMessage = (status: number): string => {
  switch (codeOf(status)) {
    case "unauthorized":
      return "a valid API key is required: Authorization: Bearer <key>"
    case "not_found":
      return "no such resource"
    case "payload_too_large":
      return "the body is too large"
    case "unsupported_media_type":
      return "the body's type is not accepted"
    case "rate_limited":
      return "too many requests; wait and retry"
    case "unavailable":
      return "the server is not ready; retry later"
    case "internal":
      return "internal error"
    default:
      return "the request could not be read; check its headers and body"
  }
}

/** An envelope answer; keeps headers the original carried (Retry-After, Allow…). */
const envelopeResponse = (status: number, message: string, headers: Headers.Headers = Headers.empty) =>
  HttpServerResponse.unsafeJson(
    { error: codeOf(status), message },
    { status, headers: Headers.remove(headers, ["content-type", "content-length"]) }
  )

/** An error answer without a body gets the envelope. */
const withBody = (response: HttpServerResponse.HttpServerResponse) =>
  response.status >= 400 && response.body._tag === "Empty"
    ? envelopeResponse(response.status, defaultMessage(response.status), response.headers)
    : response

/**
 * The methods each route answers, from the API declaration, so an unrouted
 * request can be told apart: a known path with another method is `405` with
 * `Allow`, anything else `404`.
 */
const routeTable = (extraGetPaths: ReadonlyArray<string>) => {
  const routes: Array<{ readonly method: string; readonly pattern: RegExp }> = []
  const add = (method: string, path: string) => {
    const source = path.split("/").map((segment) => segment.startsWith(":") ? "[^/]+" : segment.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("/")
    routes.push({ method, pattern: new RegExp(`^${source}$`) })
  }
  HttpApi.reflect(VoiceJournalApi, {
    onGroup: () => {},
    onEndpoint: ({ endpoint }) => add(endpoint.method, endpoint.path)
  })
  for (const path of extraGetPaths) add("GET", path)
  return (pathname: string): ReadonlyArray<string> => [...new Set(routes.filter((r) => r.pattern.test(pathname)).map((r) => r.method))].sort()
}

/**
 * A failure the API declares (`{ error, message }` with one of its codes):
 * HttpApi encodes it with its status. Any other failure would find no schema
 * and leave the platform's empty 500.
 */
const isDeclared = Schema.is(Schema.Union(BadRequest, Unauthorized, Forbidden, NotFound, Conflict, PayloadTooLarge, UnsupportedMediaType, Internal, Unavailable))

/**
 * Around every route, before HttpApi encodes declared errors: whatever fails
 * without a declared answer still gets `{ "error", "message" }` with the
 * right status — schema decode failures (`400`, saying what to fix), unknown
 * routes (`404`), known paths with another method (`405` + `Allow`), bodies
 * the platform could not read (`400`), and defects (`500`, the detail only in
 * the log, at error level). Empty error answers (status ≥ 400, no body) get
 * the envelope too. A client that went away stays an interruption. (It has to
 * sit here: a middleware given to `HttpApiBuilder.serve` runs after the
 * platform has already sent its own empty error answer.)
 */
const envelope = (methodsFor: (pathname: string) => ReadonlyArray<string>) =>
(app: HttpApp.Default<unknown>): HttpApp.Default<unknown, HttpServerRequest.HttpServerRequest> =>
  app.pipe(
    Effect.map(withBody),
    Effect.catchAllCause((cause) => {
      if (Cause.isInterruptedOnly(cause)) return Effect.failCause(cause)
      const error = Cause.squash(cause)
      if (error instanceof HttpApiError.HttpApiDecodeError) {
        return Effect.fail({ error: "bad_request", message: `invalid request: ${describeIssues(error.issues)}` } as const)
      }
      // declared failures are HttpApi's to encode
      if (isDeclared(error) && !Cause.isDie(cause)) return Effect.failCause(cause)
      // a response raised as the failure (e.g. `databaseBusy`): it is the answer
      if (HttpServerResponse.isServerResponse(error)) return Effect.succeed(withBody(error))
      if (error instanceof HttpServerError.RouteNotFound) {
        return Effect.map(HttpServerRequest.HttpServerRequest, (request) => {
          const pathname = new URL(request.url, "http://localhost").pathname
          const allowed = methodsFor(pathname)
          return allowed.length === 0 || allowed.includes(request.method)
            ? envelopeResponse(404, "no such route; the API is described at /openapi.json")
            : envelopeResponse(405, `${request.method} is not allowed here; use ${allowed.join(" or ")}`, Headers.fromInput({ allow: allowed.join(", ") }))
        })
      }
      if (error instanceof HttpServerError.RequestError) {
        // the platform could not read the body (malformed, cut off): the client's fault, answered, not logged as ours
        return Effect.succeed(envelopeResponse(400, "the request body could not be read; check that it is complete and matches its Content-Type"))
      }
      return HttpServerError.causeResponse(cause).pipe(
        Effect.flatMap(([response, rest]) =>
          // nothing but a response raised on purpose: send it as it is
          Cause.isEmpty(rest)
            ? Effect.succeed(withBody(response))
            : response.status >= 500
            ? Effect.logError("request failed with an unhandled error", cause).pipe(
              Effect.as(envelopeResponse(response.status, defaultMessage(response.status)))
            )
            : Effect.succeed(withBody(response))
        )
      )
    })
  )

/**
 * The envelope for every error answer of {@link VoiceJournalApi} (see
 * `envelope` above). `extraGetPaths`: routes added outside the API
 * declaration (docs, OpenAPI), so a wrong method on them is `405` too.
 * @since 0.1.0
 * @category layers
 */
export const layerEnvelope = (options: { readonly extraGetPaths?: ReadonlyArray<string> } = {}) =>
  HttpApiBuilder.middleware(
    VoiceJournalApi,
    envelope(routeTable(options.extraGetPaths ?? [])) as unknown as HttpApiBuilder.MiddlewareFn<{ readonly error: "bad_request"; readonly message: string }>
  )

/** What to fix, from the issues of a decode failure (path and message, no schema text). */
const describeIssues = (issues: ReadonlyArray<{ readonly path: ReadonlyArray<PropertyKey>; readonly message: string; readonly _tag: string }>) =>
  issues.map((issue) => {
    const where = issue.path.map(String).join(".")
    if (issue._tag === "Unexpected") return `unknown parameter ${where}`
    return where === "" ? issue.message : `${where} ${issue.message}`
  }).join("; ")
