/**
 * The HTTP API, declared with `HttpApi` (typed, Schema-validated, served as
 * OpenAPI at `/openapi.json`). Responses expose only what a client needs
 * (no owner ids, blob keys or lease details). Errors are
 * `{ "error": <code>, "message": <text> }`.
 *
 * @since 0.1.0
 */
import { HttpApi, HttpApiEndpoint, HttpApiGroup, HttpApiMiddleware, HttpApiSchema, HttpApiSecurity, OpenApi } from "@effect/platform"
import { Domain, EntrySearch } from "@voice-journal/core"
import { Context, Schema, SchemaAST as AST } from "effect"

const apiError = <const Code extends string>(code: Code, status: number, description: string) =>
  Schema.Struct({ error: Schema.Literal(code), message: Schema.String }).annotations({
    identifier: `Error_${code}`,
    description,
    ...HttpApiSchema.annotations({ status })
  })

/** @since 0.1.0 */
export const BadRequest = apiError("bad_request", 400, "The request is malformed: bad JSON, unknown or mistyped options or query parameters, bad paging, an empty or truncated upload. The message says what to fix.")
/** @since 0.1.0 */
export const Unauthorized = apiError("unauthorized", 401, "Missing or invalid API key (or session cookie).")
/** @since 0.1.0 */
export const Forbidden = apiError(
  "forbidden",
  403,
  "A state-changing request signed in with the session cookie did not carry this server's Origin (CSRF protection)."
)
/** @since 0.1.0 */
export const NotFound = apiError("not_found", 404, "No such resource for this user.")
/** @since 0.1.0 */
export const Conflict = apiError("conflict", 409, "The resource is not in a state that allows this.")
/**
 * Not on any one operation: the path exists but not with this method (the
 * `Allow` header lists the methods that do).
 * @since 0.1.0
 */
export const MethodNotAllowed = apiError("method_not_allowed", 405, "The path exists, but not with this method; see the Allow header.")
/** @since 0.1.0 */
export const PayloadTooLarge = apiError("payload_too_large", 413, "The body exceeds its size limit (the upload limit for audio, 64 KiB for JSON options), or the recording is longer than VJ_MAX_AUDIO_SECONDS; nothing was kept.")
/** @since 0.1.0 */
export const UnsupportedMediaType = apiError("unsupported_media_type", 415, "The body's type is not accepted (an audio format for uploads, application/json for options).")
/** @since 0.1.0 */
export const RequestTimeout = apiError("request_timeout", 408, "The upload stalled: no byte arrived for VJ_UPLOAD_IDLE_SECONDS; nothing was kept.")
/** @since 0.1.0 */
export const RangeNotSatisfiable = apiError("range_not_satisfiable", 416, "The Range lies outside the recording; Content-Range says its size.")
/** @since 0.1.0 */
export const RateLimited = apiError("rate_limited", 429, "Too many requests for this key (or failed authentications from this address); wait for Retry-After.")
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

/**
 * A transcription run. A long recording is transcribed in pieces: while it
 * runs, `piecesDone` of `piecesTotal` are stored (a client shows "piece
 * `piecesDone + 1` of `piecesTotal`"); `piecesTotal` is `null` until the
 * pieces are planned, 1 for a recording sent whole. `segments` are the
 * transcript's timestamped stretches (seconds from the start of the
 * recording), once completed.
 * @since 0.1.0
 */
export const TranscriptionView = Schema.Struct({
  id: Schema.String,
  isPrimary: Schema.Boolean,
  engine: Schema.NullOr(Schema.String),
  text: Schema.NullOr(Schema.String),
  language: Schema.NullOr(Schema.String),
  durationSeconds: Schema.NullOr(Schema.Number),
  segments: Schema.NullOr(Schema.Array(Domain.Segment.annotations({ identifier: "Segment" }))),
  piecesTotal: Schema.NullOr(Schema.Number).annotations({ description: "How many pieces the recording is transcribed in; null until planned." }),
  piecesDone: Schema.Number.annotations({ description: "How many of the pieces are transcribed and stored." }),
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
  summary: Schema.NullOr(Schema.String),
  actionItems: Schema.Array(Schema.String),
  tags: Schema.Array(Schema.String).annotations({ description: "Trimmed, lower-case, each once." }),
  sections: Schema.Record({ key: Schema.String, value: Schema.String }).annotations({
    description: "The extra sections the cleanup's template declares, by name."
  }),
  templateId: Schema.NullOr(Schema.String).annotations({ description: "The template it was written with; null = the built-in journal template." }),
  ...stage
}).annotations({ identifier: "Cleanup" })

