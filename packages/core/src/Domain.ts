/**
 * The voice-journal domain as Effect Schemas. Table names follow the service
 * voice-journal grew from: `voice_entries`, `transcriptions`,
 * `cleaned_entries`, `deliveries` (which replaced `notion_syncs`), `destinations`,
 * plus `users` and `api_keys`.
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
/** @since 0.2.0 */
export const DeliveryId = Schema.String.pipe(Schema.brand("DeliveryId"))
/** @since 0.2.0 */
export type DeliveryId = typeof DeliveryId.Type
/**
 * A destination's id: a user's configured destination (a UUID), or
 * {@link serverNotionDestination}.
 * @since 0.2.0
 */
export const DestinationId = Schema.String.pipe(Schema.brand("DestinationId"))
/** @since 0.2.0 */
export type DestinationId = typeof DestinationId.Type

/**
 * The implicit destination every user has when the server is configured
 * with `NOTION_TOKEN` (today's server-wide Notion); its deliveries are what
 * the `/notion/syncs` routes show.
 * @since 0.2.0
 */
export const serverNotionDestination = "server-notion" as DestinationId

/**
 * The kinds of destination a user can configure.
 * @since 0.2.0
 */
export const DestinationKind = Schema.Literal("notion", "markdown", "webhook")
/** @since 0.2.0 */
export type DestinationKind = typeof DestinationKind.Type

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
 * The three background stages an entry goes through; `delivery` is one
 * row per cleaned entry × destination (Notion, a Markdown folder, a webhook).
 * @since 0.1.0
 */
export const Stage = Schema.Literal("transcription", "cleanup", "delivery")
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
 * Status of a delivery (Notion's sync names: `success` when delivered).
 * @since 0.2.0
 */
export const DeliveryStatus = NotionSyncStatus
/** @since 0.2.0 */
export type DeliveryStatus = NotionSyncStatus

/**
 * A destination a user configured. `config` holds the kind's settings
 * (never a secret); `sealedSecret` is the secret encrypted with the
 * server key (`SecretBox`) — it never leaves the server. `disabledReason`
 * is set when the destination turned itself off (a webhook answering 410).
 * @since 0.2.0
 */
export class StoredDestination extends Schema.Class<StoredDestination>("StoredDestination")({
  id: DestinationId,
  userId: UserId,
  kind: DestinationKind,
  name: Schema.String,
  config: Schema.parseJson(Schema.Record({ key: Schema.String, value: Schema.Unknown })),
  sealedSecret: Schema.NullOr(Schema.String),
  disabledAt: Schema.NullOr(Schema.Date),
  disabledReason: Schema.NullOr(Schema.String),
  createdAt: Schema.Date,
  updatedAt: Schema.Date
}) {}

/**
 * One delivery of a cleaned entry to one destination: its own work-queue
 * row. `externalRef` (the Notion page id, the file name, the webhook
 * message id) is recorded as soon as it is known, before the delivery
 * completes, so a retry after a crash finds what the first try made; a new
 * delivery of the same entry to the same destination starts from the last
 * one's reference (a re-sync rewrites the same file or page).
 * @since 0.2.0
 */
export class Delivery extends Schema.Class<Delivery>("Delivery")({
  id: DeliveryId,
  entryId: EntryId,
  cleanedEntryId: CleanupId,
  userId: UserId,
  destinationId: DestinationId,
  status: DeliveryStatus,
  externalRef: Schema.NullOr(Schema.String),
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
