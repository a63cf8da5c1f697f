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
export const TemplateId = Schema.String.pipe(Schema.brand("TemplateId"))
/** @since 0.1.0 */
export type TemplateId = typeof TemplateId.Type
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
  /** The trace of the upload (W3C trace id, hex), which the stage spans join; null before tracing was recorded. */
  traceId: Schema.NullOr(Schema.String),
  /** The upload's span (W3C span id, hex): the parent of the stage spans. */
  spanId: Schema.NullOr(Schema.String),
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
 * A stretch of a transcript: seconds from the start of the recording, and
 * what was said.
 * @since 0.1.0
 */
export const Segment = Schema.Struct({ start: Schema.Number, end: Schema.Number, text: Schema.String })
/** @since 0.1.0 */
export type Segment = typeof Segment.Type

/** Segments as stored: a JSON array in a TEXT column (portable). */
const StoredSegments = Schema.NullOr(Schema.parseJson(Schema.Array(Segment)))

/**
 * One run of speech-to-text over a voice entry. Several per entry; exactly
 * one is primary once any has completed. A long recording is transcribed in
 * pieces ({@link TranscriptionPiece}): `piecesTotal` is known once they are
 * planned (1 for a recording sent whole), `piecesDone` counts those stored.
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
  /** Timestamped segments of the whole recording, once completed (where known). */
  segments: StoredSegments,
  piecesTotal: Schema.NullOr(Schema.Number),
  piecesDone: Schema.Number,
  ...StageRunFields
}) {}

/**
 * One piece of a long recording's transcription run: `[startSeconds,
 * endSeconds)` of the recording, planned once per run, its transcript
 * (`text`, `segments` in seconds of the whole recording) stored as soon as
 * it is done, so a resumed run sends only the unfinished pieces again.
 * `overlapSeconds`: how much of the piece before it repeats (a hard cut).
 * @since 0.1.0
 */
export class TranscriptionPiece extends Schema.Class<TranscriptionPiece>("TranscriptionPiece")({
  transcriptionId: TranscriptionId,
  index: Schema.Number,
  startSeconds: Schema.Number,
  endSeconds: Schema.Number,
  overlapSeconds: Schema.Number,
  text: Schema.NullOr(Schema.String),
  segments: StoredSegments,
  engine: Schema.NullOr(Schema.String),
  language: Schema.NullOr(Schema.String),
  completedAt: Schema.NullOr(Schema.Date)
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
  /** A few sentences on what the entry is about; null until completed (and for cleanups made before 0.2). */
  summary: Schema.NullOr(Schema.String),
  /** Things the speaker said they will or must do, one per item. */
  actionItems: Schema.Array(Schema.String),
  /** Normalised by {@link normalizeTags}: trimmed, lower-case, no duplicates. */
  tags: Schema.Array(Schema.String),
  /** The extra sections the template declares, by section name. */
  sections: Schema.Record({ key: Schema.String, value: Schema.String }),
  /** The template it is (to be) written with; null = the built-in journal template. */
  templateId: Schema.NullOr(TemplateId),
  ...StageRunFields
}) {}

/**
 * Tags as stored and searched: NFC, trimmed, lower-case, no empty ones, each
 * once (first occurrence wins the order).
 * @since 0.2.0
 */
export const normalizeTags = (tags: ReadonlyArray<string>): ReadonlyArray<string> => [
  ...new Set(tags.map((t) => t.normalize("NFC").trim().replace(/\s+/g, " ").toLowerCase()).filter((t) => t !== ""))
]

/**
 * The fields every structured cleanup has; a template's own sections may
 * not reuse these names.
 * @since 0.2.0
 */
export const builtInSections = ["title", "text", "summary", "actionItems", "tags"] as const

/**
 * A section name: the key in `sections` and in the JSON Schema the model
 * answers to, so an identifier (letters, digits, `_`; 1–40 characters), and
 * none of {@link builtInSections}.
 * @since 0.2.0
 */
export const SectionName = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z][A-Za-z0-9_]{0,39}$/, {
    message: () => "a section name is 1-40 letters, digits or _, starting with a letter"
  }),
  Schema.filter((name) =>
    !builtInSections.some((b) => b.toLowerCase() === name.toLowerCase()) ||
    `"${name}" is built in (${builtInSections.join(", ")}); pick another section name`
  )
)

/**
 * One extra section a template asks the model for: its name and what the
 * model should put in it.
 * @since 0.2.0
 */
export const TemplateSection = Schema.Struct({
  name: SectionName,
  description: Schema.Trim.pipe(Schema.minLength(1), Schema.maxLength(500)).annotations({
    message: () => ({ message: "must be a description of 1-500 characters", override: true })
  })
})
/** @since 0.2.0 */
export type TemplateSection = typeof TemplateSection.Type

/** At most 10 extra sections, each name once. */
const TemplateSections = Schema.Array(TemplateSection).pipe(
  Schema.maxItems(10, { message: () => "must be at most 10 sections" }),
  Schema.filter((sections) => {
    const names = sections.map((s) => s.name.toLowerCase())
    const twice = names.find((n, i) => names.indexOf(n) !== i)
    return twice === undefined || `section "${twice}" is declared twice`
  })
)

/**
 * What a person writes to make a template: a name (unique per user), the
 * instructions the model gets, and optional extra sections.
 * @since 0.2.0
 */
export const NewCleanupTemplate = Schema.Struct({
  // the messages never echo the value: they are answered to clients
  name: Schema.Trim.pipe(Schema.minLength(1), Schema.maxLength(100), Schema.pattern(/^[^\n\r]*$/)).annotations({
    message: () => ({ message: "must be a name of 1-100 characters on one line", override: true })
  }),
  instructions: Schema.Trim.pipe(Schema.minLength(1), Schema.maxLength(4000)).annotations({
    message: () => ({ message: "must be instructions of 1-4000 characters", override: true })
  }),
  sections: Schema.optionalWith(TemplateSections, { default: () => [] })
})
/** @since 0.2.0 */
export type NewCleanupTemplate = typeof NewCleanupTemplate.Type

/**
 * A user's cleanup template. A cleanup written with it asks the model for
 * the built-in fields plus `sections`, following `instructions`.
 * @since 0.2.0
 */
export class CleanupTemplate extends Schema.Class<CleanupTemplate>("CleanupTemplate")({
  id: TemplateId,
  userId: UserId,
  name: Schema.String,
  instructions: Schema.String,
  sections: Schema.Array(TemplateSection),
  createdAt: Schema.Date,
  updatedAt: Schema.Date
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

/**
 * A job as a claim hands it over: with its entry, read in the same step.
 * @since 0.1.0
 */
export interface ClaimedJob extends Job {
  readonly entry: VoiceEntry
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