/** @since 0.2.0 */
export const TemplateView = Schema.Struct({
  id: Schema.String,
  name: Schema.String,
  instructions: Schema.String,
  sections: Schema.Array(Schema.Struct({ name: Schema.String, description: Schema.String })),
  createdAt: Schema.Date,
  updatedAt: Schema.Date
}).annotations({ identifier: "Template" })

/**
 * A template as a client writes it (create and replace): the rules are the
 * library's own (`Domain.NewCleanupTemplate`).
 * @since 0.2.0
 */
export const TemplateBody = Domain.NewCleanupTemplate.annotations({ identifier: "TemplateInput" })

/** @since 0.1.0 */
export const NotionSyncView = Schema.Struct({
  id: Schema.String,
  entryId: Schema.String,
  notionPageId: Schema.NullOr(Schema.String),
  ...stage
}).annotations({ identifier: "NotionSync" })

/**
 * One delivery of an entry to one destination, as the delivery log shows
 * it: status, attempts, the last error, and what it made there
 * (`externalRef`: the Notion page id, the file name, the webhook message id).
 * @since 0.2.0
 */
export const DeliveryView = Schema.Struct({
  id: Schema.String,
  entryId: Schema.String,
  destinationId: Schema.String,
  externalRef: Schema.NullOr(Schema.String),
  nextAttemptAt: Schema.Date,
  ...stage
}).annotations({ identifier: "Delivery" })

/**
 * A configured destination. Its secret is never shown: `hasSecret` says
 * whether one is stored.
 * @since 0.2.0
 */
export const DestinationView = Schema.Struct({
  id: Schema.String,
  kind: Domain.DestinationKind,
  name: Schema.String,
  config: Schema.Record({ key: Schema.String, value: Schema.Unknown }),
  hasSecret: Schema.Boolean,
  disabledAt: Schema.NullOr(Schema.Date),
  disabledReason: Schema.NullOr(Schema.String),
  createdAt: Schema.Date
}).annotations({ identifier: "Destination" })

/**
 * A new destination: `kind`, a `name`, the kind's `config` and its `secret`
 * (the Notion integration token; the webhook's `whsec_…` signing secret).
 * @since 0.2.0
 */
export const DestinationBody = Schema.Struct({
  kind: Domain.DestinationKind.annotations({ message: () => ({ message: `kind must be one of ${Domain.DestinationKind.literals.join(", ")}`, override: true }) }),
  name: Schema.String.annotations({ message: () => ({ message: "name must be a string", override: true }) }),
  config: Schema.Record({ key: Schema.String, value: Schema.Unknown }).annotations({ message: () => ({ message: "config must be an object", override: true }) }),
  secret: Schema.optionalWith(Schema.String.annotations({ message: () => ({ message: "secret must be a string", override: true }) }), { exact: true })
}).annotations({ identifier: "NewDestination" })

/** @since 0.2.0 */
export const DestinationTest = Schema.Struct({ ok: Schema.Boolean, error: Schema.NullOr(Schema.String) })
  .annotations({ identifier: "DestinationTest" })

const entryFields = {
  id: Schema.String,
  originalFilename: Schema.NullOr(Schema.String),
  mimeType: Schema.String,
  sizeBytes: Schema.Number,
  sha256: Schema.String,
  /** The upload's trace id (W3C, hex): find the entry's whole journey in your tracing backend. */
  traceId: Schema.NullOr(Schema.String),
  createdAt: Schema.Date
}

/**
 * A list item: the entry and where it stands, so a client can render a list
 * from one request (the primary — or newest — transcription and cleanup, the
 * newest Notion sync; `null` when there is none yet).
 * @since 0.1.0
 */
export const EntrySummary = Schema.Struct({
  ...entryFields,
  transcriptionStatus: Schema.NullOr(Domain.StageStatus),
  cleanupStatus: Schema.NullOr(Domain.StageStatus),
  notionSyncStatus: Schema.NullOr(Domain.NotionSyncStatus),
  title: Schema.NullOr(Schema.String),
  durationSeconds: Schema.NullOr(Schema.Number)
}).annotations({ identifier: "EntrySummary" })

