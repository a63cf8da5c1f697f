/**
 * The voice-journal domain as Effect Schemas. Table names follow the service
 * voice-journal grew from: `voice_entries`, `transcriptions`,
 * `cleaned_entries`, `notion_syncs`, plus `users` and `api_keys`.
 *
 * Timestamps are ISO-8601 strings in the database on both adapters (SQLite
 * cannot bind `Date`, and text compares the same everywhere); here they are
 * `Date`s.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"

/** @since 0.1.0 */
export const UserId = Schema.String.pipe(Schema.brand("UserId"))
/** @since 0.1.0 */
export type UserId = typeof UserId.Type
/** @since 0.1.0 */
export const ApiKeyId = Schema.String.pipe(Schema.brand("ApiKeyId"))
/** @since 0.1.0 */
export type ApiKeyId = typeof ApiKeyId.Type
/** @since 0.1.0 */
export const EntryId = Schema.String.pipe(Schema.brand("EntryId"))
/** @since 0.1.0 */
export type EntryId = typeof EntryId.Type
/** @since 0.1.0 */
export const TranscriptionId = Schema.String.pipe(Schema.brand("TranscriptionId"))
/** @since 0.1.0 */
export type TranscriptionId = typeof TranscriptionId.Type
/** @since 0.1.0 */
export const CleanupId = Schema.String.pipe(Schema.brand("CleanupId"))
/** @since 0.1.0 */
export type CleanupId = typeof CleanupId.Type
/** @since 0.1.0 */
export const NotionSyncId = Schema.String.pipe(Schema.brand("NotionSyncId"))
/** @since 0.1.0 */
export type NotionSyncId = typeof NotionSyncId.Type

/**
 * 0/1 in the database (portable: SQLite has no boolean and cannot bind one).
 * @since 0.1.0
 */
export const Flag = Schema.transform(Schema.Number, Schema.Boolean, {
  strict: true,
  decode: (n) => n !== 0,
  encode: (b) => (b ? 1 : 0)
})

/**
 * The three background stages an entry goes through.
 * @since 0.1.0
 */
export const Stage = Schema.Literal("transcription", "cleanup", "notion")
/** @since 0.1.0 */
export type Stage = typeof Stage.Type

/**
 * Status of a transcription or cleanup run.
 * @since 0.1.0
 */
export const StageStatus = Schema.Literal("pending", "processing", "completed", "failed", "retrying")
/** @since 0.1.0 */
export type StageStatus = typeof StageStatus.Type

/**
 * Status of a Notion sync (the original service's names).
 * @since 0.1.0
 */
export const NotionSyncStatus = Schema.Literal("pending", "processing", "success", "failed", "retrying")
/** @since 0.1.0 */
export type NotionSyncStatus = typeof NotionSyncStatus.Type

/**
 * A person (or device owner) using voice-journal.
 * @since 0.1.0
 */
export class User extends Schema.Class<User>("User")({
  id: UserId,
  name: Schema.String,
  createdAt: Schema.Date
}) {}

/**
 * An API key. Only the SHA-256 of the key is stored; the key itself is shown
 * once, when it is created.
 * @since 0.1.0
 */
export class ApiKey extends Schema.Class<ApiKey>("ApiKey")({
  id: ApiKeyId,
  userId: UserId,
  name: Schema.String,
  keyHash: Schema.String,
  createdAt: Schema.Date,
  revokedAt: Schema.NullOr(Schema.Date)
}) {}

/**
 * One uploaded recording. `blobKey` is a generated name in the BlobStore;
 * `mimeType` comes from content sniffing, never from the client.
 * @since 0.1.0
 */
export class VoiceEntry extends Schema.Class<VoiceEntry>("VoiceEntry")({
  id: EntryId,
  userId: UserId,
  blobKey: Schema.String,
  originalFilename: Schema.NullOr(Schema.String),
  mimeType: Schema.String,
  sizeBytes: Schema.Number,
  sha256: Schema.String,
  createdAt: Schema.Date,
  updatedAt: Schema.Date
}) {}

/**
 * A voice entry as a list shows it: the entry and where its stages stand
 * (the primary — or else newest — transcription and cleanup, the newest
 * Notion sync; `null` where there is none yet), read with the page in one
 * query.
 * @since 0.1.0
 */
export class EntrySummary extends Schema.Class<EntrySummary>("EntrySummary")({
  ...VoiceEntry.fields,
  transcriptionStatus: Schema.NullOr(StageStatus),
  /** Seconds of audio, once transcribed. */
  durationSeconds: Schema.NullOr(Schema.Number),
  cleanupStatus: Schema.NullOr(StageStatus),
  /** The cleanup's title, once there is one. */
  title: Schema.NullOr(Schema.String),
  notionSyncStatus: Schema.NullOr(NotionSyncStatus)
}) {}

