/**
 * The `JournalStore` for any `@effect/sql` database. All SQL that is the same
 * on every dialect lives here; an adapter supplies a {@link Dialect}: the one
 * query where dialects really differ (claiming a row under concurrency) and
 * how its driver reports a unique-index violation.
 *
 * Concurrency rules kept by every write:
 * - stage rows are changed by a worker only while it holds the lease
 *   (`WHERE lease_owner = ? AND status = 'processing'`); a lost lease is
 *   reported as `LeaseLost` and nothing is written;
 * - primary switches first touch the parent `voice_entries` row, which
 *   serialises them per entry on PostgreSQL (row lock) and SQLite (one writer),
 *   and the partial unique indexes reject anything that slips through.
 *
 * @since 0.1.0
 */
import type { SqlError } from "@effect/sql"
import { SqlClient } from "@effect/sql"
import type { Statement } from "@effect/sql"
import { Array as Arr, Clock, Effect, Option, Schema } from "effect"
import {
  ApiKey,
  type ApiKeyId,
  CleanedEntry,
  type CleanupId,
  CleanupTemplate,
  type EntryId,
  EntrySummary,
  Delivery,
  type DeliveryId,
  type DestinationId,
  type ClaimedJob,
  type Job,
  JournalEvent,
  normalizeTags,
  type Page,
  type Session,
  type Stage,
  type TemplateId,
  TemplateSection,
  serverNotionDestination,
  StoredDestination,
  Transcription,
  type TranscriptionId,
  TranscriptionPiece,
  User,
  type UserId,
  VoiceEntry
} from "./Domain.js"
import * as EntrySearch from "./EntrySearch.js"
import { IdempotencyKeyUsed, InvalidState, LeaseLost, NameTaken, NotFound, PrimaryConflict, StoreError } from "./Errors.js"
import { Signal } from "./JournalEvents.js"
import type { CleanupResult, JournalStoreService, QueueDepth, TranscriptionResult } from "./JournalStore.js"
import { stageTables } from "./JournalStore.js"

/**
 * A row as returned by {@link Dialect.claim}.
 * @since 0.1.0
 */
export interface ClaimedRow {
  readonly id: string
  readonly entryId: string
  readonly userId: string
  readonly attempts: number | string
  readonly leaseExpiresAt: string
}

/**
 * What differs between SQL databases.
 * @since 0.1.0
 */
export interface Dialect {
  /**
   * Atomically claims at most `params.limit` due rows of `table` for
   * `owner`: set `status = 'processing'`, the lease, `attempts + 1`, and
   * return the rows' {@link claimedColumns}. Expired leases
   * ({@link expiredLeaseCondition}, oldest expiry first) before due rows
   * ({@link dueRunCondition}, `ORDER BY next_attempt_at, id`): two probes
   * that each read the first entries of a partial index. Set with
   * {@link claimAssignments}.
   */
  readonly claim: (
    sql: SqlClient.SqlClient,
    table: string,
    params: ClaimParams
  ) => Effect.Effect<ReadonlyArray<ClaimedRow>, SqlError.SqlError>
  /** True if `error` is a unique-index violation. */
  readonly isUniqueViolation: (error: SqlError.SqlError) => boolean
  /** Full-text search over `entry_search` (see {@link SearchDialect}). */
  readonly search: SearchDialect
  /**
   * Optional: the whole claim in one statement — {@link claim}'s rows
   * plus their `processing` journal events (written as {@link claimEvent}
   * says) and their entries' {@link claimedEntryColumns}. Without it the
   * store runs `claim`, the event insert and the entry read in one transaction.
   */
  readonly claimWithEvent?: (
    sql: SqlClient.SqlClient,
    table: string,
    params: ClaimParams & { readonly stage: Stage }
  ) => Effect.Effect<ReadonlyArray<ClaimedRow & Record<string, unknown>>, SqlError.SqlError>
  /**
   * Optional. Builds the hint sender the store calls once a change that
   * wrote journal events of `userId` has committed (PostgreSQL: NOTIFY,
   * which other nodes' event streams LISTEN for). Inside a caller's own
   * transaction it is called before that commits. Without it other
   * processes find new events by polling.
   */
  readonly makeEventHints?: (sql: SqlClient.SqlClient) => Effect.Effect<(userId: string) => Effect.Effect<void, SqlError.SqlError>>
}

/**
 * How a dialect finds and ranks search documents (`entry_search`, migration
 * 0009, one row per entry; see `EntrySearch`). The shared SQL scopes the
 * rows to the owner again, pages them, counts them and reads the summaries.
 * @since 0.1.0
 */
export interface SearchDialect {
  /**
   * For `query`: `from`, a FROM list that includes `entry_search s`;
   * `where`, the condition on it that holds exactly for the documents with
   * all of `query.keys` in `match_keys` and all `query.terms` in the text
   * columns, answered from the dialect's full-text index; `rank`, a number
   * per row, lower is better (title and tags above cleaned text above
   * transcript).
   */
  readonly matches: (sql: SqlClient.SqlClient, query: EntrySearch.Query) => {
    readonly from: Statement.Fragment
    readonly where: Statement.Fragment
    readonly rank: Statement.Fragment
  }
}

/**
 * The two queries of a search: one page of matching entry ids (`entry_id`,
 * `match_rank`), best first, and the count of all matches — both scoped to
 * the query's user, both answered from the dialect's full-text index.
 * @since 0.1.0
 */
export const searchMatches = (sql: SqlClient.SqlClient, search: SearchDialect, query: EntrySearch.Query) => {
  const { from, rank, where } = search.matches(sql, query)
  // the index already scopes to the owner's key; the column check makes it a guarantee
  const scoped = sql`${where} AND s.user_id = ${query.userId}`
  return {
    page: (paging: { readonly limit: number; readonly offset: number }) =>
      sql<{ entry_id: string; match_rank: number }>`SELECT s.entry_id, ${rank} AS match_rank FROM ${from} WHERE ${scoped}
        ORDER BY match_rank, s.created_at DESC, s.entry_id DESC LIMIT ${paging.limit} OFFSET ${paging.offset}`,
    count: sql<{ total: number | string }>`SELECT CAST(count(*) AS INTEGER) AS total FROM ${from} WHERE ${scoped}`
  }
}

/**
 * The rows that make up the search documents of these entries.
 */
const searchSources = (sql: SqlClient.SqlClient, entryIds: ReadonlyArray<string>) =>
  sql<{
    entryId: string
    userId: string
    createdAt: string
    transcript: string | null
    title: string | null
    cleaned: string | null
    tags: string | null
  }>`SELECT e.id AS "entryId", e.user_id AS "userId", e.created_at AS "createdAt", t.text AS "transcript",
      c.title AS "title", c.text AS "cleaned", c.tags AS "tags"
    FROM voice_entries e
    LEFT JOIN transcriptions t ON t.entry_id = e.id AND t.is_primary = 1
    LEFT JOIN cleaned_entries c ON c.entry_id = e.id AND c.is_primary = 1
    WHERE ${sql.in("e.id", entryIds)}`

/**
 * Rewrites the search documents of these entries (at most a few hundred per
 * call) from their primary transcription and cleanup. Call it in the
 * transaction that changed them, so the index never lags a commit.
 * @since 0.1.0
 */
export const refreshSearchDocuments = (
  sql: SqlClient.SqlClient,
  entryIds: ReadonlyArray<string>
): Effect.Effect<void, SqlError.SqlError> =>
  entryIds.length === 0 ? Effect.void : searchSources(sql, entryIds).pipe(
    Effect.flatMap((rows) => {
      if (rows.length === 0) return Effect.void
      const documents = rows.map((row) => {
        // written by completeCleanup as a JSON array: anything else is a bug, not input
        const doc = EntrySearch.document({ ...row, tags: decodeTags(row.tags) })
        return {
          entry_id: row.entryId,
          user_id: row.userId,
          created_at: row.createdAt,
          match_keys: doc.matchKeys,
          title: doc.title,
          tags: doc.tags,
          cleaned: doc.cleaned,
          transcript: doc.transcript
        }
      })
      return sql`INSERT INTO entry_search ${sql.insert(documents)}
        ON CONFLICT (entry_id) DO UPDATE SET match_keys = excluded.match_keys, title = excluded.title,
          tags = excluded.tags, cleaned = excluded.cleaned, transcript = excluded.transcript`
    }),
    Effect.asVoid
  )

/**
 * Parameters of one claim.
 * @since 0.1.0
 */
export interface ClaimParams {
  readonly owner: string
  readonly now: string
  readonly leaseExpiresAt: string
  /** At most this many rows. */
  readonly limit: number
}

/**
 * The rows a claim may take: due pending/retrying rows and rows whose lease
 * expired (their worker died).
 * @since 0.1.0
 */
export const dueCondition = (sql: SqlClient.SqlClient, now: string): Statement.Fragment =>
  sql`((status IN ('pending', 'retrying') AND next_attempt_at <= ${now}) OR (status = 'processing' AND lease_expires_at <= ${now}))`