/** @since 0.1.0 */
export const EntryView = Schema.Struct({
  ...entryFields,
  transcription: Schema.NullOr(TranscriptionView),
  cleanup: Schema.NullOr(CleanupView),
  notionSync: Schema.NullOr(NotionSyncView),
  deliveries: Schema.Array(DeliveryView)
}).annotations({ identifier: "Entry" })

const page = <A, I>(item: Schema.Schema<A, I>, identifier: string) =>
  Schema.Struct({ items: Schema.Array(item), total: Schema.Number, limit: Schema.Number, offset: Schema.Number })
    .annotations({ identifier })

/** An optional field with a message that says what to send, for unions too (`override`), never echoing the value. */
const option = <A, I>(schema: Schema.Schema<A, I>, message: string) =>
  Schema.optionalWith(schema.annotations({ message: () => ({ message, override: true }) }), { exact: true })
/** Paging as the client sends it: strings, validated by the handler into `{ error: "bad_request" }`. */
const Paging = Schema.Struct({
  limit: option(Schema.String, "must be given once"),
  offset: option(Schema.String, "must be given once")
})

/** The entry list's query string: paging, and the search words and tag filter (length-checked; any characters). */
const EntryListParams = Schema.Struct({
  ...Paging.fields,
  q: option(
    Schema.String.pipe(Schema.maxLength(EntrySearch.maxQueryLength)),
    `must be given once, at most ${EntrySearch.maxQueryLength} characters`
  ),
  tag: option(
    Schema.String.pipe(Schema.maxLength(EntrySearch.maxTagLength)),
    `must be given once, at most ${EntrySearch.maxTagLength} characters`
  )
})

const IdPath = Schema.Struct({ id: Schema.String })
const ChildPath = Schema.Struct({ id: Schema.String, childId: Schema.String })
const makePrimary = option(Schema.Boolean, "must be true or false")

/**
 * Options of a re-run, as a JSON object; every field is optional and no body
 * at all means all defaults. Handlers read it with `Http.readOptions`.
 * @since 0.1.0
 */
export const RerunBody = Schema.Struct({ makePrimary }).annotations({ identifier: "RerunOptions" })
/** @since 0.1.0 */
export const CleanupBody = Schema.Struct({
  makePrimary,
  transcriptionId: option(Schema.String, "must be the id of one of this entry's transcriptions (a string)"),
  templateId: option(Schema.String, "must be the id of one of your templates (a string); leave it out for the built-in journal template")
}).annotations({ identifier: "CleanupOptions" })
/** @since 0.1.0 */
export const NoOptions = Schema.Struct({})
/** @since 0.2.0 */
export const DeliverBody = Schema.Struct({
  destinationIds: option(Schema.Array(Schema.String), "must be a list of destination ids")
}).annotations({ identifier: "DeliverOptions" })

/** The body is optional: OpenAPI would otherwise mark a declared payload required. */
const optionalBody = (op: Record<string, any>) =>
  op.requestBody === undefined ? op : { ...op, requestBody: { ...op.requestBody, required: false } }

/**
 * HttpApi declares its own decode error (`HttpApiDecodeError`, with schema
 * issues) on every operation; our handlers never answer it (decode failures
 * are turned into `bad_request` envelopes, see `ApiErrors.layerEnvelope`),
 * so it is removed from the document.
 */
const withoutDecodeError = (spec: Record<string, any>): Record<string, any> => {
  const decodeRef = "#/components/schemas/HttpApiDecodeError"
  const strip = (node: any): any => {
    if (Array.isArray(node)) return node.map(strip)
    if (node === null || typeof node !== "object") return node
    if (Array.isArray(node.anyOf)) {
      const rest = node.anyOf.filter((s: any) => s.$ref !== decodeRef)
      if (rest.length === 1 && Object.keys(node).length === 1) return strip(rest[0])
      node = { ...node, anyOf: rest }
    }
    return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, strip(v)]))
  }
  const out = strip(spec)
  for (const ops of Object.values(out.paths as Record<string, Record<string, any>>)) {
    for (const op of Object.values(ops)) {
      // the merged 400 took the decode error's description
      if (op.responses?.["400"] !== undefined) op.responses["400"].description = BadRequest.ast.annotations[AST.DescriptionAnnotationId]
    }
  }
  const { HttpApiDecodeError: _decode, Issue: _issue, PropertyKey: _key, ...schemas } = out.components.schemas
  return { ...out, components: { ...out.components, schemas } }
}

