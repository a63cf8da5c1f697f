/**
 * The handlers of the HTTP API: thin — they authenticate (middleware),
 * translate HTTP to `VoiceJournal` calls and typed errors to status codes.
 * Uploads are streamed straight into `VoiceJournal.ingest`; nothing is
 * buffered and nothing is forked into the request fiber (a client that
 * disconnects interrupts the handler, and ingest leaves nothing behind).
 *
 * @since 0.1.0
 */
import { HttpApiBuilder, type HttpServerRequest, HttpServerResponse, Multipart } from "@effect/platform"
import { NodeHttpServerRequest, NodeStream } from "@effect/platform-node"
import { Domain, JournalStore, Pipeline, VoiceJournal } from "@voice-journal/core"
import { Effect, Layer, Option, Redacted, Schema, Stream } from "effect"
import { type ApiError, Authentication, CurrentUser, EntryView, VoiceJournalApi } from "./Api.js"

type Tagged = { readonly _tag: string; readonly message: string }

/**
 * Maps a core error to the API's `{ error, message }`. Internal failures are
 * logged and answered without detail (no stack traces, no secrets).
 * @since 0.1.0
 */
export const toApiError = (e: Tagged): Effect.Effect<never, ApiError> => {
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

const orApiError = <A, E extends Tagged, R>(self: Effect.Effect<A, E, R>) => Effect.catchAll(self, toApiError)

const PageParams = Schema.Struct({
  limit: Schema.optionalWith(Schema.NumberFromString.pipe(Schema.int(), Schema.between(1, 100)), { default: () => 20 }),
  offset: Schema.optionalWith(Schema.NumberFromString.pipe(Schema.int(), Schema.nonNegative()), { default: () => 0 })
})

/** Paging from the query string, or 400 saying what is wrong. */
const paging = (params: { readonly limit?: string | undefined; readonly offset?: string | undefined }) =>
  Schema.decodeUnknown(PageParams)(params).pipe(
    Effect.mapError(() => ({ error: "bad_request", message: "limit must be an integer from 1 to 100 and offset an integer ≥ 0" } as const))
  )

const entryId = (id: string) => id as Domain.EntryId

/** The multipart field that carries the audio. @since 0.1.0 */
export const uploadField = "file"
const maxParts = 20

/**
 * Streams an upload into `ingest`: multipart (field `file`, other parts
 * drained, at most 20) or a raw body. Rejects on Content-Length before
 * reading a byte.
 */
/**
 * Reads and discards what the client is still sending (at most `maxBytes`
 * more), so a 4xx sent mid-upload reaches it as a response instead of a
 * connection reset. Gives up after 30 s.
 */
const discardRest = (request: HttpServerRequest.HttpServerRequest, maxBytes: number) =>
  Effect.async<void>((resume) => {
    const incoming = NodeHttpServerRequest.toIncomingMessage(request)
    if (incoming.complete || incoming.destroyed) return resume(Effect.void)
    let seen = 0
    const done = () => {
      clearTimeout(timer)
      resume(Effect.void)
    }
    const timer = setTimeout(() => {
      incoming.destroy()
      done()
    }, 30_000)
    incoming.on("data", (chunk: Buffer) => {
      seen += chunk.length
      if (seen > maxBytes) {
        incoming.destroy()
        done()
      }
    })
    incoming.once("end", done)
    incoming.once("close", done)
    incoming.resume()
  })

/**
 * Fails once the request body has ended but the multipart parser has not
 * finished shortly after: a body cut off before its closing boundary would
 * otherwise leave the parser waiting forever.
 */
const truncated = (request: HttpServerRequest.HttpServerRequest) =>
  Effect.async<void>((resume) => {
    const incoming = NodeHttpServerRequest.toIncomingMessage(request)
    if (incoming.complete) return resume(Effect.void)
    incoming.once("end", () => resume(Effect.void))
  }).pipe(
    Effect.zipRight(Effect.sleep("2 seconds")),
    Effect.zipRight(Effect.fail({ _tag: "InvalidUpload", message: "the multipart body ended before its closing boundary" } as const))
  )

const upload = (maxBytes: number) =>
  Effect.fn("Http.upload")(function*(request: HttpServerRequest.HttpServerRequest) {
    const user = yield* CurrentUser
    const journal = yield* VoiceJournal.VoiceJournal
    const declared = Number(request.headers["content-length"] ?? Number.NaN)
    if (Number.isFinite(declared) && declared > maxBytes) {
      return yield* Effect.fail({ error: "payload_too_large", message: `upload exceeds the limit of ${maxBytes} bytes` } as const)
    }
    const contentType = request.headers["content-type"] ?? ""
    if (!contentType.toLowerCase().startsWith("multipart/form-data")) {
      const filename = request.headers["x-filename"]
      // not `request.stream`: stopping that destroys the socket, and the client would see a reset instead of our 4xx
      const body = NodeStream.fromReadable(
        () => NodeHttpServerRequest.toIncomingMessage(request),
        (cause) => ({ _tag: "RequestError", message: String(cause) }) as const,
        { closeOnDone: false }
      )
      return yield* orApiError(journal.ingest(user.id, body, { originalFilename: filename, maxBytes })).pipe(
        Effect.tapError(() => discardRest(request, maxBytes))
      )
    }
    let stored: VoiceJournal.EntryDetails | undefined
    let parts = 0
    const consumed = yield* Effect.raceFirst(request.multipartStream.pipe(
      Stream.mapEffect((part) =>
        Effect.gen(function*() {
          parts++
          if (parts > maxParts) return yield* Effect.fail({ _tag: "InvalidUpload", message: `more than ${maxParts} parts` } as const)
          if (!Multipart.isFile(part)) return
          if (part.key === uploadField && stored === undefined) {
            stored = yield* journal.ingest(user.id, part.content, { originalFilename: part.name, maxBytes })
          } else {
            yield* Stream.runDrain(part.content)
          }
        })
      ),
      Stream.runDrain
    ), truncated(request)).pipe(Effect.either)
    if (consumed._tag === "Left") {
      // the body broke after the file was stored: the upload as a whole failed, so nothing stays
      if (stored !== undefined) yield* journal.deleteEntry(user.id, stored.entry.id).pipe(Effect.ignore)
      yield* discardRest(request, maxBytes)
      return yield* toApiError(consumed.left as Tagged)
    }
    if (stored === undefined) {
      return yield* Effect.fail({ error: "bad_request", message: `no file in multipart field "${uploadField}"` } as const)
    }
    return stored
  })

/**
 * The handlers, on `VoiceJournal` and `JournalStore` in context.
 * @since 0.1.0
 * @category layers
 */
export const layerHandlers = (options: { readonly maxUploadBytes: number }) => {
  const entries = HttpApiBuilder.group(VoiceJournalApi, "entries", (handlers) =>
    Effect.gen(function*() {
      const journal = yield* VoiceJournal.VoiceJournal
      const current = CurrentUser
      const doUpload = upload(options.maxUploadBytes)
      const encodeEntry = Schema.encode(EntryView)
      return handlers
        .handleRaw("upload", ({ request }) =>
          doUpload(request).pipe(
            Effect.flatMap((details) => encodeEntry({ ...details.entry, ...details })),
            Effect.map((body) => HttpServerResponse.unsafeJson(body, { status: 201 })),
            Effect.catchTag("ParseError", (e) => toApiError({ _tag: "ParseError", message: e.message }))
          ))
        .handle("list", ({ urlParams }) =>
          Effect.flatMap(current, (user) => Effect.flatMap(paging(urlParams), (page) => orApiError(journal.listEntries(user.id, page)))))
        .handle("get", ({ path }) =>
          Effect.flatMap(current, (user) =>
            orApiError(journal.getEntry(user.id, entryId(path.id))).pipe(Effect.map((d) => ({ ...d.entry, ...d })))))
        .handle("delete", ({ path }) => Effect.flatMap(current, (user) => orApiError(journal.deleteEntry(user.id, entryId(path.id)))))
        .handleRaw("audio", ({ path }) =>
          Effect.flatMap(current, (user) =>
            orApiError(journal.readAudio(user.id, entryId(path.id))).pipe(
              Effect.map(({ body, entry }) =>
                HttpServerResponse.stream(body, {
                  contentType: entry.mimeType,
                  contentLength: entry.sizeBytes,
                  headers: { "x-content-type-options": "nosniff" }
                })
              )
            )))
        .handle("listTranscriptions", ({ path }) =>
          Effect.flatMap(current, (user) => orApiError(journal.listTranscriptions(user.id, entryId(path.id)))))
        .handle("retranscribe", ({ path, payload }) =>
          Effect.flatMap(current, (user) =>
            orApiError(journal.retranscribe(user.id, entryId(path.id), { makePrimary: payload.makePrimary ?? false }))))
        .handle("primaryTranscription", ({ path }) =>
          Effect.flatMap(current, (user) =>
            orApiError(Effect.gen(function*() {
              const t = yield* journal.setPrimaryTranscription(user.id, path.childId as Domain.TranscriptionId)
              if (t.entryId !== path.id) return yield* Effect.fail({ _tag: "NotFound", message: `transcription ${path.childId} not found` })
              return t
            }))))
        .handle("listCleanups", ({ path }) =>
          Effect.flatMap(current, (user) => orApiError(journal.listCleanups(user.id, entryId(path.id)))))
        .handle("reclean", ({ path, payload }) =>
          Effect.flatMap(current, (user) =>
            orApiError(journal.reclean(user.id, entryId(path.id), {
              makePrimary: payload.makePrimary ?? false,
              transcriptionId: payload.transcriptionId as Domain.TranscriptionId | undefined
            }))))
        .handle("primaryCleanup", ({ path }) =>
          Effect.flatMap(current, (user) =>
            orApiError(Effect.gen(function*() {
              const c = yield* journal.setPrimaryCleanup(user.id, path.childId as Domain.CleanupId)
              if (c.entryId !== path.id) return yield* Effect.fail({ _tag: "NotFound", message: `cleanup ${path.childId} not found` })
              return c
            }))))
        .handle("sync", ({ path }) => Effect.flatMap(current, (user) => orApiError(journal.syncToNotion(user.id, entryId(path.id)))))
    }))

  const notion = HttpApiBuilder.group(VoiceJournalApi, "notion", (handlers) =>
    Effect.gen(function*() {
      const journal = yield* VoiceJournal.VoiceJournal
      return handlers
        .handle("listSyncs", ({ urlParams }) =>
          Effect.flatMap(CurrentUser, (user) =>
            Effect.flatMap(paging(urlParams), (page) => orApiError(journal.listNotionSyncs(user.id, { ...page, status: urlParams.status })))))
        .handle("retrySync", ({ path }) =>
          Effect.flatMap(CurrentUser, (user) => orApiError(journal.retryNotionSync(user.id, path.id as Domain.NotionSyncId))))
    }))

  const health = HttpApiBuilder.group(VoiceJournalApi, "health", (handlers) =>
    Effect.gen(function*() {
      const store = yield* JournalStore.JournalStore
      const pipeline = yield* Pipeline.PipelineStatus
      return handlers
        .handle("alive", () => Effect.succeed({ status: "ok" } as const))
        .handle("ready", () =>
          store.ping.pipe(
            Effect.mapError(() => ({ error: "unavailable", message: "the database is not reachable" } as const)),
            Effect.zipRight(pipeline.running),
            Effect.filterOrFail((running) => running, () => ({ error: "unavailable", message: "the pipeline workers are not running" } as const)),
            Effect.as({ status: "ready" } as const)
          ))
    }))

  const authentication = Layer.effect(
    Authentication,
    Effect.gen(function*() {
      const journal = yield* VoiceJournal.VoiceJournal
      const unauthorized = { error: "unauthorized", message: "a valid API key is required: Authorization: Bearer <key>" } as const
      return Authentication.of({
        bearer: (token) =>
          Redacted.value(token) === ""
            ? Effect.fail(unauthorized)
            : journal.authenticate(token).pipe(
              Effect.orElseSucceed(() => Option.none<Domain.User>()),
              Effect.flatMap(Option.match({ onNone: () => Effect.fail(unauthorized), onSome: Effect.succeed }))
            )
      })
    })
  )

  return Layer.mergeAll(entries, notion, health).pipe(Layer.provide(authentication))
}
