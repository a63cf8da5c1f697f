/**
 * The storage port: everything voice-journal keeps, including the work
 * queue. Stage rows (`transcriptions`, `cleaned_entries`, `deliveries`)
 * *are* the queue: a worker claims a due row with a lease, heartbeats it,
 * and completes or fails it through the fenced methods below.
 *
 * Every user-facing read and write takes the acting `userId` and only sees
 * that user's rows; another user's row is reported as {@link NotFound}.
 *
 * Implementations: `@voice-journal/adapter-sqlite`, `@voice-journal/adapter-postgres`,
 * or your own — run `@voice-journal/core/testing`'s conformance suite on it.
 *
 * @since 0.1.0
 */
import type { Effect, Option } from "effect"
import { Context } from "effect"
import type {
  ApiKey,
  ApiKeyId,
  CleanedEntry,
  CleanupId,
  CleanupTemplate,
  EntryId,
  EntrySummary,
  Delivery,
  DeliveryId,
  DeliveryStatus,
  DestinationId,
  DestinationKind,
  ClaimedJob,
  Job,
  JournalEvent,
  Page,
  PageRequest,
  NewCleanupTemplate,
  Session,
  Stage,
  Segment,
  TemplateId,
  StoredDestination,
  Transcription,
  TranscriptionId,
  TranscriptionPiece,
  User,
  UserId,
  VoiceEntry
} from "./Domain.js"
import type * as EntrySearch from "./EntrySearch.js"
import type { IdempotencyKeyUsed, InvalidState, LeaseLost, NameTaken, NotFound, PrimaryConflict, StoreError } from "./Errors.js"

/**
 * What the ingest step knows about a stored recording.
 * @since 0.1.0
 */
export interface NewVoiceEntry {
  readonly userId: UserId
  readonly blobKey: string
  readonly originalFilename: string | null
  readonly mimeType: string
  readonly sizeBytes: number
  readonly sha256: string
  /** The span the upload ran in (its trace and span id), if any: the stage spans join its trace. */
  readonly trace?: { readonly traceId: string; readonly spanId: string } | undefined
  /**
   * The upload's `Idempotency-Key`: unique per user among keys used since
   * `notBefore` (older ones are replaced). A used key fails `createEntry`
   * with `IdempotencyKeyUsed` (the first entry's id) and writes nothing.
   */
  readonly idempotency?: { readonly key: string; readonly notBefore: Date } | undefined
}

/**
 * What a finished transcription stage writes.
 * @since 0.1.0
 */
export interface TranscriptionResult {
  readonly text: string
  readonly engine: string
  readonly language: string | null
  readonly durationSeconds: number | null
  /** Timestamped segments of the whole recording, where known. */
  readonly segments?: ReadonlyArray<Segment> | null | undefined
}

/**
 * One piece of a planned transcription run (see `AudioPieces.plan`).
 * @since 0.1.0
 */
export interface NewTranscriptionPiece {
  readonly index: number
  readonly start: number
  readonly end: number
  readonly overlap: number
}

/**
 * What a finished piece writes: its transcript, segments in seconds of the
 * whole recording.
 * @since 0.1.0
 */
export interface PieceResult {
  readonly text: string
  readonly segments: ReadonlyArray<Segment>
  readonly engine: string
  readonly language: string | null
}

/**
 * What a finished cleanup stage writes.
 * @since 0.1.0
 */
export interface CleanupResult {
  readonly title: string
  readonly text: string
  readonly model: string
  /** null when the model had nothing to summarise. */
  readonly summary: string | null
  readonly actionItems: ReadonlyArray<string>
  /** Stored normalised (`Domain.normalizeTags`), whatever is passed. */
  readonly tags: ReadonlyArray<string>
  /** The template's extra sections, by name. */
  readonly sections: Readonly<Record<string, string>>
}

/**
 * A destination to store (see `Destination`).
 * @since 0.2.0
 */
export interface NewDestination {
  readonly id: DestinationId
  readonly userId: UserId
  readonly kind: DestinationKind
  readonly name: string
  readonly config: Readonly<Record<string, unknown>>
  readonly sealedSecret: string | null
}

/**
 * Options for claiming work.
 * @since 0.1.0
 */