/**
 * The authenticated user, provided by {@link Authentication}.
 * @since 0.1.0
 */
export class CurrentUser extends Context.Tag("@voice-journal/http-server/CurrentUser")<CurrentUser, Domain.User>() {}

/**
 * The session cookie (`POST /session`), the web app's credential.
 * @since 0.1.0
 */
export const sessionCookie = HttpApiSecurity.apiKey({ key: "vj_session", in: "cookie" }).pipe(
  HttpApiSecurity.annotate(
    OpenApi.Description,
    "Set by POST /session. A state-changing request (POST, PUT, PATCH, DELETE) with it must carry an Origin header equal to the server's origin, else 403."
  )
)

/**
 * `Authorization: Bearer <api key>` — or the `vj_session` cookie — on every
 * route but health, docs and `/session`.
 * @since 0.1.0
 */
export class Authentication extends HttpApiMiddleware.Tag<Authentication>()("@voice-journal/http-server/Authentication", {
  failure: Schema.Union(Unauthorized, Forbidden),
  provides: CurrentUser,
  security: { bearer: HttpApiSecurity.bearer, cookie: sessionCookie }
}) {}

/** @since 0.1.0 */
export class EntriesGroup extends HttpApiGroup.make("entries")
  .add(
    HttpApiEndpoint.post("upload", "/entries")
      .setHeaders(Schema.Struct({
        "idempotency-key": option(
          Schema.String.pipe(Schema.minLength(1), Schema.maxLength(200)),
          "must be 1 to 200 characters"
        ).annotations({ description: "Makes a retry safe: the same key from the same user within 24 h returns the first upload's entry (200) instead of making another." })
      }))
      .addSuccess(EntryView, { status: 201 })
      .addSuccess(EntryView.annotations({ identifier: "EntryReplayed", description: "A retry: the entry the first upload with this Idempotency-Key made." }))
      .addError(RequestTimeout)
      .annotate(
        OpenApi.Description,
        "Upload a recording: multipart/form-data with the audio in field `file`, or a raw body (any audio Content-Type). The type is decided from the bytes. With `Idempotency-Key`, a repeat within 24 h (also a concurrent one) answers 200 with the first entry and keeps nothing of its own."
      )
  )
  .add(
    HttpApiEndpoint.get("list", "/entries").setUrlParams(EntryListParams).addSuccess(page(EntrySummary, "EntryPage"))
      .annotate(
        OpenApi.Description,
        "The user's entries, newest first. With `q` and/or `tag`: a full-text search (words in the primary transcript and the primary cleanup's title, text and tags; all words must match, the last also as a prefix; case and accents ignored), ranked — title and tag hits first, then cleaned text, then transcript, then newest — with `total` counting all matches."
      )
  )
  .add(HttpApiEndpoint.get("get", "/entries/:id").setPath(IdPath).addSuccess(EntryView))
  .add(HttpApiEndpoint.del("delete", "/entries/:id").setPath(IdPath).addSuccess(Schema.Void, { status: 204 }))
  .add(
    HttpApiEndpoint.get("audio", "/entries/:id/audio").setPath(IdPath)
      .addError(RangeNotSatisfiable)
      .annotate(
        OpenApi.Description,
        "The stored recording, streamed, with its sniffed Content-Type and `Accept-Ranges: bytes`; a `Range` header gets `206` with `Content-Range`."
      )
  )
  .add(HttpApiEndpoint.get("listTranscriptions", "/entries/:id/transcriptions").setPath(IdPath).addSuccess(Schema.Array(TranscriptionView)))
  .add(
    HttpApiEndpoint.post("retranscribe", "/entries/:id/transcriptions").setPath(IdPath).setPayload(RerunBody)
      .addSuccess(TranscriptionView, { status: 202 })
      .annotate(OpenApi.Transform, optionalBody)
  )
  .add(
    HttpApiEndpoint.post("primaryTranscription", "/entries/:id/transcriptions/:childId/primary").setPath(ChildPath)
      .addSuccess(TranscriptionView)
  )
  .add(HttpApiEndpoint.get("listCleanups", "/entries/:id/cleanups").setPath(IdPath).addSuccess(Schema.Array(CleanupView)))
  .add(
    HttpApiEndpoint.post("reclean", "/entries/:id/cleanups").setPath(IdPath).setPayload(CleanupBody)
      .addSuccess(CleanupView, { status: 202 })
      .annotate(OpenApi.Transform, optionalBody)
  )
  .add(
    HttpApiEndpoint.post("primaryCleanup", "/entries/:id/cleanups/:childId/primary").setPath(ChildPath)
      .addSuccess(CleanupView)
  )
  .add(
    HttpApiEndpoint.post("sync", "/entries/:id/notion-sync").setPath(IdPath)
      .addSuccess(NotionSyncView, { status: 202 })
  )
  .add(
    HttpApiEndpoint.post("deliver", "/entries/:id/deliveries").setPath(IdPath).setPayload(DeliverBody)
      .addSuccess(Schema.Array(DeliveryView), { status: 202 })
      .annotate(OpenApi.Transform, optionalBody)
  )
  .addError(RateLimited)
  .middleware(Authentication)
{}

