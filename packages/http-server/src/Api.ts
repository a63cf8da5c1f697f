/**
 * The HTTP API, declared with `HttpApi` (typed, Schema-validated, served as
 * OpenAPI at `/openapi.json`). Responses expose only what a client needs
 * (no owner ids, blob keys or lease details). Errors are
 * `{ "error": <code>, "message": <text> }`.
 *
 * @since 0.1.0
 */
import { HttpApi, HttpApiEndpoint, HttpApiGroup, HttpApiMiddleware, HttpApiSchema, HttpApiSecurity, OpenApi } from "@effect/platform"
import { Domain } from "@voice-journal/core"
import { Context, Schema } from "effect"

const apiError = <const Code extends string>(code: Code, status: number, description: string) =>
  Schema.Struct({ error: Schema.Literal(code), message: Schema.String }).annotations({
    identifier: `Error_${code}`,
    description,
    ...HttpApiSchema.annotations({ status })
  })

/** @since 0.1.0 */
export const BadRequest = apiError("bad_request", 400, "The request is malformed (e.g. empty or truncated upload, bad paging).")
/** @since 0.1.0 */
export const Unauthorized = apiError("unauthorized", 401, "Missing or invalid API key.")
/** @since 0.1.0 */
export const NotFound = apiError("not_found", 404, "No such resource for this user.")
/** @since 0.1.0 */
export const Conflict = apiError("conflict", 409, "The resource is not in a state that allows this.")
/** @since 0.1.0 */
export const PayloadTooLarge = apiError("payload_too_large", 413, "The upload exceeds the size limit.")
/** @since 0.1.0 */
export const UnsupportedMediaType = apiError("unsupported_media_type", 415, "The content is not an accepted audio format.")
/** @since 0.1.0 */
export const Internal = apiError("internal", 500, "Something went wrong on the server.")
/** @since 0.1.0 */
export const Unavailable = apiError("unavailable", 503, "Not ready (database or workers).")

/** @since 0.1.0 */
export type ApiError =
  | typeof BadRequest.Type
  | typeof Unauthorized.Type
  | typeof NotFound.Type
  | typeof Conflict.Type
  | typeof PayloadTooLarge.Type
  | typeof UnsupportedMediaType.Type
  | typeof Internal.Type

const stage = {
  status: Schema.String,
  attempts: Schema.Number,
  lastError: Schema.NullOr(Schema.String),
  startedAt: Schema.NullOr(Schema.Date),
  createdAt: Schema.Date,
  updatedAt: Schema.Date
}

/** @since 0.1.0 */
export const TranscriptionView = Schema.Struct({
  id: Schema.String,
  isPrimary: Schema.Boolean,
  engine: Schema.NullOr(Schema.String),
  text: Schema.NullOr(Schema.String),
  language: Schema.NullOr(Schema.String),
  durationSeconds: Schema.NullOr(Schema.Number),
  ...stage
}).annotations({ identifier: "Transcription" })

/** @since 0.1.0 */
export const CleanupView = Schema.Struct({
  id: Schema.String,
  transcriptionId: Schema.String,
  isPrimary: Schema.Boolean,
  model: Schema.NullOr(Schema.String),
  title: Schema.NullOr(Schema.String),
  text: Schema.NullOr(Schema.String),
  ...stage
}).annotations({ identifier: "Cleanup" })

/** @since 0.1.0 */
export const NotionSyncView = Schema.Struct({
  id: Schema.String,
  entryId: Schema.String,
  notionPageId: Schema.NullOr(Schema.String),
  ...stage
}).annotations({ identifier: "NotionSync" })

const entryFields = {
  id: Schema.String,
  originalFilename: Schema.NullOr(Schema.String),
  mimeType: Schema.String,
  sizeBytes: Schema.Number,
  sha256: Schema.String,
  createdAt: Schema.Date
}

/** @since 0.1.0 */
export const EntrySummary = Schema.Struct(entryFields).annotations({ identifier: "EntrySummary" })

/** @since 0.1.0 */
export const EntryView = Schema.Struct({
  ...entryFields,
  transcription: Schema.NullOr(TranscriptionView),
  cleanup: Schema.NullOr(CleanupView),
  notionSync: Schema.NullOr(NotionSyncView)
}).annotations({ identifier: "Entry" })

const page = <A, I>(item: Schema.Schema<A, I>, identifier: string) =>
  Schema.Struct({ items: Schema.Array(item), total: Schema.Number, limit: Schema.Number, offset: Schema.Number })
    .annotations({ identifier })

/** Paging as the client sends it: strings, validated by the handler into `{ error: "bad_request" }`. */
const Paging = Schema.Struct({ limit: Schema.optional(Schema.String), offset: Schema.optional(Schema.String) })