/**
 * The first half of {@link dueCondition}: due pending/retrying rows. Written
 * exactly as the predicate of the `<table>_claim_due_idx` partial index
 * (migration 0004), so `ORDER BY next_attempt_at, id LIMIT 1` reads the
 * first index entry instead of sorting the backlog.
 * @since 0.1.0
 */
export const dueRunCondition = (sql: SqlClient.SqlClient, now: string): Statement.Fragment =>
  sql`status IN ('pending', 'retrying') AND next_attempt_at <= ${now}`

/**
 * The second half of {@link dueCondition}: rows whose lease expired (their
 * worker died), served by the `<table>_claim_lease_idx` partial index (only
 * running rows: small). Claims probe these first, so a constant backlog of
 * due rows never starves a rescue.
 * @since 0.1.0
 */
export const expiredLeaseCondition = (sql: SqlClient.SqlClient, now: string): Statement.Fragment =>
  sql`status = 'processing' AND lease_expires_at <= ${now}`

/**
 * The SET list of a claim.
 * @since 0.1.0
 */
export const claimAssignments = (sql: SqlClient.SqlClient, p: ClaimParams): Statement.Fragment =>
  sql`status = 'processing', lease_owner = ${p.owner}, lease_expires_at = ${p.leaseExpiresAt}, attempts = attempts + 1, started_at = ${p.now}, updated_at = ${p.now}`

/**
 * The RETURNING list of a claim (qualify with the table name where needed).
 * @since 0.1.0
 */
export const claimedColumns = `id, entry_id AS "entryId", user_id AS "userId", attempts, lease_expires_at AS "leaseExpiresAt"`

/**
 * The claimed job's `processing` event, as an `INSERT … SELECT` from a CTE
 * named `claimed` holding the claim's row (for {@link Dialect.claimWithEvent}).
 * @since 0.1.0
 */
export const claimEvent = (sql: SqlClient.SqlClient, stage: Stage, now: string): Statement.Fragment =>
  sql`INSERT INTO journal_events (user_id, entry_id, kind, stage, stage_id, status, at)
    SELECT user_id, entry_id, 'stage', ${stage}, id, 'processing', ${now} FROM claimed`

/**
 * The entry's columns for a claim, read from the `voice_entries` row aliased
 * `alias`, each named `entry.<field>` (the store splits them off).
 * @since 0.1.0
 */
export const claimedEntryColumns = (alias: string): string =>
  entryColumns.split(",").map((c) => {
    const [column, as] = c.trim().split(/\s+AS\s+/)
    return `${alias}.${column} AS "entry.${as === undefined ? column : as.replaceAll('"', "")}"`
  }).join(", ")

const stageRunColumns = `status, attempts, next_attempt_at AS "nextAttemptAt", lease_owner AS "leaseOwner",
  lease_expires_at AS "leaseExpiresAt", started_at AS "startedAt", last_error AS "lastError", created_at AS "createdAt", updated_at AS "updatedAt"`
const userColumns = `id, name, created_at AS "createdAt"`
const apiKeyColumns =
  `id, user_id AS "userId", name, key_hash AS "keyHash", created_at AS "createdAt", revoked_at AS "revokedAt"`
const entryColumns = `id, user_id AS "userId", blob_key AS "blobKey", original_filename AS "originalFilename",
  mime_type AS "mimeType", size_bytes AS "sizeBytes", sha256, trace_id AS "traceId", span_id AS "spanId",
  created_at AS "createdAt", updated_at AS "updatedAt"`
// piecesDone: a run sent whole has no piece rows; once completed, all its pieces are done
const transcriptionColumns = `id, entry_id AS "entryId", user_id AS "userId", is_primary AS "isPrimary",
  make_primary AS "makePrimary", engine, text, language, duration_seconds AS "durationSeconds", segments,
  pieces_total AS "piecesTotal", CASE WHEN status = 'completed' THEN COALESCE(pieces_total, 1) ELSE
  (SELECT count(*) FROM transcription_pieces p WHERE p.transcription_id = transcriptions.id AND p.completed_at IS NOT NULL)
  END AS "piecesDone", ${stageRunColumns}`
const pieceColumns = `transcription_id AS "transcriptionId", piece_index AS "index", start_seconds AS "startSeconds",
  end_seconds AS "endSeconds", overlap_seconds AS "overlapSeconds", text, segments, engine, language, completed_at AS "completedAt"`
const cleanupColumns = `id, entry_id AS "entryId", transcription_id AS "transcriptionId", user_id AS "userId",
  is_primary AS "isPrimary", make_primary AS "makePrimary", model, title, text, summary, action_items AS "actionItems",
  tags, sections, template_id AS "templateId", ${stageRunColumns}`
const templateColumns = `id, user_id AS "userId", name, instructions, sections, created_at AS "createdAt", updated_at AS "updatedAt"`
const deliveryColumns = `id, entry_id AS "entryId", cleaned_entry_id AS "cleanedEntryId", user_id AS "userId",
  destination_id AS "destinationId", external_ref AS "externalRef", ${stageRunColumns}`
const destinationColumns = `id, user_id AS "userId", kind, name, config, sealed_secret AS "sealedSecret",
  disabled_at AS "disabledAt", disabled_reason AS "disabledReason", created_at AS "createdAt", updated_at AS "updatedAt"`

const storeError = (e: SqlError.SqlError) => new StoreError({ message: e.message, cause: e })

const decoder = <A, I>(schema: Schema.Schema<A, I>) => {
  const decode = Schema.decodeUnknown(Schema.Array(schema))
  return (rows: ReadonlyArray<unknown>): Effect.Effect<ReadonlyArray<A>, StoreError> =>
    decode(rows.map(numericCounts)).pipe(
      Effect.mapError((e) => new StoreError({ message: `unexpected row shape: ${e.message}`, cause: e }))
    )
}

/** PostgreSQL returns `count(*)` and BIGINT as strings; our schemas want numbers. */
const numericCounts = (row: unknown): unknown => {
  if (typeof row !== "object" || row === null) return row
  const r = row as Record<string, unknown>
  for (const k of ["attempts", "sizeBytes", "isPrimary", "makePrimary", "piecesTotal", "piecesDone", "index"]) {
    if (typeof r[k] === "string") r[k] = Number(r[k])
  }
  return r
}

const decodeUsers = decoder(User)
const decodeApiKeys = decoder(ApiKey)
const decodeEntries = decoder(VoiceEntry)
const decodeEntrySummaries = decoder(EntrySummary)
const decodeTranscriptions = decoder(Transcription)
/**
 * A JSON text column: the one place structured values are read back. NULL
 * (a cleanup not completed yet, or written before migration 0008) reads as
 * `empty`.
 */
const jsonColumn = <A, I>(schema: Schema.Schema<A, I>, empty: string) =>
  Schema.transform(Schema.NullOr(Schema.String), Schema.String, {
    strict: true,
    decode: (s) => s ?? empty,
    encode: (s) => s
  }).pipe(Schema.compose(Schema.parseJson(schema)))

const TagsColumn = jsonColumn(Schema.Array(Schema.String), "[]")
const decodeTags = Schema.decodeUnknownSync(TagsColumn)

const CleanedEntryRow = Schema.Struct({
  ...CleanedEntry.fields,
  actionItems: jsonColumn(Schema.Array(Schema.String), "[]"),
  tags: TagsColumn,
  sections: jsonColumn(Schema.Record({ key: Schema.String, value: Schema.String }), "{}")
})
const CleanupTemplateRow = Schema.Struct({
  ...CleanupTemplate.fields,
  sections: jsonColumn(Schema.Array(TemplateSection), "[]")
})
const decodeCleanupRows = decoder(CleanedEntryRow)
const decodeCleanups = (rows: ReadonlyArray<unknown>) =>
  Effect.map(decodeCleanupRows(rows), (decoded) => decoded.map((row) => new CleanedEntry(row)))
const decodeTemplateRows = decoder(CleanupTemplateRow)
const decodeTemplates = (rows: ReadonlyArray<unknown>) =>
  Effect.map(decodeTemplateRows(rows), (decoded) => decoded.map((row) => new CleanupTemplate(row)))
const decodeDeliveries = decoder(Delivery)
const decodeDestinations = decoder(StoredDestination)
const decodePieces = decoder(TranscriptionPiece)
const decodeEventRows = decoder(JournalEvent)
/** Event ids are BIGINT on PostgreSQL, returned as strings. */
const decodeEvents = (rows: ReadonlyArray<any>) => decodeEventRows(rows.map((r) => ({ ...r, id: Number(r.id) })))

const eventColumns = `id, user_id AS "userId", entry_id AS "entryId", kind, stage, stage_id AS "stageId", status, at`

/** An event to write with a change (see `JournalEvents`). */
interface NewEvent {
  readonly userId: string
  readonly entryId: string
  readonly kind: "stage" | "entry"
  readonly stage: Stage | null
  readonly stageId: string | null
  readonly status: string
}

const stageEvent = (stage: Stage, row: { readonly id: string; readonly entryId: string; readonly userId: string }, status: string): NewEvent => ({
  userId: row.userId,
  entryId: row.entryId,
  kind: "stage",
  stage,
  stageId: row.id,
  status
})

