/**
 * The library's front door for a Node service that embeds voice-journal:
 * ingest audio from any `Stream`, read and list entries, re-run stages,
 * deliver to destinations (and the server-wide Notion), read the delivery
 * log, and manage users and API keys. Background stages run in the
 * layer from `Pipeline`; this service only writes rows and wakes workers.
 *
 * @since 0.1.0
 */
import { Clock, Context, Duration, Effect, Layer, Option, type Redacted, type Stream } from "effect"
import * as ApiKeys from "./ApiKeys.js"
import { AudioProbe } from "./AudioProbe.js"
import { type BlobBody, BlobStore, type ByteRange } from "./BlobStore.js"
import { Destinations } from "./Destinations.js"
import {
  type ApiKey,
  type ApiKeyId,
  type CleanedEntry,
  type CleanupId,
  type CleanupTemplate,
  type Delivery,
  type DeliveryId,
  type DeliveryStatus,
  type DestinationId,
  type EntryId,
  type EntrySummary,
  NotionSync,
  type NotionSyncId,
  type NotionSyncStatus,
  type Page,
  type PageRequest,
  type NewCleanupTemplate,
  serverNotionDestination,
  type TemplateId,
  type Transcription,
  type TranscriptionId,
  type User,
  type UserId,
  type VoiceEntry
} from "./Domain.js"
import {
  AudioMissing,
  AudioTooLong,
  type BlobStoreError,
  InvalidState,
  type InvalidUpload,
  type NameTaken,
  NotFound,
  type PayloadTooLarge,
  type PrimaryConflict,
  RangeNotSatisfiable,
  StoreError,
  type UnsupportedMediaType
} from "./Errors.js"
import type * as EntrySearch from "./EntrySearch.js"
import * as Ingest from "./Ingest.js"
import { JournalStore } from "./JournalStore.js"
import { WorkSignal } from "./WorkSignal.js"

/**
 * An entry with the state of its stages: the primary (else newest)
 * transcription and cleanup, the newest sync to the server-wide Notion, and
 * every delivery (newest first).
 * @since 0.1.0
 */
export interface EntryDetails {
  readonly entry: VoiceEntry
  readonly transcription: Transcription | null
  readonly cleanup: CleanedEntry | null
  readonly notionSync: NotionSync | null
  readonly deliveries: ReadonlyArray<Delivery>
}

/**
 * A delivery to the server-wide Notion as the `/notion/syncs` routes show it.
 * @since 0.2.0
 */
export const notionSyncOf = (d: Delivery): NotionSync =>
  new NotionSync({ ...d, id: d.id as unknown as NotionSyncId, notionPageId: d.externalRef })

/**
 * Which bytes of a recording to read, as an HTTP `Range` names them: from
 * `start` to `end` inclusive (no `end`: to the last byte), or the last
 * `suffixLength` bytes.
 * @since 0.1.0
 */
export type AudioRange =
  | { readonly start: number; readonly end?: number | undefined }
  | { readonly suffixLength: number }

/**
 * Resolves `range` against a recording of `sizeBytes` (RFC 9110 §14.1.2):
 * an `end` past the last byte is clamped, a suffix longer than the file is
 * the whole file; None when no byte of it exists (a `start` at or past the
 * end, an empty suffix) — HTTP's 416.
 * @since 0.1.0
 */
export const resolveRange = (range: AudioRange, sizeBytes: number): Option.Option<ByteRange> => {
  if ("suffixLength" in range) {
    const length = Math.min(range.suffixLength, sizeBytes)
    return length > 0 ? Option.some({ offset: sizeBytes - length, length }) : Option.none()
  }
  const last = Math.min(range.end ?? sizeBytes - 1, sizeBytes - 1)
  return range.start < sizeBytes && last >= range.start
    ? Option.some({ offset: range.start, length: last - range.start + 1 })
    : Option.none()
}

/**
 * A recording being read: the whole of it (`range` null) or one range.
 * @since 0.1.0
 */
