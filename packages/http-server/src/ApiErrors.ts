/**
 * How failures become HTTP answers: every non-2xx body is
 * `{ "error": <code>, "message": <text> }` (the codes are declared in `Api.ts`).
 *
 * @since 0.1.0
 */
import { HttpServerResponse } from "@effect/platform"
import { Errors } from "@voice-journal/core"
import { Effect } from "effect"
import type { ApiError } from "./Api.js"

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
      return Effect.fail({ error: "not_found", message: e.message })
    case "InvalidState":
    case "PrimaryConflict":
      return Effect.fail({ error: "conflict", message: e.message })
    case "PayloadTooLarge":
      return Effect.fail({ error: "payload_too_large", message: e.message })
    case "UnsupportedMediaType":
      return Effect.fail({ error: "unsupported_media_type", message: e.message })
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