/** @since 0.1.0 */
export class NotionGroup extends HttpApiGroup.make("notion")
  .add(
    HttpApiEndpoint.get("listSyncs", "/notion/syncs")
      .setUrlParams(Schema.Struct({
        ...Paging.fields,
        status: option(Domain.NotionSyncStatus, `must be one of ${Domain.NotionSyncStatus.literals.join(", ")}`)
      }))
      .addSuccess(page(NotionSyncView, "NotionSyncPage"))
  )
  .add(
    HttpApiEndpoint.post("retrySync", "/notion/syncs/:id/retry").setPath(IdPath)
      .addSuccess(NotionSyncView, { status: 202 })
  )
  .addError(RateLimited)
  .middleware(Authentication)
{}

/** @since 0.2.0 */
export class TemplatesGroup extends HttpApiGroup.make("templates")
  .add(HttpApiEndpoint.get("list", "/templates").addSuccess(Schema.Array(TemplateView)))
  .add(
    HttpApiEndpoint.post("create", "/templates").setPayload(TemplateBody)
      .addSuccess(TemplateView, { status: 201 })
      .annotate(
        OpenApi.Description,
        "A cleanup template: `instructions` become the model's system prompt, `sections` are extra fields it fills in besides title, text, summary, actionItems and tags. Names are unique per user (409)."
      )
  )
  .add(HttpApiEndpoint.get("get", "/templates/:id").setPath(IdPath).addSuccess(TemplateView))
  .add(
    HttpApiEndpoint.put("replace", "/templates/:id").setPath(IdPath).setPayload(TemplateBody)
      .addSuccess(TemplateView)
      .annotate(OpenApi.Description, "Replaces name, instructions and sections; cleanups already written keep what they got.")
  )
  .add(
    HttpApiEndpoint.del("delete", "/templates/:id").setPath(IdPath)
      .addSuccess(Schema.Void, { status: 204 })
      .annotate(OpenApi.Description, "409 while a cleanup with this template is queued or running; finished cleanups keep their output.")
  )
  .addError(RateLimited)
  .middleware(Authentication)
{}

export class DestinationsGroup extends HttpApiGroup.make("destinations")
  .add(HttpApiEndpoint.post("add", "/destinations").setPayload(DestinationBody).addSuccess(DestinationView, { status: 201 }))
  .add(HttpApiEndpoint.get("list", "/destinations").addSuccess(Schema.Array(DestinationView)))
  .add(HttpApiEndpoint.del("remove", "/destinations/:id").setPath(IdPath).addSuccess(Schema.Void, { status: 204 }))
  .add(HttpApiEndpoint.post("test", "/destinations/:id/test").setPath(IdPath).addSuccess(DestinationTest))
  .addError(RateLimited)
  .middleware(Authentication)
{}

/** @since 0.1.0 */
export const SessionUser = Schema.Struct({ user: Schema.Struct({ id: Schema.String, name: Schema.String }) })
  .annotations({ identifier: "SessionUser" })

/** @since 0.1.0 */
export const SessionBody = Schema.Struct({
  apiKey: Schema.String.annotations({ message: () => ({ message: "must be the API key (a string starting with vj_)", override: true }) })
}).annotations({ identifier: "SignIn" })

/**
 * Browser sessions. No Authentication middleware: these routes read the key
 * (sign in) or the cookie themselves.
 * @since 0.1.0
 */