export interface AudioRead {
  readonly entry: VoiceEntry
  /** The stored size, as the blob store reports it. */
  readonly sizeBytes: number
  readonly range: ByteRange | null
  readonly body: Stream.Stream<Uint8Array, BlobStoreError>
}

/**
 * Settings of the front door.
 * @since 0.1.0
 */
export interface VoiceJournalConfig {
  /** Largest accepted recording. Default 100 MiB. */
  readonly maxUploadBytes: number
  /** Whether the server-wide Notion is configured: every user's implicit destination. */
  readonly notionEnabled: boolean
  /**
   * Longest accepted recording, checked at ingest by the `AudioProbe` when
   * one is provided (the server always provides it). Default 4 h.
   */
  readonly maxAudioSeconds: number
}

/**
 * How long an upload's idempotency key is remembered.
 * @since 0.1.0
 */
export const idempotencyWindow = Duration.hours(24)

/** @since 0.1.0 */
export const defaultConfig: VoiceJournalConfig = {
  maxUploadBytes: 100 * 1024 * 1024,
  notionEnabled: false,
  maxAudioSeconds: 4 * 3600
}

/**
 * What can go wrong while ingesting.
 * @since 0.1.0
 */
export type IngestError = PayloadTooLarge | AudioTooLong | UnsupportedMediaType | InvalidUpload | BlobStoreError | StoreError

/**
 * @since 0.1.0
 * @category models
 */