export interface ClaimOptions {
  /** Identifies the claiming worker (process + fiber); written to `lease_owner`. */
  readonly workerId: string
  /** How long the lease lasts unless heartbeated. */
  readonly leaseMillis: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface JournalStoreService {
  // --- users and API keys ---------------------------------------------------
  readonly createUser: (name: string) => Effect.Effect<User, StoreError>
  readonly createApiKey: (input: {
    readonly userId: UserId
    readonly name: string
    readonly keyHash: string
  }) => Effect.Effect<ApiKey, NotFound | StoreError>
  /** Finds the live (not revoked) key with this hash and its user. */
  readonly findApiKeyByHash: (
    keyHash: string
  ) => Effect.Effect<Option.Option<{ readonly key: ApiKey; readonly user: User }>, StoreError>
  readonly listApiKeys: (userId: UserId) => Effect.Effect<ReadonlyArray<ApiKey>, StoreError>
  readonly revokeApiKey: (userId: UserId, keyId: ApiKeyId) => Effect.Effect<void, NotFound | StoreError>
  /** The user with this id (NotFound if there is none): a watch folder checks its user at start. */
  readonly getUser: (userId: UserId) => Effect.Effect<User, NotFound | StoreError>

  // --- voice entries --------------------------------------------------------
  /**
   * Writes the entry and its first (pending, to-be-primary) transcription in
   * one transaction (and the idempotency key, if given: see {@link NewVoiceEntry}).
   */
  readonly createEntry: (
    input: NewVoiceEntry
  ) => Effect.Effect<{ readonly entry: VoiceEntry; readonly transcription: Transcription }, IdempotencyKeyUsed | StoreError>
  readonly getEntry: (userId: UserId, entryId: EntryId) => Effect.Effect<VoiceEntry, NotFound | StoreError>
  /**
   * Newest first, each with where its stages stand (see {@link EntrySummary}):
   * one query for the page, whatever its size — never one per entry.
   */
  readonly listEntries: (userId: UserId, page: PageRequest) => Effect.Effect<Page<EntrySummary>, StoreError>
  /**
   * Full-text search over the user's entries (see `EntrySearch`): words in
   * the primary transcript, the primary cleanup's title, text and tags; all
   * words must match, the last also as a prefix; ranked (title and tags above
   * cleaned text above transcript, then newest first); `tag` keeps only
   * entries with that tag. Neither `q` nor `tag`: the same as
   * {@link listEntries}. Another user's entries never match and are never
   * counted. Same items as the list, and a `total` of all matches.
   */
  readonly searchEntries: (
    userId: UserId,
    request: EntrySearch.SearchRequest
  ) => Effect.Effect<Page<EntrySummary>, EntrySearch.InvalidSearch | StoreError>
  /** Deletes the entry and all its stage rows; returns it so the caller can remove the audio. */
  readonly deleteEntry: (userId: UserId, entryId: EntryId) => Effect.Effect<VoiceEntry, NotFound | StoreError>
  /**
   * One of the user's entries whose audio has this sha256 (hex), if any —
   * how a watch folder knows a re-copied file is already in the journal.
   * Indexed on `(user_id, sha256)`.
   */
  readonly findEntryBySha256: (userId: UserId, sha256: string) => Effect.Effect<Option.Option<VoiceEntry>, StoreError>

  // --- transcriptions and cleanups -----------------------------------------
  /** Queues a new transcription run; `makePrimary` makes it primary when it completes. */
  readonly addTranscription: (
    userId: UserId,
    entryId: EntryId,
    options: { readonly makePrimary: boolean }
  ) => Effect.Effect<Transcription, NotFound | StoreError>
  /** Newest first. */
  readonly listTranscriptions: (
    userId: UserId,
    entryId: EntryId
  ) => Effect.Effect<ReadonlyArray<Transcription>, NotFound | StoreError>
  readonly getTranscription: (
    userId: UserId,
    id: TranscriptionId
  ) => Effect.Effect<Transcription, NotFound | StoreError>
  /**
   * Atomically moves the primary flag of entry `entryId` to this (completed)
   * transcription. A transcription of another entry is NotFound, and then
   * nothing changes: ownership is checked through the parent.
   */
  readonly setPrimaryTranscription: (
    userId: UserId,
    entryId: EntryId,
    id: TranscriptionId
  ) => Effect.Effect<Transcription, NotFound | InvalidState | PrimaryConflict | StoreError>
  /**
   * Queues a cleanup of `transcriptionId` (default: the primary
   * transcription) with `templateId` (default: the built-in journal
   * template; another user's template is NotFound).
   */
  readonly addCleanup: (
    userId: UserId,
    entryId: EntryId,
    options: {
      readonly transcriptionId?: TranscriptionId | undefined
      readonly templateId?: TemplateId | undefined
      readonly makePrimary: boolean
    }
  ) => Effect.Effect<CleanedEntry, NotFound | InvalidState | StoreError>
  /** Newest first. */
  readonly listCleanups: (
    userId: UserId,
    entryId: EntryId
  ) => Effect.Effect<ReadonlyArray<CleanedEntry>, NotFound | StoreError>
  readonly getCleanup: (userId: UserId, id: CleanupId) => Effect.Effect<CleanedEntry, NotFound | StoreError>
  /**
   * Atomically moves the primary flag of entry `entryId` to this (completed)
   * cleanup. A cleanup of another entry is NotFound, and then nothing changes.
   */
  readonly setPrimaryCleanup: (
    userId: UserId,
    entryId: EntryId,
    id: CleanupId
  ) => Effect.Effect<CleanedEntry, NotFound | InvalidState | PrimaryConflict | StoreError>

  // --- cleanup templates ----------------------------------------------------
  /** A new template; names are unique per user (NameTaken otherwise). */
  readonly createTemplate: (
    userId: UserId,
    input: NewCleanupTemplate
  ) => Effect.Effect<CleanupTemplate, NameTaken | StoreError>
  /** The user's templates, by name. */
  readonly listTemplates: (userId: UserId) => Effect.Effect<ReadonlyArray<CleanupTemplate>, StoreError>
  readonly getTemplate: (userId: UserId, id: TemplateId) => Effect.Effect<CleanupTemplate, NotFound | StoreError>
  /** Replaces name, instructions and sections; cleanups already written keep what they got. */
  readonly updateTemplate: (
    userId: UserId,
    id: TemplateId,
    input: NewCleanupTemplate
  ) => Effect.Effect<CleanupTemplate, NotFound | NameTaken | StoreError>
  /**
   * Deletes the template. Refused (InvalidState) while a cleanup with it is
   * queued or running, so no queued work loses its template; completed and
   * failed cleanups keep their output and their (now dangling) `templateId`.
   */
  readonly deleteTemplate: (userId: UserId, id: TemplateId) => Effect.Effect<void, NotFound | InvalidState | StoreError>


  // --- destinations and deliveries ----------------------------------------
  /** Stores a destination; `id` is chosen by the caller (its secret is sealed with the id as associated data). */
  readonly createDestination: (input: NewDestination) => Effect.Effect<StoredDestination, NotFound | StoreError>
  /** Oldest first. */
  readonly listDestinations: (userId: UserId) => Effect.Effect<ReadonlyArray<StoredDestination>, StoreError>
  readonly getDestination: (userId: UserId, id: DestinationId) => Effect.Effect<StoredDestination, NotFound | StoreError>
  /** Removes the destination and its delivery log. */
  readonly deleteDestination: (userId: UserId, id: DestinationId) => Effect.Effect<void, NotFound | StoreError>
  /** Turns a destination off (no new deliveries), saying why; a later call keeps the first reason. */
  readonly disableDestination: (userId: UserId, id: DestinationId, reason: string) => Effect.Effect<void, NotFound | StoreError>
  /** Whether any stored destination has a sealed secret (the server then needs its key at start-up). */
  readonly hasSealedSecrets: Effect.Effect<boolean, StoreError>
  /**
   * Queues a delivery of the entry's primary cleanup to each of
   * `destinationIds` (default: every enabled destination of the user, plus
   * `implicit`). An open delivery of that cleanup to that destination is
   * returned instead of a second one.
   */
  readonly queueDeliveries: (
    userId: UserId,
    entryId: EntryId,
    options: { readonly destinationIds?: ReadonlyArray<DestinationId> | undefined; readonly implicit: ReadonlyArray<DestinationId> }
  ) => Effect.Effect<ReadonlyArray<Delivery>, NotFound | InvalidState | StoreError>
  readonly getDelivery: (userId: UserId, id: DeliveryId) => Effect.Effect<Delivery, NotFound | StoreError>
  /** The delivery log: newest first, optionally one status, one destination, one entry. */
  readonly listDeliveries: (
    userId: UserId,
    options: PageRequest & {
      readonly status?: DeliveryStatus | undefined
      readonly destinationId?: DestinationId | undefined
      readonly entryId?: EntryId | undefined
    }
  ) => Effect.Effect<Page<Delivery>, StoreError>
  /** Puts a `failed` delivery back in the queue with a fresh attempt budget. */
  readonly retryDelivery: (userId: UserId, id: DeliveryId) => Effect.Effect<Delivery, NotFound | InvalidState | StoreError>

  // --- work claiming (the queue) -------------------------------------------
  /**
   * Atomically claims the next due row of `stage`: pending or retrying with
   * `next_attempt_at <= now`, or processing with an expired lease. Safe with
   * any number of claimers on any number of connections. Writes the
   * `processing` event and returns the job with its entry.
   */
  readonly claimNext: (stage: Stage, options: ClaimOptions) => Effect.Effect<Option.Option<ClaimedJob>, StoreError>
  /**
   * Claims up to `limit` due rows of `stage` at once (what {@link claimNext}
   * does for one), all leased to `workerId`: one round trip for a worker
   * pool's free slots.
   */
  readonly claimBatch: (
    stage: Stage,
    options: ClaimOptions & { readonly limit: number }
  ) => Effect.Effect<ReadonlyArray<ClaimedJob>, StoreError>
  /** Extends the lease; fails with LeaseLost if another worker owns the row now. */
  readonly heartbeat: (job: Job, leaseMillis: number) => Effect.Effect<Job, LeaseLost | StoreError>
  /**
   * Extends the leases of many jobs (of any stages) at once, a statement per
   * stage: what {@link heartbeat} does for one. Returns, in order, each job
   * with its new expiry, or none where another worker owns the row now.
   */
  readonly heartbeatBatch: (
    jobs: ReadonlyArray<Job>,
    leaseMillis: number
  ) => Effect.Effect<ReadonlyArray<Option.Option<Job>>, StoreError>
  /**
   * Writes the transcript; makes it primary if requested or if the entry has
   * none; and, if it is primary, queues the cleanup — one transaction.
   */
  readonly completeTranscription: (
    job: Job,
    result: TranscriptionResult
  ) => Effect.Effect<void, LeaseLost | StoreError>
  /**
   * {@link completeTranscription} for several runs in one transaction (a
   * worker pool's finished runs together). Returns, in order, whether each
   * was written: `false` is a lost lease (or a deleted entry), and nothing
   * of that run was written; the others are.
   */
  readonly completeTranscriptions: (
    items: ReadonlyArray<{ readonly job: Job; readonly result: TranscriptionResult }>
  ) => Effect.Effect<ReadonlyArray<boolean>, StoreError>
  /**
   * Writes the cleanup; makes it primary if requested or if the entry has
   * none; and, if it is primary, queues a delivery to each of the user's
   * enabled destinations and to each of `implicit` — one transaction.
   */
  readonly completeCleanup: (
    job: Job,
    result: CleanupResult,
    options: { readonly implicit: ReadonlyArray<DestinationId> }
  ) => Effect.Effect<void, LeaseLost | StoreError>
  /** {@link completeCleanup} for several runs in one transaction, as {@link completeTranscriptions}. */
  readonly completeCleanups: (
    items: ReadonlyArray<{ readonly job: Job; readonly result: CleanupResult }>,
    options: { readonly implicit: ReadonlyArray<DestinationId> }
  ) => Effect.Effect<ReadonlyArray<boolean>, StoreError>
  /**
   * The pieces of the claimed transcription run (a long recording): stores
   * `pieces` as its plan if it has none yet, and returns its pieces in
   * order — the plan an earlier attempt stored wins, with the transcripts
   * of the pieces already done. Fenced by the lease.
   */
  readonly planPieces: (
    job: Job,
    pieces: ReadonlyArray<NewTranscriptionPiece>
  ) => Effect.Effect<ReadonlyArray<TranscriptionPiece>, LeaseLost | StoreError>
  /** Stores one piece's transcript as soon as it is done. Fenced by the lease. */
  readonly completePiece: (job: Job, index: number, result: PieceResult) => Effect.Effect<void, LeaseLost | StoreError>
  /** Remembers the delivery's external reference as soon as it is known, before the delivery is done. */
  readonly recordExternalRef: (job: Job, ref: string) => Effect.Effect<void, LeaseLost | StoreError>
  readonly completeDelivery: (job: Job, ref: string) => Effect.Effect<void, LeaseLost | StoreError>
  /** Back to `retrying`, due again at `nextAttemptAt`. */
  readonly failTemporarily: (
    job: Job,
    failure: { readonly error: string; readonly nextAttemptAt: Date }
  ) => Effect.Effect<void, LeaseLost | StoreError>
  /** `failed` for good, with the reason. */
  readonly failPermanently: (job: Job, failure: { readonly error: string }) => Effect.Effect<void, LeaseLost | StoreError>
  /**
   * Gives the row back untouched (interruption, shutdown): claimable at once,
   * and this claim does not count as an attempt.
   */
  readonly releaseLease: (job: Job) => Effect.Effect<void, StoreError>

  // --- operations -----------------------------------------------------------
  /** Cheap round trip to the database, for readiness checks. */
  readonly ping: Effect.Effect<void, StoreError>
  /**
   * Which of `keys` a voice entry (of any user) points to — what the audio
   * sweep (`BlobSweeper`) must keep. Any number of keys; indexed lookups.
   */
  readonly existingBlobKeys: (keys: ReadonlyArray<string>) => Effect.Effect<ReadonlySet<string>, StoreError>

  // --- browser sessions and events (the web app) ----------------------------
  /** Stores a session by the hash of its id (the id itself is never stored). */
  readonly createSession: (input: {
    readonly idHash: string
    readonly userId: UserId
    readonly apiKeyId: ApiKeyId
    readonly expiresAt: Date
  }) => Effect.Effect<void, StoreError>
  /** The live session with this id hash: not expired, and its API key not revoked. */
  readonly findSession: (idHash: string) => Effect.Effect<Option.Option<Session>, StoreError>
  /** Ends a session (signing out); no such session is not an error. */
  readonly deleteSession: (idHash: string) => Effect.Effect<void, StoreError>
  /**
   * The user's events after `afterId`, oldest first. Every stage status
   * change and every entry creation and deletion writes one, in the
   * transaction of the change, with a growing id (see `JournalEvents`).
   */
  readonly readEvents: (
    userId: UserId,
    options: { readonly afterId: number; readonly limit: number }
  ) => Effect.Effect<ReadonlyArray<JournalEvent>, StoreError>
  /** The id of the user's latest event (0 if none): where a live-only stream starts. */
  readonly lastEventId: (userId: UserId) => Effect.Effect<number, StoreError>
  /** Removes expired sessions, and idempotency keys and events older than the given times. */
  readonly pruneExpired: (options: {
    readonly idempotencyKeysBefore: Date
    readonly eventsBefore: Date
  }) => Effect.Effect<void, StoreError>
  /**
   * How many rows of each stage are waiting (`pending`, `retrying`) or
   * running (`processing`), of every user — the queue depth the server's
   * `/metrics` reports. Served by the claim indexes; finished rows are not
   * counted (that would scan the tables).
   */
  readonly queueDepth: Effect.Effect<ReadonlyArray<QueueDepth>, StoreError>
}

/**
 * One line of {@link JournalStoreService.queueDepth}.
 * @since 0.1.0
 */
export interface QueueDepth {
  readonly stage: Stage
  readonly status: "pending" | "retrying" | "processing"
  readonly rows: number
}

/**
 * The storage port.
 * @since 0.1.0
 * @category tags
 */
export class JournalStore extends Context.Tag("@voice-journal/core/JournalStore")<JournalStore, JournalStoreService>() {}

/**
 * The table behind each stage, and the status a finished row gets.
 * @since 0.1.0
 */
export const stageTables: Record<Stage, { readonly table: string; readonly done: "completed" | "success" }> = {
  transcription: { table: "transcriptions", done: "completed" },
  cleanup: { table: "cleaned_entries", done: "completed" },
  delivery: { table: "deliveries", done: "success" }
}