const first = <A>(resource: string, id: string) => (rows: ReadonlyArray<A>): Effect.Effect<A, NotFound> =>
  rows.length > 0 ? Effect.succeed(rows[0]!) : Effect.fail(new NotFound({ resource, id }))

const newId = (): string => globalThis.crypto.randomUUID()

const isoNow = Clock.currentTimeMillis.pipe(Effect.map((ms) => new Date(ms).toISOString()))

/**
 * A finished run for `completeMany`: its job and its result as (column,
 * SQL type, value) triples, in the same column order for every run of a
 * batch.
 */
interface Completion {
  readonly job: Job
  readonly values: ReadonlyArray<readonly [column: string, type: string, value: unknown]>
}

/** Queues what comes after the runs that became primary; their events, in the runs' order. */
type QueueNext = (primary: ReadonlyArray<Completion>, now: string) => Effect.Effect<ReadonlyArray<ReadonlyArray<NewEvent>>, StoreError>

/** Splits runs into rounds with at most one run per entry, in order. */
const distinctEntryRounds = (items: ReadonlyArray<Completion>): ReadonlyArray<ReadonlyArray<Completion>> => {
  const rounds: Array<{ entries: Set<string>; items: Array<Completion> }> = []
  for (const item of items) {
    let round = rounds.find((r) => !r.entries.has(item.job.entryId))
    if (round === undefined) rounds.push(round = { entries: new Set(), items: [] })
    round.entries.add(item.job.entryId)
    round.items.push(item)
  }
  return rounds.map((r) => r.items)
}

/**
 * Applies `f` to every call of `store`: its effect-valued members and what
 * its methods return (how adapters add behaviour to all calls at once).
 * @since 0.1.0
 */
export const mapCalls = (
  store: JournalStoreService,
  f: <A, E, R>(call: Effect.Effect<A, E, R>, name: string) => Effect.Effect<A, E | StoreError, R>
): JournalStoreService => {
  const mapped: Record<string, unknown> = {}
  for (const [name, member] of Object.entries(store)) {
    mapped[name] = Effect.isEffect(member)
      ? f(member, name)
      : typeof member === "function"
      ? (...args: Array<unknown>) => f((member as (...a: Array<unknown>) => Effect.Effect<unknown, unknown>)(...args), name)
      : member
  }
  return mapped as unknown as JournalStoreService
}

/**
 * Builds the store on the `SqlClient` in context. The schema must already be
 * migrated (see `Migrations`).
 * @since 0.1.0
 * @category constructors
 */