export interface VoiceJournalService {
  readonly config: VoiceJournalConfig
  /**
   * Streams a recording into storage (size limit enforced while streaming,
   * type sniffed from the content, sha256 on the way), checks its duration
   * (`maxAudioSeconds`, with the `AudioProbe` if there is one) and queues
   * its transcription. The row is written only once the file is complete;
   * on any failure nothing is left behind.
   */
  readonly ingest: <E, R>(
    userId: UserId,
    /** A stream, or a producer that pushes the bytes as they arrive (`BlobStore.BlobProducer`, the server's raw bodies). */
    body: BlobBody<E, R>,
    options?: {
      readonly originalFilename?: string | undefined
      readonly maxBytes?: number | undefined
      /**
       * Makes a retry safe: an upload with a key this user already used in
       * the last {@link idempotencyWindow} returns that first entry
       * (`replayed: true`) and keeps nothing of its own — also when both
       * arrive at once (the store's unique index decides).
       */
      readonly idempotencyKey?: string | undefined
    }
  ) => Effect.Effect<EntryDetails & { readonly replayed: boolean }, E | IngestError, R>
  readonly getEntry: (userId: UserId, entryId: EntryId) => Effect.Effect<EntryDetails, NotFound | StoreError>
  /** Newest first, each with its stages' status, title and duration (one store query per page). */
  readonly listEntries: (userId: UserId, page: PageRequest) => Effect.Effect<Page<EntrySummary>, StoreError>
  /** Full-text search with `q` and/or a `tag` filter, ranked and paged (see `JournalStore.searchEntries`). */
  readonly searchEntries: (
    userId: UserId,
    request: EntrySearch.SearchRequest
  ) => Effect.Effect<Page<EntrySummary>, EntrySearch.InvalidSearch | StoreError>
  /** Removes the rows, then the audio. */
  readonly deleteEntry: (userId: UserId, entryId: EntryId) => Effect.Effect<void, NotFound | StoreError>
  /**
   * The stored audio (all of it, or `range`), with its entry (sniffed MIME
   * type) and size. The blob is checked first: a recording whose audio is
   * gone fails with AudioMissing instead of streaming nothing.
   */
  readonly readAudio: (
    userId: UserId,
    entryId: EntryId,
    options?: { readonly range?: AudioRange | undefined }
  ) => Effect.Effect<AudioRead, NotFound | AudioMissing | RangeNotSatisfiable | BlobStoreError | StoreError>
  readonly listTranscriptions: (
    userId: UserId,
    entryId: EntryId
  ) => Effect.Effect<ReadonlyArray<Transcription>, NotFound | StoreError>
  /** Queues another transcription run. */
  readonly retranscribe: (
    userId: UserId,
    entryId: EntryId,
    options?: { readonly makePrimary?: boolean | undefined }
  ) => Effect.Effect<Transcription, NotFound | StoreError>
  /** Makes a completed transcription of this entry primary (one of another entry is NotFound). */
  readonly setPrimaryTranscription: (
    userId: UserId,
    entryId: EntryId,
    id: TranscriptionId
  ) => Effect.Effect<Transcription, NotFound | InvalidState | PrimaryConflict | StoreError>
  readonly listCleanups: (
    userId: UserId,
    entryId: EntryId
  ) => Effect.Effect<ReadonlyArray<CleanedEntry>, NotFound | StoreError>
  /**
   * Queues another cleanup (of the primary transcription unless one is
   * named; with the built-in journal template unless `templateId` names one
   * of the user's templates).
   */
  readonly reclean: (
    userId: UserId,
    entryId: EntryId,
    options?: {
      readonly transcriptionId?: TranscriptionId | undefined
      readonly templateId?: TemplateId | undefined
      readonly makePrimary?: boolean | undefined
    }
  ) => Effect.Effect<CleanedEntry, NotFound | InvalidState | StoreError>
  /** Makes a completed cleanup of this entry primary (one of another entry is NotFound). */
  readonly setPrimaryCleanup: (
    userId: UserId,
    entryId: EntryId,
    id: CleanupId
  ) => Effect.Effect<CleanedEntry, NotFound | InvalidState | PrimaryConflict | StoreError>
  /** The user's cleanup templates (see `JournalStore` for the rules: names unique per user, in-use ones kept). */
  readonly createTemplate: (userId: UserId, input: NewCleanupTemplate) => Effect.Effect<CleanupTemplate, NameTaken | StoreError>
  readonly listTemplates: (userId: UserId) => Effect.Effect<ReadonlyArray<CleanupTemplate>, StoreError>
  readonly getTemplate: (userId: UserId, id: TemplateId) => Effect.Effect<CleanupTemplate, NotFound | StoreError>
  readonly updateTemplate: (
    userId: UserId,
    id: TemplateId,
    input: NewCleanupTemplate
  ) => Effect.Effect<CleanupTemplate, NotFound | NameTaken | StoreError>
  readonly deleteTemplate: (userId: UserId, id: TemplateId) => Effect.Effect<void, NotFound | InvalidState | StoreError>
  /**
   * Queues a delivery of the primary cleanup to each of `destinationIds`
   * (default: all the user's enabled destinations and the server-wide Notion).
   */
  readonly deliver: (
    userId: UserId,
    entryId: EntryId,
    destinationIds?: ReadonlyArray<DestinationId> | undefined
  ) => Effect.Effect<ReadonlyArray<Delivery>, NotFound | InvalidState | StoreError>
  /** The delivery log, newest first. */
  readonly listDeliveries: (
    userId: UserId,
    options: PageRequest & {
      readonly status?: DeliveryStatus | undefined
      readonly destinationId?: DestinationId | undefined
      readonly entryId?: EntryId | undefined
    }
  ) => Effect.Effect<Page<Delivery>, StoreError>
  /** Re-queues a failed delivery with a fresh attempt budget. */
  readonly retryDelivery: (userId: UserId, id: DeliveryId) => Effect.Effect<Delivery, NotFound | InvalidState | StoreError>
  /** Queues a Notion sync of the primary cleanup (InvalidState if Notion is off or nothing is cleaned yet). */
  readonly syncToNotion: (userId: UserId, entryId: EntryId) => Effect.Effect<NotionSync, NotFound | InvalidState | StoreError>
  readonly listNotionSyncs: (
    userId: UserId,
    options: PageRequest & { readonly status?: NotionSyncStatus | undefined }
  ) => Effect.Effect<Page<NotionSync>, StoreError>
  /** Re-queues a failed sync with a fresh attempt budget. */
  readonly retryNotionSync: (
    userId: UserId,
    id: NotionSyncId
  ) => Effect.Effect<NotionSync, NotFound | InvalidState | StoreError>
  /** Creates a user and a first API key (returned once, never stored). */
  readonly createUser: (
    name: string
  ) => Effect.Effect<{ readonly user: User; readonly apiKey: Redacted.Redacted<string>; readonly key: ApiKey }, StoreError>
  readonly createApiKey: (
    userId: UserId,
    name: string
  ) => Effect.Effect<{ readonly apiKey: Redacted.Redacted<string>; readonly key: ApiKey }, NotFound | StoreError>
  readonly listApiKeys: (userId: UserId) => Effect.Effect<ReadonlyArray<ApiKey>, StoreError>
  readonly revokeApiKey: (userId: UserId, keyId: ApiKeyId) => Effect.Effect<void, NotFound | StoreError>
  /** The user a presented key belongs to, if it is live. */
  readonly authenticate: (apiKey: Redacted.Redacted<string>) => Effect.Effect<Option.Option<User>, StoreError>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class VoiceJournal extends Context.Tag("@voice-journal/core/VoiceJournal")<VoiceJournal, VoiceJournalService>() {}

const primaryOrNewest = <A extends { readonly isPrimary: boolean }>(rows: ReadonlyArray<A>): A | null =>
  rows.find((r) => r.isPrimary) ?? rows[0] ?? null

/**
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  config: Partial<VoiceJournalConfig> = {}
): Effect.Effect<VoiceJournalService, never, JournalStore | BlobStore | WorkSignal> =>
  Effect.gen(function*() {
    const settings: VoiceJournalConfig = { ...defaultConfig, ...config }
    const store = yield* JournalStore
    const blobs = yield* BlobStore
    const signal = yield* WorkSignal
    const probe = yield* Effect.serviceOption(AudioProbe)

    /**
     * Refuses a recording longer than `maxAudioSeconds`: run by the blob
     * store on the complete file before it is kept (while the filesystem
     * store's fsync runs), so a refused one is never stored. One the probe
     * cannot read is let through: the transcription stage reports why, as it
     * does for any undecodable recording.
     */
    const checkDuration = Option.map(probe, (probe) => (path: string) =>
      Effect.gen(function*() {
        const probed = yield* probe.probe(path).pipe(
          Effect.map((p) => p.durationSeconds),
          Effect.catchAll((e) =>
            (e._tag === "PermanentError"
              ? Effect.logInfo(`duration not checked at ingest (the transcription stage will report it): ${e.message}`)
              : Effect.logWarning(`duration not checked at ingest: ${e.message}`, e)).pipe(Effect.as(null))
          )
        )
        if (probed !== null && probed > settings.maxAudioSeconds) {
          return yield* new AudioTooLong({ durationSeconds: probed, maxSeconds: settings.maxAudioSeconds })
        }
      }))
    const destinations = yield* Effect.serviceOption(Destinations)
    const implicit = settings.notionEnabled ? [serverNotionDestination] : []

