/**
 * The handlers of the HTTP API: thin — they authenticate (middleware),
 * translate HTTP to `VoiceJournal` calls and typed errors to status codes.
 * Uploads are streamed straight into `VoiceJournal.ingest`; nothing is
 * buffered and nothing is forked into the request fiber (a client that
 * disconnects interrupts the handler, and ingest leaves nothing behind).
 *
 * @since 0.1.0
 */
import { HttpApiBuilder, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { NodeHttpServerRequest, NodeStream } from "@effect/platform-node"
import { ApiKeys, Destinations, Domain, Errors, JournalEvents, JournalStore, Pipeline, VoiceJournal } from "@voice-journal/core"
import { Context, Duration, Effect, Either, Layer, Option, ParseResult, Redacted, Schedule, Schema, Stream } from "effect"
import {
  Authentication,
  CleanupBody,
  CurrentUser,
  DeliverBody,
  DeliveryView as DeliveryViewSchema,
  DestinationBody,
  DestinationView as DestinationViewSchema,
  EntryView,
  NoOptions,
  RerunBody,
  SessionBody,
  TemplateBody,
  TemplateView,
  VoiceJournalApi
} from "./Api.js"
import { databaseBusy, orApiError, toApiError } from "./ApiErrors.js"
import * as Metrics from "./Metrics.js"
import * as RateLimit from "./RateLimit.js"
import * as Session from "./Session.js"
import * as Upload from "./Upload.js"

/**
 * Completes when the server starts shutting down (provided by
 * `Server.layerListener`): long-lived responses (`GET /events`) end then,
 * so they never hold the shutdown for its grace period.
 * @since 0.1.0
 * @category tags
 */
export class ServerClosing extends Context.Tag("@voice-journal/http-server/ServerClosing")<ServerClosing, Effect.Effect<void>>() {}

/** One Server-Sent Event for a journal event: `event: stage|entry`, the durable id, and the JSON the web app reads. */
const sseEvent = (e: Domain.JournalEvent): string => {
  const data = e.kind === "stage"
    ? {
      entryId: e.entryId,
      stage: e.stage,
      status: e.status,
      at: e.at.toISOString(),
      stageId: e.stageId,
      [e.stage === "transcription" ? "transcriptionId" : e.stage === "cleanup" ? "cleanupId" : "deliveryId"]: e.stageId
    }
    : { entryId: e.entryId, status: e.status, at: e.at.toISOString() }
  return `id: ${e.id}\nevent: ${e.kind}\ndata: ${JSON.stringify(data)}\n\n`
}

const encoder = new TextEncoder()

/**
 * Plain decimal digits only: `Number()` (behind `NumberFromString`) would also
 * take `1e2`, `0x10`, ` 1` and `1.0`.
 */
const DecimalInt = Schema.String.pipe(Schema.pattern(/^[0-9]+$/), Schema.compose(Schema.NumberFromString))

const PageParams = Schema.Struct({
  limit: Schema.optionalWith(DecimalInt.pipe(Schema.int(), Schema.between(1, 100)), { default: () => 20 }),
  offset: Schema.optionalWith(DecimalInt.pipe(Schema.int(), Schema.between(0, Number.MAX_SAFE_INTEGER)), { default: () => 0 })
})

/** Paging from the query string, or 400 saying what is wrong. */
const paging = (params: { readonly limit?: string | undefined; readonly offset?: string | undefined }) =>
  Schema.decodeUnknown(PageParams)(params).pipe(
    Effect.mapError(() => ({ error: "bad_request", message: "limit must be a whole number from 1 to 100 and offset a whole number ≥ 0 (digits only)" } as const))
  )

/** The cap on JSON option bodies: options are a few fields, never more. */
const maxOptionsBytes = 64 * 1024

const isJsonType = (contentType: string) => /^application\/([\w.+-]+\+)?json\s*(;|$)/i.test(contentType)

/**
 * The options of a body-taking POST: no body (or an empty one) means all
 * defaults; otherwise a JSON object of at most 64 KiB, checked on
 * Content-Length before a byte is read and counted while reading (chunked
 * bodies). Failures say what to send, never the schema's internals (and
 * never echo a value: a deeply nested one cannot blow up the formatting).
 */
const readOptions = <A, I>(request: HttpServerRequest.HttpServerRequest, schema: Schema.Schema<A, I>) =>
  Effect.gen(function*() {
    const tooLarge = { error: "payload_too_large", message: `options are a JSON object of at most ${maxOptionsBytes} bytes` } as const
    const declared = Number(request.headers["content-length"] ?? Number.NaN)
    if (Number.isFinite(declared) && declared > maxOptionsBytes) return yield* Effect.fail(tooLarge)
    // not `request.stream`: stopping that destroys the socket, and the client would see a reset instead of our 413
    const chunks: Array<Uint8Array> = []
    let size = 0
    yield* NodeStream.fromReadable(
      () => NodeHttpServerRequest.toIncomingMessage(request),
      () => ({ error: "bad_request", message: "the request body could not be read" }) as const,
      { closeOnDone: false }
    ).pipe(
      Stream.runForEach((chunk) => {
        size += chunk.length
        if (size > maxOptionsBytes) return Effect.fail(tooLarge)
        chunks.push(chunk)
        return Effect.void
      }),
      Effect.tapError((e) => e.error === "payload_too_large" ? Upload.discardRest(request, 1024 * 1024, 10) : Effect.void)
    )
    const text = Buffer.concat(chunks).toString("utf8")
    if (text.trim() === "") return yield* decodeOptions(schema, {})
    const contentType = request.headers["content-type"]
    if (contentType !== undefined && !isJsonType(contentType)) {
      return yield* Effect.fail({ error: "unsupported_media_type", message: "options are JSON: send Content-Type: application/json (or no body for the defaults)" } as const)
    }
    let value: unknown
    try {
      value = JSON.parse(text)
    } catch {
      return yield* Effect.fail({ error: "bad_request", message: "the body is not valid JSON: send a JSON object such as {\"makePrimary\": true}, or no body for the defaults" } as const)
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      return yield* Effect.fail({ error: "bad_request", message: "the body must be a JSON object such as {\"makePrimary\": true}, or no body for the defaults" } as const)
    }
    return yield* decodeOptions(schema, value)
  })

const decodeOptions = <A, I>(schema: Schema.Schema<A, I>, value: unknown) =>
  Schema.decodeUnknownEither(schema, { errors: "all", onExcessProperty: "error" })(value).pipe(
    Either.match({
      onRight: Effect.succeed,
      onLeft: (error) => {
        const accepted = schema.ast._tag === "TypeLiteral" ? schema.ast.propertySignatures.map((p) => String(p.name)) : []
        const problems = ParseResult.ArrayFormatter.formatErrorSync(error).map((issue) => {
          const field = issue.path.map(String).join(".")
          return issue._tag === "Unexpected"
            ? `unknown option "${field.slice(0, 50)}" (${accepted.length === 0 ? "this route takes no options" : `accepted: ${accepted.join(", ")}`})`
            : `${field} ${issue.message}`
        })
        return Effect.fail({ error: "bad_request", message: problems.join("; ") } as const)
      }
    })
  )

const entryId = (id: string) => id as Domain.EntryId

/**
 * A `Range: bytes=…` header as `VoiceJournal.readAudio` takes it. One range
 * only: several ranges, another unit or a malformed value are ignored (the
 * whole recording is sent), as RFC 9110 allows.
 */
const parseRange = (header: string | undefined): VoiceJournal.AudioRange | undefined => {
  const spec = header === undefined ? null : /^\s*bytes\s*=\s*([^,]*?)\s*$/i.exec(header)?.[1]
  if (spec === undefined || spec === null) return undefined
  const fromTo = /^(\d+)-(\d*)$/.exec(spec)
  if (fromTo !== null) {
    const start = Number(fromTo[1])
    const end = fromTo[2] === "" ? undefined : Number(fromTo[2])
    return end !== undefined && end < start ? undefined : { start, end }
  }
  const suffix = /^-(\d+)$/.exec(spec)
  return suffix !== null ? { suffixLength: Number(suffix[1]) } : undefined
}

/**
 * The token of `Authorization: Bearer <token>`: the scheme is case-insensitive
 * and any run of spaces may follow it (RFC 7235); anything else is no token.
 */
const bearerToken = (header: string): Option.Option<Redacted.Redacted<string>> => {
  const match = /^[ \t]*bearer[ \t]+([^\s]+)[ \t]*$/i.exec(header)
  return match === null ? Option.none() : Option.some(Redacted.make(match[1]!))
}

/** A destination as the API shows it: never its secret. */
const destinationView = (d: Domain.StoredDestination) => ({
  id: d.id,
  kind: d.kind,
  name: d.name,
  config: d.config,
  hasSecret: d.sealedSecret !== null,
  disabledAt: d.disabledAt,
  disabledReason: d.disabledReason,
  createdAt: d.createdAt
})

/**
 * The handlers, on `VoiceJournal`, `Destinations` and `JournalStore` in context.
 * @since 0.1.0
 * @category layers
 */
export const layerHandlers = (options: {
  readonly maxUploadBytes: number
  readonly uploadIdleSeconds?: number | undefined
  readonly session?: Session.SessionOptions | undefined
  /** Seconds between heartbeat comments on `GET /events` (default 15). */
  readonly eventsHeartbeatSeconds?: number | undefined
  /** Seconds between re-reads of the events table when no wake-up came (default 5). */
  readonly eventsPollSeconds?: number | undefined
}) => {
  const sessionOptions: Session.SessionOptions = options.session ?? { lifetimeSeconds: Session.defaultLifetimeSeconds, tls: false }
  const entries = HttpApiBuilder.group(VoiceJournalApi, "entries", (handlers) =>
    Effect.gen(function*() {
      const journal = yield* VoiceJournal.VoiceJournal
      const current = CurrentUser
      const doUpload = Upload.upload({ maxBytes: options.maxUploadBytes, idleSeconds: options.uploadIdleSeconds })
      const encodeEntry = Schema.encode(EntryView)
      return handlers
        .handleRaw("upload", ({ request }) =>
          doUpload(request).pipe(
            Effect.tapBoth({
              onSuccess: (details) => details.replayed ? Effect.void : Metrics.uploadAccepted(details.entry.sizeBytes),
              onFailure: (e) => Metrics.uploadRejected("error" in e ? e.error : "stalled")
            }),
            Effect.flatMap((details) =>
              Effect.map(encodeEntry({ ...details.entry, ...details }), (body) =>
                // a retry (same Idempotency-Key): the first upload's entry, 200
                HttpServerResponse.unsafeJson(body, { status: details.replayed ? 200 : 201 }))
            ),
            Effect.catchTag("ParseError", (e) => toApiError({ _tag: "ParseError", message: e.message })),
            Effect.catchTag("UploadStalled", (e) => Effect.succeed(Upload.stalledResponse(e)))
          ))
        .handle("list", ({ urlParams }) =>
          Effect.flatMap(current, (user) =>
            Effect.flatMap(paging(urlParams), (page) =>
              orApiError(journal.searchEntries(user.id, { ...page, q: urlParams.q, tag: urlParams.tag })))))
        .handle("get", ({ path }) =>
          Effect.flatMap(current, (user) =>
            orApiError(journal.getEntry(user.id, entryId(path.id))).pipe(Effect.map((d) => ({ ...d.entry, ...d })))))
        .handle("delete", ({ path }) => Effect.flatMap(current, (user) => orApiError(journal.deleteEntry(user.id, entryId(path.id)))))
        // Range support is what lets browsers (Safari above all) play and seek
        .handleRaw("audio", ({ path, request }) =>
          Effect.flatMap(current, (user) =>
            journal.readAudio(user.id, entryId(path.id), { range: parseRange(request.headers["range"]) }).pipe(
              Effect.map(({ body, entry, range, sizeBytes }) =>
                HttpServerResponse.stream(body, {
                  status: range === null ? 200 : 206,
                  contentType: entry.mimeType,
                  contentLength: range === null ? sizeBytes : range.length,
                  headers: {
                    "x-content-type-options": "nosniff",
                    "accept-ranges": "bytes",
                    ...(range === null ? {} : { "content-range": `bytes ${range.offset}-${range.offset + range.length - 1}/${sizeBytes}` })
                  }
                })
              ),
              Effect.catchTag("RangeNotSatisfiable", (e) =>
                Effect.succeed(HttpServerResponse.unsafeJson({ error: "range_not_satisfiable", message: e.message }, {
                  status: 416,
                  headers: { "content-range": `bytes */${e.sizeBytes}`, "accept-ranges": "bytes" }
                }))),
              // the entry is there, its audio is not: 404 as for a missing entry, saying which is gone
              orApiError
            )))
        .handle("listTranscriptions", ({ path }) =>
          Effect.flatMap(current, (user) => orApiError(journal.listTranscriptions(user.id, entryId(path.id)))))
        // the body-taking POSTs read their options themselves (readOptions): optional, capped, readable errors
        .handleRaw("retranscribe", ({ path, request }) =>
          Effect.flatMap(Effect.zip(current, readOptions(request, RerunBody)), ([user, options]) =>
            orApiError(journal.retranscribe(user.id, entryId(path.id), { makePrimary: options.makePrimary ?? false }))))
        .handle("primaryTranscription", ({ path }) =>
          Effect.flatMap(current, (user) =>
            // the store checks that the transcription belongs to this entry before it writes
            orApiError(journal.setPrimaryTranscription(user.id, entryId(path.id), path.childId as Domain.TranscriptionId))))
        .handle("listCleanups", ({ path }) =>
          Effect.flatMap(current, (user) => orApiError(journal.listCleanups(user.id, entryId(path.id)))))
        .handleRaw("reclean", ({ path, request }) =>
          Effect.flatMap(Effect.zip(current, readOptions(request, CleanupBody)), ([user, options]) =>
            orApiError(journal.reclean(user.id, entryId(path.id), {
              makePrimary: options.makePrimary ?? false,
              transcriptionId: options.transcriptionId as Domain.TranscriptionId | undefined,
              templateId: options.templateId as Domain.TemplateId | undefined
            }))))
        .handle("primaryCleanup", ({ path }) =>
          Effect.flatMap(current, (user) =>
            orApiError(journal.setPrimaryCleanup(user.id, entryId(path.id), path.childId as Domain.CleanupId))))
        .handleRaw("sync", ({ path, request }) =>
          Effect.flatMap(Effect.zip(current, readOptions(request, NoOptions)), ([user]) =>
            orApiError(journal.syncToNotion(user.id, entryId(path.id)))))
        .handleRaw("deliver", ({ path, request }) =>
          Effect.flatMap(Effect.zip(current, readOptions(request, DeliverBody)), ([user, options]) =>
            orApiError(journal.deliver(user.id, entryId(path.id), options.destinationIds as ReadonlyArray<Domain.DestinationId> | undefined)).pipe(
              Effect.flatMap((deliveries) => Schema.encode(Schema.Array(DeliveryViewSchema))(deliveries)),
              Effect.map((body) => HttpServerResponse.unsafeJson(body, { status: 202 })),
              Effect.catchTag("ParseError", (e) => toApiError({ _tag: "ParseError", message: e.message }))
            )))
    }))

  const destinations = HttpApiBuilder.group(VoiceJournalApi, "destinations", (handlers) =>
    Effect.gen(function*() {
      const registry = yield* Destinations.Destinations
      return handlers
        .handleRaw("add", ({ request }) =>
          Effect.flatMap(Effect.zip(CurrentUser, readOptions(request, DestinationBody)), ([user, body]) =>
            orApiError(registry.add(user.id, {
              kind: body.kind,
              name: body.name,
              config: body.config,
              secret: body.secret === undefined ? undefined : Redacted.make(body.secret)
            })).pipe(
              Effect.flatMap((d) => Schema.encode(DestinationViewSchema)(destinationView(d))),
              Effect.map((b) => HttpServerResponse.unsafeJson(b, { status: 201 })),
              Effect.catchTag("ParseError", (e) => toApiError({ _tag: "ParseError", message: e.message }))
            )))
        .handle("list", () =>
          Effect.flatMap(CurrentUser, (user) => orApiError(registry.list(user.id)).pipe(Effect.map((ds) => ds.map(destinationView)))))
        .handle("remove", ({ path }) =>
          Effect.flatMap(CurrentUser, (user) => orApiError(registry.remove(user.id, path.id as Domain.DestinationId))))
        .handleRaw("test", ({ path, request }) =>
          Effect.flatMap(Effect.zip(CurrentUser, readOptions(request, NoOptions)), ([user]) =>
            registry.test(user.id, path.id as Domain.DestinationId).pipe(
              Effect.as({ ok: true, error: null }),
              // the destination's answer is the result, not an error of this request
              Effect.catchTags({
                TemporaryError: (e) => Effect.succeed({ ok: false, error: Errors.redactInternals(e.message) }),
                PermanentError: (e) => Effect.succeed({ ok: false, error: Errors.redactInternals(e.message) }),
                DestinationGone: (e) => Effect.succeed({ ok: false, error: Errors.redactInternals(e.message) })
              }),
              orApiError,
              Effect.map((b) => HttpServerResponse.unsafeJson(b))
            )))
    }))

  const deliveries = HttpApiBuilder.group(VoiceJournalApi, "deliveries", (handlers) =>
    Effect.gen(function*() {
      const journal = yield* VoiceJournal.VoiceJournal
      return handlers
        .handle("list", ({ urlParams }) =>
          Effect.flatMap(CurrentUser, (user) =>
            Effect.flatMap(paging(urlParams), (page) =>
              orApiError(journal.listDeliveries(user.id, {
                ...page,
                status: urlParams.status,
                destinationId: urlParams.destinationId as Domain.DestinationId | undefined,
                entryId: urlParams.entryId as Domain.EntryId | undefined
              })))))
        .handleRaw("retry", ({ path, request }) =>
          Effect.flatMap(Effect.zip(CurrentUser, readOptions(request, NoOptions)), ([user]) =>
            orApiError(journal.retryDelivery(user.id, path.id as Domain.DeliveryId)).pipe(
              Effect.flatMap((d) => Schema.encode(DeliveryViewSchema)(d)),
              Effect.map((b) => HttpServerResponse.unsafeJson(b, { status: 202 })),
              Effect.catchTag("ParseError", (e) => toApiError({ _tag: "ParseError", message: e.message }))
            )))
    }))

  const notion = HttpApiBuilder.group(VoiceJournalApi, "notion", (handlers) =>
    Effect.gen(function*() {
      const journal = yield* VoiceJournal.VoiceJournal
      return handlers
        .handle("listSyncs", ({ urlParams }) =>
          Effect.flatMap(CurrentUser, (user) =>
            Effect.flatMap(paging(urlParams), (page) => orApiError(journal.listNotionSyncs(user.id, { ...page, status: urlParams.status })))))
        .handleRaw("retrySync", ({ path, request }) =>
          Effect.flatMap(Effect.zip(CurrentUser, readOptions(request, NoOptions)), ([user]) =>
            orApiError(journal.retryNotionSync(user.id, path.id as Domain.NotionSyncId))))
    }))

  const templates = HttpApiBuilder.group(VoiceJournalApi, "templates", (handlers) =>
    Effect.gen(function*() {
      const journal = yield* VoiceJournal.VoiceJournal
      const templateId = (id: string) => id as Domain.TemplateId
      const encodeTemplate = Schema.encode(TemplateView)
      return handlers
        .handle("list", () => Effect.flatMap(CurrentUser, (user) => orApiError(journal.listTemplates(user.id))))
        // bodies are read like options (readOptions): capped, JSON only, unknown fields and bad values a 400 saying what to fix
        .handleRaw("create", ({ request }) =>
          Effect.flatMap(Effect.zip(CurrentUser, readOptions(request, TemplateBody)), ([user, input]) =>
            orApiError(journal.createTemplate(user.id, input)).pipe(
              Effect.flatMap((template) => Effect.orDie(encodeTemplate(template))),
              Effect.map((body) => HttpServerResponse.unsafeJson(body, { status: 201 }))
            )))
        .handle("get", ({ path }) => Effect.flatMap(CurrentUser, (user) => orApiError(journal.getTemplate(user.id, templateId(path.id)))))
        .handleRaw("replace", ({ path, request }) =>
          Effect.flatMap(Effect.zip(CurrentUser, readOptions(request, TemplateBody)), ([user, input]) =>
            orApiError(journal.updateTemplate(user.id, templateId(path.id), input)).pipe(
              Effect.flatMap((template) => Effect.orDie(encodeTemplate(template))),
              Effect.map((body) => HttpServerResponse.unsafeJson(body))
            )))
        .handle("delete", ({ path }) => Effect.flatMap(CurrentUser, (user) => orApiError(journal.deleteTemplate(user.id, templateId(path.id)))))
    }))

  const session = HttpApiBuilder.group(VoiceJournalApi, "session", (handlers) =>
    Effect.gen(function*() {
      const store = yield* JournalStore.JournalStore
      const limiter = yield* RateLimit.RateLimiter
      const badKey = { error: "unauthorized", message: "that API key is not valid (or was revoked)" } as const
      const noSession = { error: "unauthorized", message: "not signed in (or the session ended): POST /session with an API key" } as const
      const forbidden = (message: string) => Effect.fail({ error: "forbidden", message } as const)
      const userView = (user: Domain.User) => ({ user: { id: user.id, name: user.name } })
      const current = (request: HttpServerRequest.HttpServerRequest) =>
        Option.match(Session.fromRequest(request), {
          onNone: () => Effect.succeed(Option.none<Domain.Session>()),
          onSome: (id) => store.findSession(Session.hashId(id))
        })
      return handlers
        .handleRaw("create", ({ request }) =>
          Effect.gen(function*() {
            // login CSRF: another site must not sign a browser in to an account of its choosing
            if (request.headers["origin"] !== undefined) {
              const problem = Session.originProblem(request, sessionOptions)
              if (Option.isSome(problem)) return yield* forbidden(problem.value)
            }
            const { apiKey } = yield* readOptions(request, SessionBody)
            const found = yield* store.findApiKeyByHash(ApiKeys.hash(Redacted.make(apiKey)))
            if (Option.isNone(found)) {
              yield* limiter.failed
              return yield* Effect.fail(badKey)
            }
            yield* limiter.admit(found.value.key.id)
            const id = Session.generateId()
            const now = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
            yield* store.createSession({
              idHash: Session.hashId(id),
              userId: found.value.user.id,
              apiKeyId: found.value.key.id,
              expiresAt: new Date(now + sessionOptions.lifetimeSeconds * 1000)
            })
            return HttpServerResponse.unsafeJson(userView(found.value.user), {
              status: 200,
              headers: { "set-cookie": Session.setCookie(id, sessionOptions), "cache-control": "no-store" }
            })
          }).pipe(
            // RateLimit has already made this response a 429
            Effect.catchTag("RateLimited", () => Effect.fail(badKey)),
            Effect.catchTag("StoreError", toApiError)
          ))
        .handleRaw("get", ({ request }) =>
          current(request).pipe(
            Effect.flatMap(Option.match({
              onNone: () => Effect.fail(noSession),
              onSome: (s) => Effect.succeed(HttpServerResponse.unsafeJson(userView(s.user), { headers: { "cache-control": "no-store" } }))
            })),
            Effect.catchTag("StoreError", toApiError)
          ))
        .handleRaw("delete", ({ request }) =>
          Effect.gen(function*() {
            const id = Session.fromRequest(request)
            if (Option.isSome(id)) {
              const problem = Session.originProblem(request, sessionOptions)
              if (Option.isSome(problem)) return yield* forbidden(problem.value)
              yield* store.deleteSession(Session.hashId(id.value))
            }
            return HttpServerResponse.empty({ status: 204, headers: { "set-cookie": Session.clearCookie(sessionOptions) } })
          }).pipe(Effect.catchTag("StoreError", toApiError)))
    }))

  const heartbeat = Duration.seconds(options.eventsHeartbeatSeconds ?? 15)
  const events = HttpApiBuilder.group(VoiceJournalApi, "events", (handlers) =>
    Effect.gen(function*() {
      const store = yield* JournalStore.JournalStore
      const signal = yield* Effect.serviceOption(JournalEvents.Signal)
      const closing = yield* Effect.serviceOption(ServerClosing)
      return handlers.handleRaw("stream", ({ request }) =>
        Effect.gen(function*() {
          const user = yield* CurrentUser
          const lastEventId = request.headers["last-event-id"]
          if (lastEventId !== undefined && !/^[0-9]{1,15}$/.test(lastEventId.trim())) {
            return yield* Effect.fail({ error: "bad_request", message: "Last-Event-ID must be the id of an event (digits)" } as const)
          }
          const events = JournalEvents.stream(user.id, {
            afterId: lastEventId === undefined ? undefined : Number(lastEventId.trim()),
            pollInterval: Duration.seconds(options.eventsPollSeconds ?? 5)
          }).pipe(
            Stream.map(sseEvent),
            // the table is the truth: a client that reconnects with Last-Event-ID loses nothing
            Stream.catchAll((e) =>
              Stream.fromEffect(Effect.logWarning("GET /events: reading events failed; ending the stream (the client reconnects)", e))
                .pipe(Stream.drain)
            ),
            Stream.provideService(JournalStore.JournalStore, store),
            (self) => Option.isSome(signal) ? Stream.provideService(self, JournalEvents.Signal, signal.value) : self
          )
          const beats = Stream.repeatEffectWithSchedule(Effect.succeed(": heartbeat\n\n"), Schedule.spaced(heartbeat)).pipe(Stream.drop(1))
          const body = Stream.make(": connected\nretry: 2000\n\n").pipe(
            Stream.concat(Stream.merge(events, beats, { haltStrategy: "left" })),
            (self) => Option.isSome(closing) ? Stream.interruptWhen(self, closing.value) : self,
            Stream.map((text) => encoder.encode(text))
          )
          return HttpServerResponse.stream(body, {
            contentType: "text/event-stream",
            headers: { "cache-control": "no-store", "x-accel-buffering": "no" }
          })
        }))
    }))

  const health = HttpApiBuilder.group(VoiceJournalApi, "health", (handlers) =>
    Effect.gen(function*() {
      const store = yield* JournalStore.JournalStore
      const pipeline = yield* Pipeline.PipelineStatus
      const scrape = yield* Metrics.Scrape
      return handlers
        .handle("alive", () => Effect.succeed({ status: "ok" } as const))
        .handleRaw("metrics", ({ request }) => Metrics.respond(request).pipe(Effect.provideService(Metrics.Scrape, scrape)))
        .handle("ready", () =>
          // SQLite's ping fails at once (busy) while another process holds the lock: 503 + Retry-After, quickly
          store.ping.pipe(
            Effect.catchAll((e) =>
              Errors.isStoreBusy(e) ? databaseBusy : Effect.fail({ error: "unavailable", message: "the database is not reachable" } as const)
            ),
            Effect.zipRight(pipeline.running),
            Effect.filterOrFail((running) => running, () => ({ error: "unavailable", message: "the pipeline workers are not running" } as const)),
            Effect.as({ status: "ready" } as const)
          ))
    }))

  // Authentication is also where requests are counted (RateLimit): by the key's id once it
  // authenticated, by the client's address when a presented credential fails.
  const authentication = Layer.effect(
    Authentication,
    Effect.gen(function*() {
      const store = yield* JournalStore.JournalStore
      const limiter = yield* RateLimit.RateLimiter
      const unauthorized = {
        error: "unauthorized",
        message: "a valid API key is required: Authorization: Bearer <key> (browsers: sign in with POST /session)"
      } as const
      const storeFailed = (e: Errors.StoreError) =>
        Errors.isStoreBusy(e) ? databaseBusy : Effect.logWarning("authentication: the credential could not be looked up", e).pipe(
          Effect.zipRight(Effect.die(HttpServerResponse.unsafeJson(
            { error: "unavailable", message: "the database is not reachable; retry shortly" },
            { status: 503 }
          )))
        )
      return Authentication.of({
        // The platform hands over the header minus its first 7 characters whatever the scheme
        // says, so the header is parsed here (bearerToken). The key's id is needed for the
        // limits, so the key is looked up in the store (as VoiceJournal.authenticate does).
        bearer: () =>
          Effect.gen(function*() {
            const header = (yield* HttpServerRequest.HttpServerRequest).headers["authorization"]
            // no credential, no guess: 401, not counted as a failed attempt (the cookie is tried next)
            if (header === undefined) return yield* Effect.fail(unauthorized)
            const found = yield* Option.match(bearerToken(header), {
              onNone: () => Effect.succeed(Option.none()),
              onSome: (token) => store.findApiKeyByHash(ApiKeys.hash(token))
            })
            if (Option.isSome(found)) {
              yield* limiter.admit(found.value.key.id)
              return found.value.user
            }
            yield* limiter.failed
            return yield* Effect.fail(unauthorized)
          }).pipe(
            // RateLimit has already made this response a 429; failing stops the request before its handler
            Effect.catchTag("RateLimited", () => Effect.fail(unauthorized)),
            // the store failed, not the client: 503 (not a 401 the client would take for a bad key),
            // and not counted against the client's address
            Effect.catchTag("StoreError", storeFailed)
          ),
        // Tried when `bearer` failed. A request that sent Authorization stands or falls by it; otherwise the
        // session cookie signs it in, counted against the budget of the key the session came from. A
        // stale cookie is not counted as a failed attempt (a browser would lock its address out of signing in).
        cookie: () =>
          Effect.gen(function*() {
            const request = yield* HttpServerRequest.HttpServerRequest
            if (request.headers["authorization"] !== undefined) return yield* Effect.fail(unauthorized)
            const id = Session.fromRequest(request)
            if (Option.isNone(id)) return yield* Effect.fail(unauthorized)
            const found = yield* store.findSession(Session.hashId(id.value))
            if (Option.isNone(found)) return yield* Effect.fail(unauthorized)
            if (Session.isStateChanging(request.method)) {
              const problem = Session.originProblem(request, sessionOptions)
              if (Option.isSome(problem)) return yield* Effect.fail({ error: "forbidden", message: problem.value } as const)
            }
            yield* limiter.admit(found.value.apiKeyId)
            return found.value.user
          }).pipe(
            Effect.catchTag("RateLimited", () => Effect.fail(unauthorized)),
            Effect.catchTag("StoreError", storeFailed)
          )
      })
    })
  )

  return Layer.mergeAll(entries, notion, templates, session, events, destinations, deliveries, health).pipe(Layer.provide(authentication))
}