export class SessionGroup extends HttpApiGroup.make("session")
  .add(
    HttpApiEndpoint.post("create", "/session").setPayload(SessionBody)
      .addSuccess(SessionUser)
      .annotate(
        OpenApi.Description,
        "Sign in: trades a valid API key for a session cookie `vj_session` (HttpOnly; SameSite=Strict; Path=/; Max-Age = VJ_SESSION_SECONDS; Secure when the server's origin is https). An Origin header, when sent, must be the server's (login CSRF)."
      )
  )
  .add(
    HttpApiEndpoint.get("get", "/session")
      .addSuccess(SessionUser)
      .annotate(OpenApi.Description, "Who the session cookie signs in, or 401.")
  )
  .add(
    HttpApiEndpoint.del("delete", "/session")
      .addSuccess(Schema.Void, { status: 204 })
      .annotate(OpenApi.Description, "Sign out: ends the session on the server and clears the cookie. Needs the server's Origin when a cookie is sent.")
  )
  .addError(Unauthorized)
  .addError(Forbidden)
  .addError(RateLimited)
{}

/** @since 0.1.0 */
export class EventsGroup extends HttpApiGroup.make("events")
  .add(
    HttpApiEndpoint.get("stream", "/events")
      .addSuccess(HttpApiSchema.Text({ contentType: "text/event-stream" }).annotations({ identifier: "EventStream" }))
      .setHeaders(Schema.Struct({
        "last-event-id": option(Schema.String, "must be the id of an event").annotations({
          description: "Resume after this event id (browsers send it when they reconnect)."
        })
      }))
      .annotate(
        OpenApi.Description,
        "Server-Sent Events (`text/event-stream`) of the signed-in user's changes only. `event: stage` — `data: {\"entryId\",\"stage\",\"status\",\"at\",\"stageId\",\"transcriptionId\"|\"cleanupId\"|\"deliveryId\"}` when a stage row's status changes; `event: entry` — `data: {\"entryId\",\"status\":\"created\"|\"deleted\",\"at\"}`. Each event has an `id:`; reconnecting with `Last-Event-ID` replays what was missed (events are kept 24 h). A comment line every 15 s keeps proxies from closing the stream; it ends when the server shuts down."
      )
  )
  .addError(RateLimited)
  .middleware(Authentication)
{}

/** @since 0.2.0 */
export class DeliveriesGroup extends HttpApiGroup.make("deliveries")
  .add(
    HttpApiEndpoint.get("list", "/deliveries")
      .setUrlParams(Schema.Struct({
        ...Paging.fields,
        status: option(Domain.DeliveryStatus, `must be one of ${Domain.DeliveryStatus.literals.join(", ")}`),
        destinationId: option(Schema.String, "must be given once"),
        entryId: option(Schema.String, "must be given once")
      }))
      .addSuccess(page(DeliveryView, "DeliveryPage"))
  )
  .add(HttpApiEndpoint.post("retry", "/deliveries/:id/retry").setPath(IdPath).addSuccess(DeliveryView, { status: 202 }))
  .addError(RateLimited)
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
  // Prometheus text format; open unless VJ_METRICS_TOKEN is set (then Bearer that token)
  .add(
    HttpApiEndpoint.get("metrics", "/metrics")
      .addSuccess(Schema.String.pipe(HttpApiSchema.withEncoding({ kind: "Text", contentType: "text/plain; version=0.0.4" })))
      .addError(Unauthorized)
  )
{}

/** @since 0.1.0 */
export class VoiceJournalApi extends HttpApi.make("voice-journal")
  .add(EntriesGroup)
  .add(NotionGroup)
  .add(TemplatesGroup)
  .add(SessionGroup)
  .add(EventsGroup)
  .add(DestinationsGroup)
  .add(DeliveriesGroup)
  .add(HealthGroup)
  // the errors routes answer, declared once for the whole API
  .addError(BadRequest)
  .addError(NotFound)
  .addError(Conflict)
  .addError(PayloadTooLarge)
  .addError(UnsupportedMediaType)
  .addError(Internal)
  .addError(Unavailable) // the database stayed locked (SQLite busy), with Retry-After
  .annotate(HttpApi.AdditionalSchemas, [MethodNotAllowed])
  .annotate(OpenApi.Transform, withoutDecodeError)
  .annotate(OpenApi.Title, "voice-journal")
  .annotate(OpenApi.Description, "Voice notes → transcripts → cleaned journal entries → Notion pages.")
{}
