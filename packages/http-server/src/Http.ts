/**
 * The handlers of the HTTP API: thin — they authenticate (middleware),
 * translate HTTP to `VoiceJournal` calls and typed errors to status codes.
 * Uploads are streamed straight into `VoiceJournal.ingest`; nothing is
 * buffered and nothing is forked into the request fiber (a client that
 * disconnects interrupts the handler, and ingest leaves nothing behind).
 *
 * @since 0.1.0
 */
import { HttpApiBuilder, HttpServerResponse } from "@effect/platform"
import { Domain, Errors, JournalStore, Pipeline, VoiceJournal } from "@voice-journal/core"
import { Effect, Layer, Option, Redacted, Schema } from "effect"
import { Authentication, CurrentUser, EntryView, VoiceJournalApi } from "./Api.js"
import { databaseBusy, orApiError, toApiError } from "./ApiErrors.js"
import * as Upload from "./Upload.js"

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
      const doUpload = Upload.upload(options.maxUploadBytes)
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