    const getEntry = (userId: UserId, entryId: EntryId) =>
      Effect.gen(function*() {
        const entry = yield* store.getEntry(userId, entryId)
        const [transcriptions, cleanups, deliveries] = yield* Effect.all([
          store.listTranscriptions(userId, entryId),
          store.listCleanups(userId, entryId),
          store.listDeliveries(userId, { entryId, limit: 100, offset: 0 })
        ])
        const notion = deliveries.items.find((d) => d.destinationId === serverNotionDestination)
        return {
          entry,
          transcription: primaryOrNewest(transcriptions),
          cleanup: primaryOrNewest(cleanups),
          notionSync: notion === undefined ? null : notionSyncOf(notion),
          deliveries: deliveries.items
        } satisfies EntryDetails
      })

    const service: VoiceJournalService = {
      config: settings,

      ingest: (userId, body, options = {}) =>
        Effect.gen(function*() {
          const stored = yield* Ingest.ingest(body, {
            maxBytes: options.maxBytes ?? settings.maxUploadBytes,
            originalFilename: options.originalFilename,
            inspect: Option.getOrUndefined(checkDuration)
          })
          // Blob first, row second: a row never points at missing audio. If the
          // row's write fails we cannot know it did not commit (a lost
          // connection or an interruption during COMMIT), so removing the blob
          // here could orphan a row; the BlobSweeper removes it later, and only
          // if no row points to it.
          const nowMs = yield* Clock.currentTimeMillis
          const idempotency = options.idempotencyKey === undefined
            ? undefined
            : { key: options.idempotencyKey, notBefore: new Date(nowMs - Duration.toMillis(idempotencyWindow)) }
          // the upload's span (the server's request span, or the caller's): the stage spans join its trace
          const span = yield* Effect.option(Effect.currentSpan)
          const trace = Option.getOrUndefined(Option.map(span, (s) => ({ traceId: s.traceId, spanId: s.spanId })))
          const created = yield* store.createEntry({ userId, ...stored, idempotency, trace }).pipe(
            Effect.map(({ entry }) => ({ entryId: entry.id, replayed: false })),
            // a retry: the first upload's entry is the answer; this copy of the audio has no row (rolled back), so it goes
            Effect.catchTag("IdempotencyKeyUsed", (e) =>
              blobs.remove(stored.blobKey).pipe(
                Effect.catchAll((error) =>
                  Effect.logWarning(`audio of a repeated upload could not be removed; left to the orphan sweep`, error)
                ),
                Effect.as({ entryId: e.entryId as EntryId, replayed: true })
              )),
            Effect.onError(() =>
              Effect.logWarning(`entry row not written; its audio ${stored.blobKey} is left to the orphan sweep`)
            )
          )
          if (!created.replayed) yield* signal.notify("transcription")
          const details = yield* getEntry(userId, created.entryId).pipe(
            Effect.catchTag("NotFound", (e) => new StoreError({ message: `entry vanished: ${e.message}` }))
          )
          return { ...details, replayed: created.replayed }
        }).pipe(Effect.provideService(BlobStore, blobs)),

      getEntry,
      listEntries: store.listEntries,
      searchEntries: store.searchEntries,

      deleteEntry: (userId, entryId) =>
        Effect.gen(function*() {
          // what was delivered, read before the rows go: destinations that remove on delete need it
          const delivered = Option.isSome(destinations)
            ? (yield* store.listDeliveries(userId, { entryId, status: "success", limit: 100, offset: 0 })).items
            : []
          const entry = yield* store.deleteEntry(userId, entryId)
          yield* blobs.remove(entry.blobKey).pipe(
            Effect.catchAll((e) => Effect.logWarning("audio of a deleted entry could not be removed", e))
          )
          if (Option.isSome(destinations)) yield* destinations.value.removeEntry(userId, entryId, delivered)
        }),

      readAudio: (userId, entryId, options = {}) =>
        Effect.gen(function*() {
          const entry = yield* store.getEntry(userId, entryId)
          const stat = yield* blobs.stat(entry.blobKey)
          if (Option.isNone(stat)) {
            // data loss the operator must hear about; the user only learns the audio is gone
            yield* Effect.logWarning(`entry ${entry.id}: its audio (blob ${entry.blobKey}) is missing from the blob store`)
            return yield* new AudioMissing({ entryId: entry.id })
          }
          const { sizeBytes } = stat.value
          if (options.range === undefined) return { entry, sizeBytes, range: null, body: blobs.read(entry.blobKey) } satisfies AudioRead
          const range = resolveRange(options.range, sizeBytes)
          if (Option.isNone(range)) return yield* new RangeNotSatisfiable({ sizeBytes })
          return { entry, sizeBytes, range: range.value, body: blobs.read(entry.blobKey, range.value) } satisfies AudioRead
        }),

      listTranscriptions: store.listTranscriptions,
      retranscribe: (userId, entryId, options = {}) =>
        store.addTranscription(userId, entryId, { makePrimary: options.makePrimary ?? false }).pipe(
          Effect.tap(() => signal.notify("transcription"))
        ),
      setPrimaryTranscription: store.setPrimaryTranscription,
      listCleanups: store.listCleanups,
      reclean: (userId, entryId, options = {}) =>
        store.addCleanup(userId, entryId, {
          transcriptionId: options.transcriptionId,
          templateId: options.templateId,
          makePrimary: options.makePrimary ?? false
        }).pipe(Effect.tap(() => signal.notify("cleanup"))),
      setPrimaryCleanup: store.setPrimaryCleanup,
      createTemplate: store.createTemplate,
      listTemplates: store.listTemplates,
      getTemplate: store.getTemplate,
      updateTemplate: store.updateTemplate,
      deleteTemplate: store.deleteTemplate,

      deliver: (userId, entryId, destinationIds) =>
        store.queueDeliveries(userId, entryId, { destinationIds, implicit }).pipe(Effect.tap(() => signal.notify("delivery"))),
      listDeliveries: store.listDeliveries,
      retryDelivery: (userId, id) => store.retryDelivery(userId, id).pipe(Effect.tap(() => signal.notify("delivery"))),

      // the server-wide Notion's routes, kept: its deliveries, shown as syncs
      syncToNotion: (userId, entryId) =>
        settings.notionEnabled
          ? store.queueDeliveries(userId, entryId, { destinationIds: [serverNotionDestination], implicit }).pipe(
            Effect.tap(() => signal.notify("delivery")),
            Effect.map((ds) => notionSyncOf(ds[0]!))
          )
          : Effect.fail(new InvalidState({ message: "Notion is not configured (set NOTION_TOKEN and a database id)" })),
      listNotionSyncs: (userId, options) =>
        store.listDeliveries(userId, { ...options, destinationId: serverNotionDestination }).pipe(
          Effect.map((page) => ({ ...page, items: page.items.map(notionSyncOf) }))
        ),
      retryNotionSync: (userId, id) =>
        store.getDelivery(userId, id as unknown as DeliveryId).pipe(
          Effect.filterOrFail((d) => d.destinationId === serverNotionDestination, () => new NotFound({ resource: "notion sync", id })),
          Effect.zipRight(store.retryDelivery(userId, id as unknown as DeliveryId)),
          Effect.tap(() => signal.notify("delivery")),
          Effect.map(notionSyncOf)
        ),

      createUser: (name) =>
        Effect.gen(function*() {
          const user = yield* store.createUser(name)
          const apiKey = ApiKeys.generate()
          const key = yield* store.createApiKey({ userId: user.id, name: "default", keyHash: ApiKeys.hash(apiKey) }).pipe(
            Effect.catchTag("NotFound", (e) => new StoreError({ message: e.message }))
          )
          return { user, apiKey, key }
        }),
      createApiKey: (userId, name) =>
        Effect.gen(function*() {
          const apiKey = ApiKeys.generate()
          const key = yield* store.createApiKey({ userId, name, keyHash: ApiKeys.hash(apiKey) })
          return { apiKey, key }
        }),
      listApiKeys: store.listApiKeys,
      revokeApiKey: store.revokeApiKey,
      authenticate: (apiKey) =>
        store.findApiKeyByHash(ApiKeys.hash(apiKey)).pipe(Effect.map(Option.map(({ user }) => user)))
    }
    return service
  })

/**
 * The front door, on the store, blob store and work signal in context.
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  config: Partial<VoiceJournalConfig> = {}
): Layer.Layer<VoiceJournal, never, JournalStore | BlobStore | WorkSignal> => Layer.effect(VoiceJournal, make(config))