export const make = (dialect: Dialect): Effect.Effect<JournalStoreService, never, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const cols = sql.literal
    const signal = yield* Effect.serviceOption(Signal)

    /**
     * Writes the events of a change: call it last in the change's
     * transaction, so an event's id is handed out just before the commit
     * (racing transactions then commit out of id order only by moments,
     * which `JournalEvents.stream` allows for).
     */
    const writeEvents = (events: ReadonlyArray<NewEvent>, now: string) =>
      events.length === 0 ? Effect.void : sql`INSERT INTO journal_events ${
        sql.insert(events.map((e) => ({
          user_id: e.userId,
          entry_id: e.entryId,
          kind: e.kind,
          stage: e.stage,
          stage_id: e.stageId,
          status: e.status,
          at: now
        })))
      }`.pipe(Effect.asVoid, Effect.mapError(storeError))

    const eventHints = dialect.makeEventHints === undefined ? undefined : yield* dialect.makeEventHints(sql)

    /**
     * Once a change with events of `userId` is written: wakes this
     * process's event streams (the Signal) and other processes' (the
     * dialect's hints; a failure costs them latency, not events — said at
     * warning, the change itself stands).
     */
    const woke = (userId: string) => <A, E, R>(self: Effect.Effect<A, E, R>) =>
      Effect.tap(self, () =>
        Effect.zipRight(
          Option.isNone(signal) ? Effect.void : signal.value.notify(userId),
          eventHints === undefined ? Effect.void : eventHints(userId).pipe(
            Effect.catchAll((e) => Effect.logWarning("event hint to other nodes failed; their streams find the events by polling", e))
          )
        ))

    const primaryConflict = (table: string, entryId: string) => (e: SqlError.SqlError) =>
      dialect.isUniqueViolation(e) ? new PrimaryConflict({ table, entryId }) : storeError(e)

    /** Touches the entry row: an owner check and, on PostgreSQL, a per-entry lock until commit. */
    const lockEntry = (userId: UserId, entryId: EntryId, now: string) =>
      sql`UPDATE voice_entries SET updated_at = ${now} WHERE id = ${entryId} AND user_id = ${userId} RETURNING id`.pipe(
        Effect.mapError(storeError),
        Effect.flatMap(first("entry", entryId))
      )

    /** One row of `table` by id, only if `userId` owns it. */
    const getOwned = <A>(
      table: string,
      columns: string,
      decode: (rows: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<A>, StoreError>,
      resource: string
    ) =>
    (userId: UserId, id: string): Effect.Effect<A, NotFound | StoreError> =>
      sql`SELECT ${cols(columns)} FROM ${sql(table)} WHERE id = ${id} AND user_id = ${userId}`.pipe(
        Effect.mapError(storeError),
        Effect.flatMap(decode),
        Effect.flatMap(first(resource, id))
      )

    /** The rows of `table` for one of `userId`'s entries, newest first (NotFound if the entry is not theirs). */
    const listForEntry = <A>(
      table: string,
      columns: string,
      decode: (rows: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<A>, StoreError>
    ) =>
    (userId: UserId, entryId: EntryId): Effect.Effect<ReadonlyArray<A>, NotFound | StoreError> =>
      getEntry(userId, entryId).pipe(
        Effect.zipRight(
          sql`SELECT ${cols(columns)} FROM ${sql(table)} WHERE entry_id = ${entryId} AND user_id = ${userId}
            ORDER BY created_at DESC, id DESC`.pipe(Effect.mapError(storeError), Effect.flatMap(decode))
        )
      )

    const getEntry: (userId: UserId, id: EntryId) => Effect.Effect<VoiceEntry, NotFound | StoreError> = getOwned(
      "voice_entries",
      entryColumns,
      decodeEntries,
      "entry"
    )
    const getTranscription: (userId: UserId, id: TranscriptionId) => Effect.Effect<Transcription, NotFound | StoreError> =
      getOwned("transcriptions", transcriptionColumns, decodeTranscriptions, "transcription")
    const getCleanup: (userId: UserId, id: CleanupId) => Effect.Effect<CleanedEntry, NotFound | StoreError> = getOwned(
      "cleaned_entries",
      cleanupColumns,
      decodeCleanups,
      "cleanup"
    )
    const getDelivery: (userId: UserId, id: DeliveryId) => Effect.Effect<Delivery, NotFound | StoreError> = getOwned(
      "deliveries",
      deliveryColumns,
      decodeDeliveries,
      "delivery"
    )
    const getDestination: (userId: UserId, id: DestinationId) => Effect.Effect<StoredDestination, NotFound | StoreError> =
      getOwned("destinations", destinationColumns, decodeDestinations, "destination")

    const insertTranscription = (
      row: { readonly entryId: EntryId; readonly userId: UserId; readonly makePrimary: boolean },
      now: string
    ) => {
      const id = newId()
      return sql`INSERT INTO transcriptions (id, entry_id, user_id, make_primary, status, attempts, next_attempt_at, created_at, updated_at)
        VALUES (${id}, ${row.entryId}, ${row.userId}, ${row.makePrimary ? 1 : 0}, 'pending', 0, ${now}, ${now}, ${now})`.pipe(
        Effect.mapError(storeError),
        Effect.as(id as TranscriptionId)
      )
    }

    /** A pending cleanup row, as `sql.insert` takes it. */
    const cleanupRow = (
      id: string,
      row: {
        readonly entryId: string
        readonly userId: string
        readonly transcriptionId: string
        readonly makePrimary: boolean
        readonly templateId?: TemplateId | undefined
      },
      now: string
    ) => ({
      id,
      entry_id: row.entryId,
      transcription_id: row.transcriptionId,
      user_id: row.userId,
      make_primary: row.makePrimary ? 1 : 0,
      template_id: row.templateId ?? null,
      status: "pending",
      attempts: 0,
      next_attempt_at: now,
      created_at: now,
      updated_at: now
    })

    const insertCleanup = (row: Parameters<typeof cleanupRow>[1], now: string) => {
      const id = newId()
      return sql`INSERT INTO cleaned_entries ${sql.insert(cleanupRow(id, row, now))}`.pipe(
        Effect.mapError(storeError),
        Effect.as(id as CleanupId)
      )
    }

    const getTemplate: (userId: UserId, id: TemplateId) => Effect.Effect<CleanupTemplate, NotFound | StoreError> = getOwned(
      "cleanup_templates",
      templateColumns,
      decodeTemplates,
      "template"
    )

    /**
     * Touches the template row: an owner check and, on PostgreSQL, a row
     * lock until commit, so queueing a cleanup with it and deleting it
     * cannot interleave (SQLite has one writer anyway).
     */
    const lockTemplate = (userId: UserId, id: TemplateId) =>
      sql`UPDATE cleanup_templates SET user_id = user_id WHERE id = ${id} AND user_id = ${userId} RETURNING id`.pipe(
        Effect.mapError(storeError),
        Effect.flatMap(first("template", id))
      )

    const nameTaken = (name: string) => (e: SqlError.SqlError) =>
      dialect.isUniqueViolation(e) ? new NameTaken({ resource: "template", name }) : storeError(e)

    /**
     * Queues a delivery of `cleanedEntryId` to `destinationId` unless one is
     * already queued or running. A new one starts from the newest known
     * external reference of this entry at this destination, so a re-sync
     * rewrites the same page or file.
     */
    const ensureDelivery = (
      row: { readonly entryId: string; readonly userId: string; readonly cleanedEntryId: string; readonly destinationId: string },
      now: string
    ) =>
      Effect.gen(function*() {
        const open = yield* sql<{ id: string }>`SELECT id FROM deliveries
          WHERE cleaned_entry_id = ${row.cleanedEntryId} AND destination_id = ${row.destinationId}
            AND status IN ('pending', 'processing', 'retrying')`.pipe(Effect.mapError(storeError))
        if (open.length > 0) return { id: open[0]!.id as DeliveryId, events: [] as ReadonlyArray<NewEvent> }
        const known = yield* sql<{ ref: string }>`SELECT external_ref AS ref FROM deliveries
          WHERE destination_id = ${row.destinationId} AND entry_id = ${row.entryId} AND external_ref IS NOT NULL
          ORDER BY created_at DESC, id DESC LIMIT 1`.pipe(Effect.mapError(storeError))
        const id = newId()
        yield* sql`INSERT INTO deliveries (id, entry_id, cleaned_entry_id, user_id, destination_id, external_ref, status, attempts, next_attempt_at, created_at, updated_at)
          VALUES (${id}, ${row.entryId}, ${row.cleanedEntryId}, ${row.userId}, ${row.destinationId}, ${known[0]?.ref ?? null},
            'pending', 0, ${now}, ${now}, ${now})`.pipe(Effect.mapError(storeError))
        return { id: id as DeliveryId, events: [stageEvent("delivery", { id, ...row }, "pending")] }
      })

    /** The user's enabled destinations, then `implicit` ones. */
    const deliveryTargets = (userId: string, implicit: ReadonlyArray<DestinationId>) =>
      sql<{ id: string }>`SELECT id FROM destinations WHERE user_id = ${userId} AND disabled_at IS NULL
        ORDER BY created_at, id`.pipe(
        Effect.mapError(storeError),
        Effect.map((rows) => [...implicit, ...rows.map((r) => r.id as DestinationId)])
      )

    /** Moves the primary flag of `table` within one entry to `id`. Call inside a transaction after lockEntry. */
    const switchPrimary = (table: "transcriptions" | "cleaned_entries", entryIds: ReadonlyArray<string>, ids: ReadonlyArray<string>, now: string) =>
      Effect.zipRight(
        sql`UPDATE ${sql(table)} SET is_primary = 0, updated_at = ${now}
          WHERE ${sql.in("entry_id", entryIds)} AND is_primary = 1 AND NOT (${sql.in("id", ids)})`,
        sql`UPDATE ${sql(table)} SET is_primary = 1, updated_at = ${now} WHERE ${sql.in("id", ids)} AND ${sql.in("entry_id", entryIds)}`
      ).pipe(Effect.mapError(primaryConflict(table, entryIds.join(", "))))

    /**
     * The fenced update every worker write goes through: only the lease
     * holder of a `processing` row may change it.
     */
    const fenced = (job: Job, set: Statement.Fragment) => {
      const { table } = stageTables[job.stage]
      return sql<{ id: string; makePrimary: number | string }>`UPDATE ${sql(table)} SET ${set}
        WHERE id = ${job.id} AND lease_owner = ${job.leaseOwner} AND status = 'processing'
        RETURNING id, ${sql.literal(job.stage === "delivery" ? "0" : "make_primary")} AS "makePrimary"`.pipe(
        Effect.mapError(storeError),
        Effect.flatMap((rows) =>
          rows.length > 0 ? Effect.succeed(rows[0]!) : Effect.fail(new LeaseLost({ table, id: job.id }))
        )
      )
    }

    /**
     * Moves the primary flag of one of `userId`'s entries to a completed row
     * of that entry, atomically. The entry row is locked first (owner check
     * and per-entry serialisation) and every statement is scoped by the
     * entry, so a row of another entry is NotFound and nothing is written
     * (the transaction rolls back the lock's touch too).
     */
    const setPrimary = <A extends { readonly status: string }>(
      table: "transcriptions" | "cleaned_entries",
      columns: string,
      decode: (rows: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<A>, StoreError>,
      resource: string
    ) =>
    (userId: UserId, entryId: EntryId, id: string): Effect.Effect<A, NotFound | InvalidState | PrimaryConflict | StoreError> =>
      Effect.gen(function*() {
        const now = yield* isoNow
        yield* lockEntry(userId, entryId, now)
        const inEntry = sql`SELECT ${cols(columns)} FROM ${sql(table)}
          WHERE id = ${id} AND entry_id = ${entryId} AND user_id = ${userId}`.pipe(
          Effect.mapError(storeError),
          Effect.flatMap(decode),
          Effect.flatMap(first(resource, id))
        )
        const current = yield* inEntry
        if (current.status !== "completed") {
          return yield* new InvalidState({ message: `${resource} ${id} is ${current.status}, not completed` })
        }
        yield* switchPrimary(table, [entryId], [id], now)
        yield* refreshSearchDocuments(sql, [entryId])
        return yield* inEntry
      }).pipe(sql.withTransaction, Effect.catchTag("SqlError", (e) => Effect.fail(storeError(e))))

    /**
     * Finishes transcription or cleanup runs of one stage in one
     * transaction, a few statements for the whole batch: writes each
     * result (fenced by its lease), makes it primary if asked to or if its
     * entry has none, and, for those now primary, queues what comes next.
     * Returns, in order, whether each run was written (false: its lease or
     * its entry is gone, nothing of it written). Runs of one entry go in
     * separate rounds, so primary switches in one statement never collide.
     */
    const completeMany = (
      table: "transcriptions" | "cleaned_entries",
      items: ReadonlyArray<Completion>,
      queueNext: QueueNext
    ) =>
      Effect.gen(function*() {
        const now = yield* isoNow
        const written = new Set<Completion>()
        for (const round of distinctEntryRounds(items)) {
          const locked = yield* sql<{ id: string; userId: string }>`UPDATE voice_entries SET updated_at = ${now}
            WHERE ${sql.in("id", round.map((i) => i.job.entryId))} RETURNING id, user_id AS "userId"`
          const owners = new Map(locked.map((e) => [e.id, e.userId]))
          const alive = round.filter((i) => owners.get(i.job.entryId) === i.job.userId)
          if (alive.length === 0) continue
          // one row of values per run, joined on the primary key (VALUES columns are
          // column1… on both dialects): one index probe per run, where a CASE per
          // column and an OR per run cost PostgreSQL ~0.1 ms per run to plan and match
          // (each row one parenthesised list of parameters: a fragment per value cost ~6 KB of garbage per run)
          const results = sql.csv(alive.map((i) => sql`${sql.in([i.job.id, i.job.leaseOwner, ...i.values.map((v) => v[2])])}`))
          const assigned = alive[0]!.values.map(([column, type], c) => sql`${sql(column)} = CAST(v.${sql.literal(`column${c + 3}`)} AS ${sql.literal(type)})`)
          const done = yield* sql<{ id: string; makePrimary: number | string }>`UPDATE ${sql(table)} AS t
            SET status = 'completed', lease_owner = NULL, lease_expires_at = NULL, last_error = NULL, updated_at = ${now},
              ${sql.csv(assigned)}${table === "transcriptions" ? sql`, pieces_total = COALESCE(pieces_total, 1)` : sql``}
            FROM (VALUES ${results}) AS v
            WHERE t.id = v.column1 AND t.lease_owner = v.column2 AND t.status = 'processing'
            RETURNING id, make_primary AS "makePrimary"`
          const asked = new Map(done.map((r) => [r.id, Number(r.makePrimary) === 1]))
          const passed = alive.filter((i) => asked.has(i.job.id))
          if (passed.length === 0) continue
          const undecided = passed.filter((i) => !asked.get(i.job.id))
          const havePrimary = undecided.length === 0 ? new Set<string>() : new Set(
            (yield* sql<{ entryId: string }>`SELECT entry_id AS "entryId" FROM ${sql(table)}
              WHERE ${sql.in("entry_id", undecided.map((i) => i.job.entryId))} AND is_primary = 1`).map((r) => r.entryId)
          )
          const primary = passed.filter((i) => asked.get(i.job.id) || !havePrimary.has(i.job.entryId))
          let queued: ReadonlyArray<ReadonlyArray<NewEvent>> = []
          if (primary.length > 0) {
            const entries = primary.map((i) => i.job.entryId)
            const ids = primary.map((i) => i.job.id)
            yield* switchPrimary(table, entries, ids, now).pipe(
              Effect.catchTag("PrimaryConflict", (e) => Effect.fail(new StoreError({ message: e.message, cause: e })))
            )
            yield* refreshSearchDocuments(sql, entries)
            queued = yield* queueNext(primary, now)
          }
          const events: Array<NewEvent> = []
          for (const i of passed) {
            written.add(i)
            events.push(stageEvent(i.job.stage, i.job, "completed"))
            const p = primary.indexOf(i)
            if (p >= 0) events.push(...queued[p]!)
          }
          yield* writeEvents(events, now)
        }
        return items.map((i) => written.has(i))
      }).pipe(
        sql.withTransaction,
        Effect.catchTag("SqlError", (e) => Effect.fail(storeError(e))),
        Effect.tap(() => Effect.forEach(new Set(items.map((i) => i.job.userId)), (userId) => woke(userId)(Effect.void)))
      )

    /** One run of {@link completeMany}: LeaseLost when it was not written. */
    const completeOne = (table: "transcriptions" | "cleaned_entries", item: Completion, queueNext: QueueNext) =>
      Effect.flatMap(completeMany(table, [item], queueNext), ([written]) =>
        written ? Effect.void : Effect.fail(new LeaseLost({ table, id: item.job.id })))

    /** The entry an idempotency key made, as the `IdempotencyKeyUsed` a repeated upload fails with. */
    const idempotentWinner = (userId: string, key: string): Effect.Effect<never, IdempotencyKeyUsed | StoreError> =>
      sql<{ entryId: string }>`SELECT entry_id AS "entryId" FROM idempotency_keys
        WHERE user_id = ${userId} AND idem_key = ${key}`.pipe(
        Effect.mapError(storeError),
        Effect.flatMap((rows): Effect.Effect<never, IdempotencyKeyUsed | StoreError> =>
          rows.length > 0
            ? Effect.fail(new IdempotencyKeyUsed({ entryId: rows[0]!.entryId }))
            : Effect.fail(new StoreError({ message: "the idempotency key is held by an upload that did not commit; retry" }))
        )
      )

    /** A worker's status change of its leased row, with its event, in one transaction. */
    const transition = (job: Job, status: string, set: (now: string) => Statement.Fragment) =>
      Effect.gen(function*() {
        const now = yield* isoNow
        yield* fenced(job, set(now))
        yield* writeEvents([stageEvent(job.stage, job, status)], now)
      }).pipe(sql.withTransaction, Effect.catchTag("SqlError", (e) => Effect.fail(storeError(e))), woke(job.userId))

    const page = <A>(
      items: Effect.Effect<ReadonlyArray<A>, StoreError>,
      count: Statement.Statement<{ total: number | string }>,
      request: { readonly limit: number; readonly offset: number }
    ): Effect.Effect<Page<A>, StoreError> =>
      Effect.all([items, count.pipe(Effect.mapError(storeError))]).pipe(
        Effect.map(([items, count]) => ({
          items,
          total: Number(count[0]?.total ?? 0),
          limit: request.limit,
          offset: request.offset
        }))
      )

    /**
     * Entry summaries for a page of entries: `entries` selects the page's
     * `voice_entries` rows (entry columns), `orderBy` orders them (alias `p`).
     */
    const summaries = (entries: Statement.Fragment, orderBy: Statement.Fragment) =>
      sql`SELECT p.*, t.status AS "transcriptionStatus", t.duration_seconds AS "durationSeconds",
          c.status AS "cleanupStatus", c.title AS "title", n.status AS "notionSyncStatus"
        FROM (${entries}) p
        LEFT JOIN transcriptions t ON t.id = (SELECT x.id FROM transcriptions x WHERE x.entry_id = p.id
          ORDER BY x.is_primary DESC, x.created_at DESC, x.id DESC LIMIT 1)
        LEFT JOIN cleaned_entries c ON c.id = (SELECT x.id FROM cleaned_entries x WHERE x.entry_id = p.id
          ORDER BY x.is_primary DESC, x.created_at DESC, x.id DESC LIMIT 1)
        LEFT JOIN deliveries n ON n.id = (SELECT x.id FROM deliveries x WHERE x.entry_id = p.id
          AND x.destination_id = ${serverNotionDestination} ORDER BY x.created_at DESC, x.id DESC LIMIT 1)
        ORDER BY ${orderBy}`.pipe(Effect.mapError(storeError), Effect.flatMap(decodeEntrySummaries))

    const transcriptionCompletion = ({ job, result }: { readonly job: Job; readonly result: TranscriptionResult }): Completion => ({
      job,
      values: [
        ["text", "TEXT", result.text],
        ["engine", "TEXT", result.engine],
        ["language", "TEXT", result.language],
        ["duration_seconds", "DOUBLE PRECISION", result.durationSeconds],
        ["segments", "TEXT", result.segments == null ? null : JSON.stringify(result.segments)]
      ]
    })

    /** A primary transcript queues its entry's cleanup: one row per run, in one statement. */
    const queueCleanups: QueueNext = (primary, now) => {
      const rows = primary.map(({ job }) => ({ id: newId(), job }))
      return sql`INSERT INTO cleaned_entries ${
        sql.insert(rows.map(({ id, job }) =>
          cleanupRow(id, { entryId: job.entryId, userId: job.userId, transcriptionId: job.id, makePrimary: true }, now)
        ))
      }`.pipe(
        Effect.mapError(storeError),
        Effect.as(rows.map(({ id, job }) => [stageEvent("cleanup", { id, entryId: job.entryId, userId: job.userId }, "pending")]))
      )
    }

    const cleanupCompletion = ({ job, result }: { readonly job: Job; readonly result: CleanupResult }): Completion => ({
      job,
      values: [
        ["title", "TEXT", result.title],
        ["text", "TEXT", result.text],
        ["model", "TEXT", result.model],
        ["summary", "TEXT", result.summary],
        ["action_items", "TEXT", JSON.stringify(result.actionItems)],
        ["tags", "TEXT", JSON.stringify(normalizeTags(result.tags))],
        ["sections", "TEXT", JSON.stringify(result.sections)]
      ]
    })

    /** A primary cleanup queues a delivery to each of its user's enabled destinations and to each of `implicit`. */
    const queueDeliveriesOf = (implicit: ReadonlyArray<DestinationId>): QueueNext => (primary, now) =>
      Effect.forEach(primary, ({ job }) =>
        deliveryTargets(job.userId, implicit).pipe(
          Effect.flatMap((targets) =>
            Effect.forEach(targets, (destinationId) =>
              ensureDelivery({ entryId: job.entryId, userId: job.userId, cleanedEntryId: job.id, destinationId }, now))
          ),
          Effect.map((queued) => queued.flatMap((q) => q.events))
        ))

    const heartbeatBatch: JournalStoreService["heartbeatBatch"] = (jobs, leaseMillis) =>
      Effect.gen(function*() {
        const leaseExpiresAt = new Date((yield* Clock.currentTimeMillis) + leaseMillis)
        const renewed = new Set<string>()
        const held = (stage: string, id: string, owner: string) => `${stage}/${id}/${owner}`
        for (const stage of new Set(jobs.map((j) => j.stage))) {
          const ofStage = jobs.filter((j) => j.stage === stage)
          const rows = yield* sql<{ id: string; owner: string }>`UPDATE ${sql(stageTables[stage].table)}
            SET lease_expires_at = ${leaseExpiresAt.toISOString()}
            WHERE status = 'processing' AND ${sql.or(ofStage.map((j) => sql`(id = ${j.id} AND lease_owner = ${j.leaseOwner})`))}
            RETURNING id, lease_owner AS owner`.pipe(Effect.mapError(storeError))
          for (const row of rows) renewed.add(held(stage, row.id, row.owner))
        }
        return jobs.map((j) => renewed.has(held(j.stage, j.id, j.leaseOwner)) ? Option.some({ ...j, leaseExpiresAt }) : Option.none())
      })

    const claimBatch: JournalStoreService["claimBatch"] = (stage, { leaseMillis, limit, workerId }) =>
      Effect.gen(function*() {
        const nowMs = yield* Clock.currentTimeMillis
        const now = new Date(nowMs).toISOString()
        const { table } = stageTables[stage]
        const params = { owner: workerId, now, leaseExpiresAt: new Date(nowMs + leaseMillis).toISOString(), limit: Math.max(1, limit) }
        const rows: ReadonlyArray<ClaimedRow & Record<string, unknown>> = dialect.claimWithEvent !== undefined
          ? yield* dialect.claimWithEvent(sql, table, { ...params, stage })
          : yield* Effect.gen(function*() {
            const claimed = yield* dialect.claim(sql, table, params)
            if (claimed.length === 0) return []
            yield* writeEvents(claimed.map((row) => stageEvent(stage, row, "processing")), now)
            const entries = yield* sql<Record<string, unknown>>`SELECT ${cols(claimedEntryColumns("e"))}
              FROM voice_entries e WHERE ${sql.in("e.id", claimed.map((row) => row.entryId))}`
            const byId = new Map(entries.map((e) => [e["entry.id"], e]))
            // an entry's stage rows go with it (ON DELETE CASCADE): each claimed row has its entry
            return claimed.map((row) => ({ ...row, ...byId.get(row.entryId) }))
          }).pipe(sql.withTransaction)
        if (rows.length === 0) return []
        const entries = yield* decodeEntries(rows.map((row) => {
          const entryFields: Record<string, unknown> = {}
          for (const [key, value] of Object.entries(row)) if (key.startsWith("entry.")) entryFields[key.slice(6)] = value
          return entryFields
        }))
        const jobs = rows.map((row, i): ClaimedJob => ({
          stage,
          id: row.id,
          entryId: row.entryId as EntryId,
          userId: row.userId as UserId,
          attempts: Number(row.attempts),
          leaseOwner: workerId,
          leaseExpiresAt: new Date(row.leaseExpiresAt),
          entry: entries[i]!
        }))
        for (const userId of new Set(jobs.map((j) => j.userId))) yield* woke(userId)(Effect.void)
        return jobs
      }).pipe(Effect.catchTag("SqlError", (e) => Effect.fail(storeError(e))))

    const store: JournalStoreService = {
      createUser: (name) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          const id = newId()
          yield* sql`INSERT INTO users (id, name, created_at) VALUES (${id}, ${name}, ${now})`.pipe(
            Effect.mapError(storeError)
          )
          return new User({ id: id as UserId, name, createdAt: new Date(now) })
        }),

      createApiKey: ({ keyHash, name, userId }) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          const users = yield* sql`SELECT id FROM users WHERE id = ${userId}`.pipe(Effect.mapError(storeError))
          if (users.length === 0) return yield* new NotFound({ resource: "user", id: userId })
          const id = newId()
          yield* sql`INSERT INTO api_keys (id, user_id, name, key_hash, created_at) VALUES (${id}, ${userId}, ${name}, ${keyHash}, ${now})`
            .pipe(Effect.mapError(storeError))
          const rows = yield* sql`SELECT ${cols(apiKeyColumns)} FROM api_keys WHERE id = ${id}`.pipe(
            Effect.mapError(storeError),
            Effect.flatMap(decodeApiKeys)
          )
          return rows[0]!
        }),

      findApiKeyByHash: (keyHash) =>
        Effect.gen(function*() {
          const keys = yield* sql`SELECT ${cols(apiKeyColumns)} FROM api_keys WHERE key_hash = ${keyHash} AND revoked_at IS NULL`
            .pipe(Effect.mapError(storeError), Effect.flatMap(decodeApiKeys))
          if (keys.length === 0) return Option.none()
          const key = keys[0]!
          const users = yield* sql`SELECT ${cols(userColumns)} FROM users WHERE id = ${key.userId}`.pipe(
            Effect.mapError(storeError),
            Effect.flatMap(decodeUsers)
          )
          return users.length === 0 ? Option.none() : Option.some({ key, user: users[0]! })
        }),

      getUser: (userId) =>
        sql`SELECT ${cols(userColumns)} FROM users WHERE id = ${userId}`.pipe(
          Effect.mapError(storeError),
          Effect.flatMap(decodeUsers),
          Effect.flatMap((rows) => rows.length === 0 ? new NotFound({ resource: "user", id: userId }) : Effect.succeed(rows[0]!))
        ),

      listApiKeys: (userId) =>
        sql`SELECT ${cols(apiKeyColumns)} FROM api_keys WHERE user_id = ${userId} ORDER BY created_at DESC, id DESC`.pipe(
          Effect.mapError(storeError),
          Effect.flatMap(decodeApiKeys)
        ),

      revokeApiKey: (userId, keyId) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          const rows = yield* sql`UPDATE api_keys SET revoked_at = ${now}
            WHERE id = ${keyId} AND user_id = ${userId} AND revoked_at IS NULL RETURNING id`.pipe(
            Effect.mapError(storeError)
          )
          if (rows.length === 0) return yield* new NotFound({ resource: "api key", id: keyId })
          // its sessions end with it (findSession also checks the key, this keeps the table clean)
          yield* sql`DELETE FROM sessions WHERE api_key_id = ${keyId}`.pipe(Effect.mapError(storeError))
        }).pipe(sql.withTransaction, Effect.catchTag("SqlError", (e) => Effect.fail(storeError(e)))),

      createEntry: (input) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          const id = newId() as EntryId
          yield* sql`INSERT INTO voice_entries (id, user_id, blob_key, original_filename, mime_type, size_bytes, sha256, trace_id, span_id, created_at, updated_at)
            VALUES (${id}, ${input.userId}, ${input.blobKey}, ${input.originalFilename}, ${input.mimeType}, ${input.sizeBytes}, ${input.sha256},
              ${input.trace?.traceId ?? null}, ${input.trace?.spanId ?? null}, ${now}, ${now})`
            .pipe(Effect.mapError(storeError))
          const transcriptionId = yield* insertTranscription({ entryId: id, userId: input.userId, makePrimary: true }, now)
          if (input.idempotency !== undefined) {
            const { key, notBefore } = input.idempotency
            // an expired key is free again
            yield* sql`DELETE FROM idempotency_keys WHERE user_id = ${input.userId} AND idem_key = ${key}
              AND created_at < ${notBefore.toISOString()}`.pipe(Effect.mapError(storeError))
            // a concurrent upload with the same key waits here for the first one's commit, then fails
            yield* sql`INSERT INTO idempotency_keys (user_id, idem_key, entry_id, created_at)
              VALUES (${input.userId}, ${key}, ${id}, ${now})`.pipe(
              Effect.mapError((e) => dialect.isUniqueViolation(e) ? new IdempotencyKeyUsed({ entryId: "" }) : storeError(e))
            )
          }
          yield* writeEvents([
            { userId: input.userId, entryId: id, kind: "entry", stage: null, stageId: null, status: "created" },
            stageEvent("transcription", { id: transcriptionId, entryId: id, userId: input.userId }, "pending")
          ], now)
          const entry = yield* getEntry(input.userId, id).pipe(Effect.orDie)
          const transcription = yield* getTranscription(input.userId, transcriptionId).pipe(Effect.orDie)
          return { entry, transcription }
        }).pipe(
          sql.withTransaction,
          Effect.catchTag("SqlError", (e) => Effect.fail(storeError(e))),
          // rolled back: name the entry the key already made
          Effect.catchTag("IdempotencyKeyUsed", () => idempotentWinner(input.userId, input.idempotency!.key)),
          woke(input.userId)
        ),

      getEntry,

      findEntryBySha256: (userId, sha256) =>
        sql`SELECT ${cols(entryColumns)} FROM voice_entries WHERE user_id = ${userId} AND sha256 = ${sha256}
          ORDER BY created_at, id LIMIT 1`.pipe(
          Effect.mapError(storeError),
          Effect.flatMap(decodeEntries),
          Effect.map((rows) => Option.fromNullable(rows[0]))
        ),

      // One query per page: the page comes off the (user_id, created_at, id) index first, then each of its
      // rows picks its primary-or-newest transcription and cleanup and newest sync through the entry_id indexes.
      listEntries: (userId, request) =>
        page(
          summaries(
            sql`SELECT ${cols(entryColumns)} FROM voice_entries WHERE user_id = ${userId}
              ORDER BY created_at DESC, id DESC LIMIT ${request.limit} OFFSET ${request.offset}`,
            sql`p."createdAt" DESC, p.id DESC`
          ),
          sql`SELECT CAST(count(*) AS INTEGER) AS total FROM voice_entries WHERE user_id = ${userId}`,
          request
        ),

      // The page of matches comes off the dialect's full-text index (owner and tag keys included), ranked;
      // then the same summary joins as the list, for those rows only.
      searchEntries: (userId, request) =>
        Effect.gen(function*() {
          const paging = { limit: request.limit ?? 20, offset: request.offset ?? 0 }
          const query = EntrySearch.parse(userId, request)
          if (query === "list") return yield* store.listEntries(userId, paging)
          if (query === "nothing") return { items: [], total: 0, ...paging }
          if (query instanceof EntrySearch.InvalidSearch) return yield* query
          const matched = searchMatches(sql, dialect.search, query)
          return yield* page(
            summaries(
              sql`SELECT ${cols(entryColumns)}, m.match_rank FROM (${matched.page(paging)}) m
                JOIN voice_entries ON voice_entries.id = m.entry_id`,
              sql`p.match_rank, p."createdAt" DESC, p.id DESC`
            ),
            matched.count,
            paging
          )
        }),

      deleteEntry: (userId, entryId) =>
        Effect.gen(function*() {
          const entry = yield* getEntry(userId, entryId)
          // children first: portable even where ON DELETE CASCADE is not enforced
          yield* sql`DELETE FROM transcription_pieces
            WHERE transcription_id IN (SELECT id FROM transcriptions WHERE entry_id = ${entryId})`
          yield* sql`DELETE FROM entry_search WHERE entry_id = ${entryId}`
          yield* sql`DELETE FROM deliveries WHERE entry_id = ${entryId}`
          yield* sql`DELETE FROM cleaned_entries WHERE entry_id = ${entryId}`
          yield* sql`DELETE FROM transcriptions WHERE entry_id = ${entryId}`
          yield* sql`DELETE FROM idempotency_keys WHERE entry_id = ${entryId}`
          yield* sql`DELETE FROM voice_entries WHERE id = ${entryId} AND user_id = ${userId}`
          yield* writeEvents([{ userId, entryId, kind: "entry", stage: null, stageId: null, status: "deleted" }], yield* isoNow)
          return entry
        }).pipe(sql.withTransaction, Effect.catchTag("SqlError", (e) => Effect.fail(storeError(e))), woke(userId)),

      addTranscription: (userId, entryId, { makePrimary }) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          yield* getEntry(userId, entryId)
          const id = yield* insertTranscription({ entryId, userId, makePrimary }, now)
          yield* writeEvents([stageEvent("transcription", { id, entryId, userId }, "pending")], now)
          return yield* getTranscription(userId, id)
        }).pipe(sql.withTransaction, Effect.catchTag("SqlError", (e) => Effect.fail(storeError(e))), woke(userId)),

      listTranscriptions: listForEntry("transcriptions", transcriptionColumns, decodeTranscriptions),

      getTranscription,

      setPrimaryTranscription: setPrimary("transcriptions", transcriptionColumns, decodeTranscriptions, "transcription"),

      addCleanup: (userId, entryId, options) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          yield* getEntry(userId, entryId)
          if (options.templateId !== undefined) yield* lockTemplate(userId, options.templateId)
          let transcriptionId = options.transcriptionId
          if (transcriptionId === undefined) {
            const primary = yield* sql<{ id: string }>`SELECT id FROM transcriptions
              WHERE entry_id = ${entryId} AND is_primary = 1`.pipe(Effect.mapError(storeError))
            if (primary.length === 0) {
              return yield* new InvalidState({ message: `entry ${entryId} has no completed transcription to clean up` })
            }
            transcriptionId = primary[0]!.id as TranscriptionId
          }
          const t = yield* getTranscription(userId, transcriptionId)
          if (t.entryId !== entryId) return yield* new NotFound({ resource: "transcription", id: transcriptionId })
          if (t.status !== "completed") {
            return yield* new InvalidState({ message: `transcription ${transcriptionId} is ${t.status}, not completed` })
          }
          const id = yield* insertCleanup(
            { entryId, userId, transcriptionId, makePrimary: options.makePrimary, templateId: options.templateId },
            now
          )
          yield* writeEvents([stageEvent("cleanup", { id, entryId, userId }, "pending")], now)
          return yield* getCleanup(userId, id)
        }).pipe(sql.withTransaction, Effect.catchTag("SqlError", (e) => Effect.fail(storeError(e))), woke(userId)),

      listCleanups: listForEntry("cleaned_entries", cleanupColumns, decodeCleanups),

      getCleanup,

      setPrimaryCleanup: setPrimary("cleaned_entries", cleanupColumns, decodeCleanups, "cleanup"),

      createTemplate: (userId, input) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          const id = newId() as TemplateId
          yield* sql`INSERT INTO cleanup_templates (id, user_id, name, instructions, sections, created_at, updated_at)
            VALUES (${id}, ${userId}, ${input.name}, ${input.instructions}, ${JSON.stringify(input.sections)}, ${now}, ${now})`
            .pipe(Effect.mapError(nameTaken(input.name)))
          return yield* getTemplate(userId, id).pipe(Effect.orDie)
        }),

      listTemplates: (userId) =>
        sql`SELECT ${cols(templateColumns)} FROM cleanup_templates WHERE user_id = ${userId} ORDER BY name, id`.pipe(
          Effect.mapError(storeError),
          Effect.flatMap(decodeTemplates)
        ),

      getTemplate,

      updateTemplate: (userId, id, input) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          const rows = yield* sql`UPDATE cleanup_templates SET name = ${input.name}, instructions = ${input.instructions},
              sections = ${JSON.stringify(input.sections)}, updated_at = ${now}
            WHERE id = ${id} AND user_id = ${userId} RETURNING id`.pipe(Effect.mapError(nameTaken(input.name)))
          if (rows.length === 0) return yield* new NotFound({ resource: "template", id })
          return yield* getTemplate(userId, id)
        }),

      deleteTemplate: (userId, id) =>
        Effect.gen(function*() {
          yield* lockTemplate(userId, id)
          // a statement after the lock: on PostgreSQL it sees every cleanup queued before the lock was granted
          const open = yield* sql<{ n: number | string }>`SELECT CAST(count(*) AS INTEGER) AS n FROM cleaned_entries
            WHERE template_id = ${id} AND status IN ('pending', 'processing', 'retrying')`.pipe(Effect.mapError(storeError))
          const n = Number(open[0]?.n ?? 0)
          if (n > 0) {
            return yield* new InvalidState({
              message: `template ${id} is used by ${n} queued or running cleanup(s); delete it once they finish`
            })
          }
          yield* sql`DELETE FROM cleanup_templates WHERE id = ${id} AND user_id = ${userId}`.pipe(Effect.mapError(storeError))
        }).pipe(sql.withTransaction, Effect.catchTag("SqlError", (e) => Effect.fail(storeError(e)))),

      createDestination: (input) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          const users = yield* sql`SELECT id FROM users WHERE id = ${input.userId}`.pipe(Effect.mapError(storeError))
          if (users.length === 0) return yield* new NotFound({ resource: "user", id: input.userId })
          yield* sql`INSERT INTO destinations (id, user_id, kind, name, config, sealed_secret, created_at, updated_at)
            VALUES (${input.id}, ${input.userId}, ${input.kind}, ${input.name}, ${JSON.stringify(input.config)},
              ${input.sealedSecret}, ${now}, ${now})`.pipe(Effect.mapError(storeError))
          return yield* getDestination(input.userId, input.id)
        }),

      listDestinations: (userId) =>
        sql`SELECT ${cols(destinationColumns)} FROM destinations WHERE user_id = ${userId} ORDER BY created_at, id`.pipe(
          Effect.mapError(storeError),
          Effect.flatMap(decodeDestinations)
        ),

      getDestination,

      deleteDestination: (userId, id) =>
        Effect.gen(function*() {
          yield* getDestination(userId, id)
          yield* sql`DELETE FROM deliveries WHERE destination_id = ${id} AND user_id = ${userId}`
          yield* sql`DELETE FROM destinations WHERE id = ${id} AND user_id = ${userId}`
        }).pipe(sql.withTransaction, Effect.catchTag("SqlError", (e) => Effect.fail(storeError(e)))),

      disableDestination: (userId, id, reason) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          yield* getDestination(userId, id)
          yield* sql`UPDATE destinations SET disabled_at = ${now}, disabled_reason = ${reason}, updated_at = ${now}
            WHERE id = ${id} AND user_id = ${userId} AND disabled_at IS NULL`.pipe(Effect.mapError(storeError))
        }),

      hasSealedSecrets: sql<{ id: string }>`SELECT id FROM destinations WHERE sealed_secret IS NOT NULL LIMIT 1`.pipe(
        Effect.mapError(storeError),
        Effect.map((rows) => rows.length > 0)
      ),

      queueDeliveries: (userId, entryId, options) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          yield* lockEntry(userId, entryId, now)
          const primary = yield* sql<{ id: string }>`SELECT id FROM cleaned_entries
            WHERE entry_id = ${entryId} AND is_primary = 1`.pipe(Effect.mapError(storeError))
          if (primary.length === 0) {
            return yield* new InvalidState({ message: `entry ${entryId} has no completed cleanup to deliver` })
          }
          const targets = options.destinationIds ?? (yield* deliveryTargets(userId, options.implicit))
          const ids: Array<DeliveryId> = []
          for (const destinationId of targets) {
            if (!options.implicit.includes(destinationId)) {
              const d = yield* getDestination(userId, destinationId)
              if (d.disabledAt !== null) return yield* new InvalidState({ message: `destination ${d.id} is disabled: ${d.disabledReason ?? ""}` })
            }
            const queued = yield* ensureDelivery({ entryId, userId, cleanedEntryId: primary[0]!.id, destinationId }, now)
            yield* writeEvents(queued.events, now)
            ids.push(queued.id)
          }
          return yield* Effect.forEach(ids, (id) => getDelivery(userId, id))
        }).pipe(sql.withTransaction, Effect.catchTag("SqlError", (e) => Effect.fail(storeError(e))), woke(userId)),

      getDelivery,

      listDeliveries: (userId, request) => {
        const filter = sql.and([
          sql`user_id = ${userId}`,
          ...(request.status === undefined ? [] : [sql`status = ${request.status}`]),
          ...(request.destinationId === undefined ? [] : [sql`destination_id = ${request.destinationId}`]),
          ...(request.entryId === undefined ? [] : [sql`entry_id = ${request.entryId}`])
        ])
        return page(
          sql`SELECT ${cols(deliveryColumns)} FROM deliveries WHERE ${filter}
            ORDER BY created_at DESC, id DESC LIMIT ${request.limit} OFFSET ${request.offset}`.pipe(
            Effect.mapError(storeError),
            Effect.flatMap(decodeDeliveries)
          ),
          sql`SELECT CAST(count(*) AS INTEGER) AS total FROM deliveries WHERE ${filter}`,
          request
        )
      },

      retryDelivery: (userId, id) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          const rows = yield* sql<{ id: string; entryId: string }>`UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ${now}, updated_at = ${now}
            WHERE id = ${id} AND user_id = ${userId} AND status = 'failed' RETURNING id, entry_id AS "entryId"`.pipe(Effect.mapError(storeError))
          if (rows.length === 0) {
            const delivery = yield* getDelivery(userId, id)
            return yield* new InvalidState({ message: `delivery ${id} is ${delivery.status}; only failed deliveries can be retried` })
          }
          yield* writeEvents([stageEvent("delivery", { ...rows[0]!, userId }, "pending")], now)
          return yield* getDelivery(userId, id)
        }).pipe(sql.withTransaction, Effect.catchTag("SqlError", (e) => Effect.fail(storeError(e))), woke(userId)),

      claimNext: (stage, options) => Effect.map(claimBatch(stage, { ...options, limit: 1 }), Arr.head),

      claimBatch,

      heartbeat: (job, leaseMillis) =>
        Effect.flatMap(heartbeatBatch([job], leaseMillis), ([renewed]) =>
          Option.match(renewed!, {
            onNone: () => Effect.fail(new LeaseLost({ table: stageTables[job.stage].table, id: job.id })),
            onSome: Effect.succeed
          })),

      heartbeatBatch,

      completeTranscription: (job, result) => completeOne("transcriptions", transcriptionCompletion({ job, result }), queueCleanups),

      completeTranscriptions: (items) => completeMany("transcriptions", items.map(transcriptionCompletion), queueCleanups),

      completeCleanup: (job, result, { implicit }) =>
        completeOne("cleaned_entries", cleanupCompletion({ job, result }), queueDeliveriesOf(implicit)),

      completeCleanups: (items, { implicit }) => completeMany("cleaned_entries", items.map(cleanupCompletion), queueDeliveriesOf(implicit)),

      planPieces: (job, pieces) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          const listed = sql`SELECT ${cols(pieceColumns)} FROM transcription_pieces WHERE transcription_id = ${job.id}
            ORDER BY piece_index`.pipe(Effect.mapError(storeError), Effect.flatMap(decodePieces))
          // the lease check first (and, on PostgreSQL, the row lock that serialises two planners)
          yield* fenced(job, sql`updated_at = ${now}`)
          const existing = yield* listed
          if (existing.length > 0 || pieces.length === 0) return existing
          yield* fenced(job, sql`pieces_total = ${pieces.length}`)
          for (const batch of Arr.chunksOf(pieces, 100)) {
            yield* sql`INSERT INTO transcription_pieces ${
              sql.insert(batch.map((p) => ({
                transcription_id: job.id,
                piece_index: p.index,
                start_seconds: p.start,
                end_seconds: p.end,
                overlap_seconds: p.overlap
              })))
            }`.pipe(Effect.mapError(storeError))
          }
          return yield* listed
        }).pipe(sql.withTransaction, Effect.catchTag("SqlError", (e) => Effect.fail(storeError(e)))),

      completePiece: (job, index, result) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          const rows = yield* sql`UPDATE transcription_pieces SET text = ${result.text}, segments = ${JSON.stringify(result.segments)},
              engine = ${result.engine}, language = ${result.language}, completed_at = ${now}
            WHERE transcription_id = ${job.id} AND piece_index = ${index} AND EXISTS (SELECT 1 FROM transcriptions t
              WHERE t.id = ${job.id} AND t.lease_owner = ${job.leaseOwner} AND t.status = 'processing')
            RETURNING piece_index`.pipe(Effect.mapError(storeError))
          if (rows.length === 0) return yield* new LeaseLost({ table: "transcriptions", id: job.id })
        }),

      recordExternalRef: (job, ref) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          yield* fenced(job, sql`external_ref = ${ref}, updated_at = ${now}`)
        }),

      completeDelivery: (job, ref) =>
        transition(job, "success", (now) =>
          sql`status = 'success', external_ref = ${ref}, lease_owner = NULL, lease_expires_at = NULL,
              last_error = NULL, updated_at = ${now}`),

      failTemporarily: (job, { error, nextAttemptAt }) =>
        transition(job, "retrying", (now) =>
          sql`status = 'retrying', next_attempt_at = ${nextAttemptAt.toISOString()}, last_error = ${error},
              lease_owner = NULL, lease_expires_at = NULL, updated_at = ${now}`),

      failPermanently: (job, { error }) =>
        transition(job, "failed", (now) =>
          sql`status = 'failed', last_error = ${error}, lease_owner = NULL, lease_expires_at = NULL, updated_at = ${now}`),

      releaseLease: (job) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          const { table } = stageTables[job.stage]
          const rows = yield* sql<{ status: string }>`UPDATE ${sql(table)} SET
              status = CASE WHEN last_error IS NULL THEN 'pending' ELSE 'retrying' END,
              attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END,
              next_attempt_at = ${now}, lease_owner = NULL, lease_expires_at = NULL, updated_at = ${now}
            WHERE id = ${job.id} AND lease_owner = ${job.leaseOwner} AND status = 'processing' RETURNING status`.pipe(
            Effect.mapError(storeError)
          )
          if (rows.length > 0) yield* writeEvents([stageEvent(job.stage, job, rows[0]!.status)], now)
        }).pipe(sql.withTransaction, Effect.catchTag("SqlError", (e) => Effect.fail(storeError(e))), woke(job.userId)),

      ping: sql`SELECT 1 AS ok`.pipe(Effect.mapError(storeError), Effect.asVoid),

      existingBlobKeys: (keys) =>
        // batches keep every statement well under the drivers' bound-parameter limits
        Effect.forEach(Arr.chunksOf(keys, 500), (batch) =>
          sql<{ blobKey: string }>`SELECT blob_key AS "blobKey" FROM voice_entries WHERE ${sql.in("blob_key", batch)}`.pipe(
            Effect.mapError(storeError)
          )).pipe(Effect.map((results) => new Set(results.flat().map((r) => r.blobKey)))),

      queueDepth: Effect.forEach(Object.entries(stageTables) as ReadonlyArray<[Stage, { readonly table: string }]>, ([stage, { table }]) =>
        sql<{ status: QueueDepth["status"]; rows: number | string }>`
          SELECT status, COUNT(*) AS rows FROM ${sql(table)}
          WHERE status IN ('pending', 'retrying', 'processing') GROUP BY status`.pipe(
          // PostgreSQL answers COUNT(*) as a string
          Effect.map((rows) => rows.map((r) => ({ stage, status: r.status, rows: Number(r.rows) })))
        )).pipe(Effect.map((perStage) => perStage.flat()), Effect.mapError(storeError)),

      createSession: ({ apiKeyId, expiresAt, idHash, userId }) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          yield* sql`INSERT INTO sessions (id_hash, user_id, api_key_id, created_at, expires_at)
            VALUES (${idHash}, ${userId}, ${apiKeyId}, ${now}, ${expiresAt.toISOString()})`.pipe(Effect.mapError(storeError))
        }),

      findSession: (idHash) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          const rows = yield* sql<{ apiKeyId: string; expiresAt: string; userId: string }>`SELECT s.api_key_id AS "apiKeyId",
              s.expires_at AS "expiresAt", s.user_id AS "userId"
            FROM sessions s JOIN api_keys k ON k.id = s.api_key_id
            WHERE s.id_hash = ${idHash} AND s.expires_at > ${now} AND k.revoked_at IS NULL`.pipe(Effect.mapError(storeError))
          if (rows.length === 0) return Option.none()
          const users = yield* sql`SELECT ${cols(userColumns)} FROM users WHERE id = ${rows[0]!.userId}`.pipe(
            Effect.mapError(storeError),
            Effect.flatMap(decodeUsers)
          )
          return users.length === 0 ? Option.none() : Option.some<Session>({
            user: users[0]!,
            apiKeyId: rows[0]!.apiKeyId as ApiKeyId,
            expiresAt: new Date(rows[0]!.expiresAt)
          })
        }),

      deleteSession: (idHash) =>
        sql`DELETE FROM sessions WHERE id_hash = ${idHash}`.pipe(Effect.mapError(storeError), Effect.asVoid),

      readEvents: (userId, { afterId, limit }) =>
        sql`SELECT ${cols(eventColumns)} FROM journal_events WHERE user_id = ${userId} AND id > ${afterId}
          ORDER BY id LIMIT ${limit}`.pipe(Effect.mapError(storeError), Effect.flatMap(decodeEvents)),

      lastEventId: (userId) =>
        sql<{ id: number | string | null }>`SELECT MAX(id) AS id FROM journal_events WHERE user_id = ${userId}`.pipe(
          Effect.mapError(storeError),
          Effect.map((rows) => Number(rows[0]?.id ?? 0))
        ),

      pruneExpired: ({ eventsBefore, idempotencyKeysBefore }) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          yield* sql`DELETE FROM sessions WHERE expires_at <= ${now}`
          yield* sql`DELETE FROM idempotency_keys WHERE created_at < ${idempotencyKeysBefore.toISOString()}`
          yield* sql`DELETE FROM journal_events WHERE at < ${eventsBefore.toISOString()}`
        }).pipe(Effect.mapError(storeError))
    }
    return store
  })