const IdPath = Schema.Struct({ id: Schema.String })
const ChildPath = Schema.Struct({ id: Schema.String, childId: Schema.String })
const RerunBody = Schema.Struct({ makePrimary: Schema.optional(Schema.Boolean) })
const CleanupBody = Schema.Struct({ makePrimary: Schema.optional(Schema.Boolean), transcriptionId: Schema.optional(Schema.String) })

/**
 * The authenticated user, provided by {@link Authentication}.
 * @since 0.1.0
 */
export class CurrentUser extends Context.Tag("@voice-journal/http-server/CurrentUser")<CurrentUser, Domain.User>() {}

/**
 * `Authorization: Bearer <api key>` on every route but health and docs.
 * @since 0.1.0
 */
export class Authentication extends HttpApiMiddleware.Tag<Authentication>()("@voice-journal/http-server/Authentication", {
  failure: Unauthorized,
  provides: CurrentUser,
  security: { bearer: HttpApiSecurity.bearer }
}) {}

/** @since 0.1.0 */
export class EntriesGroup extends HttpApiGroup.make("entries")
  .add(
    HttpApiEndpoint.post("upload", "/entries")
      .addSuccess(EntryView, { status: 201 })
      .annotate(OpenApi.Description, "Upload a recording: multipart/form-data with the audio in field `file`, or a raw body (any audio Content-Type). The type is decided from the bytes.")
  )
  .add(HttpApiEndpoint.get("list", "/entries").setUrlParams(Paging).addSuccess(page(EntrySummary, "EntryPage")))
  .add(HttpApiEndpoint.get("get", "/entries/:id").setPath(IdPath).addSuccess(EntryView))
  .add(HttpApiEndpoint.del("delete", "/entries/:id").setPath(IdPath).addSuccess(Schema.Void, { status: 204 }))
  .add(
    HttpApiEndpoint.get("audio", "/entries/:id/audio").setPath(IdPath)
      .annotate(OpenApi.Description, "The stored recording, streamed, with its sniffed Content-Type.")
  )
  .add(HttpApiEndpoint.get("listTranscriptions", "/entries/:id/transcriptions").setPath(IdPath).addSuccess(Schema.Array(TranscriptionView)))
  .add(
    HttpApiEndpoint.post("retranscribe", "/entries/:id/transcriptions").setPath(IdPath).setPayload(RerunBody)
      .addSuccess(TranscriptionView, { status: 202 })
  )
  .add(
    HttpApiEndpoint.post("primaryTranscription", "/entries/:id/transcriptions/:childId/primary").setPath(ChildPath)
      .addSuccess(TranscriptionView)
  )
  .add(HttpApiEndpoint.get("listCleanups", "/entries/:id/cleanups").setPath(IdPath).addSuccess(Schema.Array(CleanupView)))
  .add(
    HttpApiEndpoint.post("reclean", "/entries/:id/cleanups").setPath(IdPath).setPayload(CleanupBody)
      .addSuccess(CleanupView, { status: 202 })
  )
  .add(
    HttpApiEndpoint.post("primaryCleanup", "/entries/:id/cleanups/:childId/primary").setPath(ChildPath)
      .addSuccess(CleanupView)
  )
  .add(
    HttpApiEndpoint.post("sync", "/entries/:id/notion-sync").setPath(IdPath)
      .addSuccess(NotionSyncView, { status: 202 })
  )
  .middleware(Authentication)
{}

/** @since 0.1.0 */
export class NotionGroup extends HttpApiGroup.make("notion")
  .add(
    HttpApiEndpoint.get("listSyncs", "/notion/syncs")
      .setUrlParams(Schema.Struct({ ...Paging.fields, status: Schema.optional(Domain.NotionSyncStatus) }))
      .addSuccess(page(NotionSyncView, "NotionSyncPage"))
  )
  .add(
    HttpApiEndpoint.post("retrySync", "/notion/syncs/:id/retry").setPath(IdPath)
      .addSuccess(NotionSyncView, { status: 202 })
  )
  .middleware(Authentication)
{}

/** @since 0.1.0 */
export class HealthGroup extends HttpApiGroup.make("health")
  .add(HttpApiEndpoint.get("alive", "/healthz").addSuccess(Schema.Struct({ status: Schema.Literal("ok") })))
  .add(
    HttpApiEndpoint.get("ready", "/readyz")
      .addSuccess(Schema.Struct({ status: Schema.Literal("ready") }))
      .addError(Unavailable)
  )
{}

/** @since 0.1.0 */
export class VoiceJournalApi extends HttpApi.make("voice-journal")
  .add(EntriesGroup)
  .add(NotionGroup)
  .add(HealthGroup)
  // the errors routes answer, declared once for the whole API
  .addError(BadRequest)
  .addError(NotFound)
  .addError(Conflict)
  .addError(PayloadTooLarge)
  .addError(UnsupportedMediaType)
  .addError(Internal)
  .annotate(OpenApi.Title, "voice-journal")
  .annotate(OpenApi.Description, "Voice notes → transcripts → cleaned journal entries → Notion pages.")
{}