/**
 * Fields every stage row carries: it is its own work-queue item.
 * @since 0.1.0
 */
export const StageRunFields = {
  attempts: Schema.Number,
  nextAttemptAt: Schema.Date,
  leaseOwner: Schema.NullOr(Schema.String),
  leaseExpiresAt: Schema.NullOr(Schema.Date),
  /** When the latest attempt was claimed (time in queue = startedAt - createdAt). */
  startedAt: Schema.NullOr(Schema.Date),
  lastError: Schema.NullOr(Schema.String),
  createdAt: Schema.Date,
  updatedAt: Schema.Date
}

/**
 * One run of speech-to-text over a voice entry. Several per entry; exactly
 * one is primary once any has completed.
 * @since 0.1.0
 */
export class Transcription extends Schema.Class<Transcription>("Transcription")({
  id: TranscriptionId,
  entryId: EntryId,
  userId: UserId,
  status: StageStatus,
  isPrimary: Flag,
  makePrimary: Flag,
  engine: Schema.NullOr(Schema.String),
  text: Schema.NullOr(Schema.String),
  language: Schema.NullOr(Schema.String),
  durationSeconds: Schema.NullOr(Schema.Number),
  ...StageRunFields
}) {}

/**
 * One LLM cleanup of a transcription. Exactly one primary per voice entry
 * once any has completed.
 * @since 0.1.0
 */
export class CleanedEntry extends Schema.Class<CleanedEntry>("CleanedEntry")({
  id: CleanupId,
  entryId: EntryId,
  transcriptionId: TranscriptionId,
  userId: UserId,
  status: StageStatus,
  isPrimary: Flag,
  makePrimary: Flag,
  model: Schema.NullOr(Schema.String),
  title: Schema.NullOr(Schema.String),
  text: Schema.NullOr(Schema.String),
  ...StageRunFields
}) {}

/**
 * One push of a cleaned entry to Notion. `notionPageId` is recorded as soon
 * as the page exists, so a retry finds it instead of creating a second page.
 * @since 0.1.0
 */
export class NotionSync extends Schema.Class<NotionSync>("NotionSync")({
  id: NotionSyncId,
  entryId: EntryId,
  cleanedEntryId: CleanupId,
  userId: UserId,
  status: NotionSyncStatus,
  notionPageId: Schema.NullOr(Schema.String),
  ...StageRunFields
}) {}

/**
 * Paging parameters: `limit` 1–100 (default 20), `offset` ≥ 0.
 * @since 0.1.0
 */
export const PageRequest = Schema.Struct({
  limit: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, 100)), { default: () => 20 }),
  offset: Schema.optionalWith(Schema.Int.pipe(Schema.nonNegative()), { default: () => 0 })
})
/** @since 0.1.0 */
export type PageRequest = typeof PageRequest.Type

/**
 * One page of a list, newest first, with the total number of rows.
 * @since 0.1.0
 */
export interface Page<A> {
  readonly items: ReadonlyArray<A>
  readonly total: number
  readonly limit: number
  readonly offset: number
}

/**
 * A claimed unit of work: one stage row, leased to `leaseOwner` until
 * `leaseExpiresAt`. `attempts` counts this claim.
 * @since 0.1.0
 */
export interface Job {
  readonly stage: Stage
  readonly id: string
  readonly entryId: EntryId
  readonly userId: UserId
  readonly attempts: number
  readonly leaseOwner: string
  readonly leaseExpiresAt: Date
}

/**
 * A browser session: made from an API key (`POST /session`), stored only as
 * the SHA-256 of its random id, ended by its expiry, by signing out, or by
 * revoking the key it came from.
 * @since 0.1.0
 */
export interface Session {
  readonly user: User
  /** The key the session was made from: its rate-limit budget, and what ends it when revoked. */
  readonly apiKeyId: ApiKeyId
  readonly expiresAt: Date
}

/**
 * What a {@link JournalEvent} is about: a stage row's new status, or an
 * entry that was created or deleted.
 * @since 0.1.0
 */
export const JournalEventKind = Schema.Literal("stage", "entry")
/** @since 0.1.0 */
export type JournalEventKind = typeof JournalEventKind.Type

/**
 * One change a user can watch (`GET /events`), written in the same
 * transaction as the change itself. `id` grows with every event (durable,
 * so a client resumes after the last one it saw). For `kind: "stage"`,
 * `stage` and `stageId` name the row and `status` is its new status; for
 * `kind: "entry"`, `status` is `created` or `deleted`.
 * @since 0.1.0
 */
export class JournalEvent extends Schema.Class<JournalEvent>("JournalEvent")({
  id: Schema.Number,
  userId: UserId,
  entryId: EntryId,
  kind: JournalEventKind,
  stage: Schema.NullOr(Stage),
  stageId: Schema.NullOr(Schema.String),
  status: Schema.String,
  at: Schema.Date
}) {}
