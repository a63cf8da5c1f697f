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
  type EntryId,
  EntrySummary,
  type Job,
  JournalEvent,
  NotionSync,
  type NotionSyncId,
  type Page,
  type Session,
  type Stage,
  Transcription,
  type TranscriptionId,
  User,
  type UserId,
  VoiceEntry
} from "./Domain.js"
import { IdempotencyKeyUsed, InvalidState, LeaseLost, NotFound, PrimaryConflict, StoreError } from "./Errors.js"
import { Signal } from "./JournalEvents.js"
import type { JournalStoreService } from "./JournalStore.js"
import { stageTables } from "./JournalStore.js"

/**
 * A row as returned by {@link Dialect.claimOne}.
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
   * Atomically claims at most one due row of `table` for `owner`: set
   * `status = 'processing'`, the lease, `attempts + 1`, and return the row's
   * {@link claimedColumns}. Take an expired lease ({@link expiredLeaseCondition},
   * oldest expiry first) if there is one, else the first due row
   * ({@link dueRunCondition}, `ORDER BY next_attempt_at, id`): two probes that
   * each read one entry of a partial index. Set with {@link claimAssignments}.
   */
  readonly claimOne: (
    sql: SqlClient.SqlClient,
    table: string,
    params: ClaimParams
  ) => Effect.Effect<ReadonlyArray<ClaimedRow>, SqlError.SqlError>
  /** True if `error` is a unique-index violation. */
  readonly isUniqueViolation: (error: SqlError.SqlError) => boolean
  /**
   * Optional. Runs in a transaction that is about to write journal events of
   * `userIds`, after every other write of it. PostgreSQL serialises these
   * transactions per user (so a user's event ids commit in order and a
   * reader resuming after id n never skips a later-committed smaller id)
   * and NOTIFYs the users' channels (delivered at commit). Single-writer
   * databases need nothing.
   */
  readonly beforeEvents?: (sql: SqlClient.SqlClient, userIds: ReadonlyArray<string>) => Effect.Effect<unknown, SqlError.SqlError>
}

/**
 * Parameters of one claim.
 * @since 0.1.0
 */
export interface ClaimParams {
  readonly owner: string
  readonly now: string
  readonly leaseExpiresAt: string
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

const stageRunColumns = `status, attempts, next_attempt_at AS "nextAttemptAt", lease_owner AS "leaseOwner",
  lease_expires_at AS "leaseExpiresAt", started_at AS "startedAt", last_error AS "lastError", created_at AS "createdAt", updated_at AS "updatedAt"`
const userColumns = `id, name, created_at AS "createdAt"`
const apiKeyColumns =
  `id, user_id AS "userId", name, key_hash AS "keyHash", created_at AS "createdAt", revoked_at AS "revokedAt"`
const entryColumns = `id, user_id AS "userId", blob_key AS "blobKey", original_filename AS "originalFilename",
  mime_type AS "mimeType", size_bytes AS "sizeBytes", sha256, created_at AS "createdAt", updated_at AS "updatedAt"`
const transcriptionColumns = `id, entry_id AS "entryId", user_id AS "userId", is_primary AS "isPrimary",
  make_primary AS "makePrimary", engine, text, language, duration_seconds AS "durationSeconds", ${stageRunColumns}`
const cleanupColumns = `id, entry_id AS "entryId", transcription_id AS "transcriptionId", user_id AS "userId",
  is_primary AS "isPrimary", make_primary AS "makePrimary", model, title, text, ${stageRunColumns}`
const notionSyncColumns = `id, entry_id AS "entryId", cleaned_entry_id AS "cleanedEntryId", user_id AS "userId",
  notion_page_id AS "notionPageId", ${stageRunColumns}`

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
  for (const k of ["attempts", "sizeBytes", "isPrimary", "makePrimary"]) {
    if (typeof r[k] === "string") r[k] = Number(r[k])
  }
  return r
}

const decodeUsers = decoder(User)
const decodeApiKeys = decoder(ApiKey)
const decodeEntries = decoder(VoiceEntry)
const decodeEntrySummaries = decoder(EntrySummary)
const decodeTranscriptions = decoder(Transcription)
const decodeCleanups = decoder(CleanedEntry)
const decodeNotionSyncs = decoder(NotionSync)
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
     * transaction (PostgreSQL's `beforeEvents` lock is then held only until
     * the commit, and never while waiting for another lock).
     */
    const writeEvents = (events: ReadonlyArray<NewEvent>, now: string) =>
      Effect.gen(function*() {
        if (events.length === 0) return
        if (dialect.beforeEvents !== undefined) yield* dialect.beforeEvents(sql, [...new Set(events.map((e) => e.userId))])
        for (const e of events) {
          yield* sql`INSERT INTO journal_events (user_id, entry_id, kind, stage, stage_id, status, at)
            VALUES (${e.userId}, ${e.entryId}, ${e.kind}, ${e.stage}, ${e.stageId}, ${e.status}, ${now})`
        }
      }).pipe(Effect.mapError(storeError))

    /** Wakes this process's event streams of `userId` once a change is written (no-op without a Signal). */
    const woke = (userId: string) => <A, E, R>(self: Effect.Effect<A, E, R>) =>
      Option.isNone(signal) ? self : Effect.tap(self, () => signal.value.notify(userId))

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
    const getNotionSync: (userId: UserId, id: NotionSyncId) => Effect.Effect<NotionSync, NotFound | StoreError> = getOwned(
      "notion_syncs",
      notionSyncColumns,
      decodeNotionSyncs,
      "notion sync"
    )

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

    const insertCleanup = (
      row: {
        readonly entryId: string
        readonly userId: string
        readonly transcriptionId: string
        readonly makePrimary: boolean
      },
      now: string
    ) => {
      const id = newId()
      return sql`INSERT INTO cleaned_entries (id, entry_id, transcription_id, user_id, make_primary, status, attempts, next_attempt_at, created_at, updated_at)
        VALUES (${id}, ${row.entryId}, ${row.transcriptionId}, ${row.userId}, ${
        row.makePrimary ? 1 : 0
      }, 'pending', 0, ${now}, ${now}, ${now})`.pipe(Effect.mapError(storeError), Effect.as(id as CleanupId))
    }

    /** Queues a sync for `cleanedEntryId` unless one is already queued or running. */
    const ensureNotionSync = (
      row: { readonly entryId: string; readonly userId: string; readonly cleanedEntryId: string },
      now: string
    ) =>
      Effect.gen(function*() {
        const open = yield* sql<{ id: string }>`SELECT id FROM notion_syncs
          WHERE cleaned_entry_id = ${row.cleanedEntryId} AND status IN ('pending', 'processing', 'retrying')`.pipe(
          Effect.mapError(storeError)
        )
        if (open.length > 0) return { id: open[0]!.id as NotionSyncId, events: [] as ReadonlyArray<NewEvent> }
        const id = newId()
        yield* sql`INSERT INTO notion_syncs (id, entry_id, cleaned_entry_id, user_id, status, attempts, next_attempt_at, created_at, updated_at)
          VALUES (${id}, ${row.entryId}, ${row.cleanedEntryId}, ${row.userId}, 'pending', 0, ${now}, ${now}, ${now})`.pipe(
          Effect.mapError(storeError)
        )
        return { id: id as NotionSyncId, events: [stageEvent("notion", { id, ...row }, "pending")] }
      })

    /** Moves the primary flag of `table` within one entry to `id`. Call inside a transaction after lockEntry. */
    const switchPrimary = (table: "transcriptions" | "cleaned_entries", entryId: string, id: string, now: string) =>
      Effect.zipRight(
        sql`UPDATE ${sql(table)} SET is_primary = 0, updated_at = ${now} WHERE entry_id = ${entryId} AND is_primary = 1 AND id <> ${id}`,
        sql`UPDATE ${sql(table)} SET is_primary = 1, updated_at = ${now} WHERE id = ${id} AND entry_id = ${entryId}`
      ).pipe(Effect.mapError(primaryConflict(table, entryId)))

    const hasPrimary = (table: "transcriptions" | "cleaned_entries", entryId: string) =>
      sql<{ id: string }>`SELECT id FROM ${sql(table)} WHERE entry_id = ${entryId} AND is_primary = 1`.pipe(
        Effect.mapError(storeError),
        Effect.map((rows) => rows.length > 0)
      )

    /**
     * The fenced update every worker write goes through: only the lease
     * holder of a `processing` row may change it.
     */
    const fenced = (job: Job, set: Statement.Fragment) => {
      const { table } = stageTables[job.stage]
      return sql<{ id: string; makePrimary: number | string }>`UPDATE ${sql(table)} SET ${set}
        WHERE id = ${job.id} AND lease_owner = ${job.leaseOwner} AND status = 'processing'
        RETURNING id, ${sql.literal(job.stage === "notion" ? "0" : "make_primary")} AS "makePrimary"`.pipe(
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
        yield* switchPrimary(table, entryId, id, now)
        return yield* inEntry
      }).pipe(sql.withTransaction, Effect.catchTag("SqlError", (e) => Effect.fail(storeError(e))))

    /**
     * Finishes a transcription or cleanup run in one transaction: writes the
     * result (fenced by the lease); makes it primary if asked to or if the
     * entry has none; and, when it is primary, queues what comes next.
     */
    const completeAndPromote = (
      job: Job,
      table: "transcriptions" | "cleaned_entries",
      result: (now: string) => Statement.Fragment,
      next: (now: string) => Effect.Effect<ReadonlyArray<NewEvent>, StoreError>
    ) =>
      Effect.gen(function*() {
        const now = yield* isoNow
        yield* lockEntry(job.userId, job.entryId, now).pipe(
          Effect.catchTag("NotFound", () => new LeaseLost({ table, id: job.id }))
        )
        const row = yield* fenced(
          job,
          sql`status = 'completed', lease_owner = NULL, lease_expires_at = NULL, last_error = NULL, ${result(now)}`
        )
        const completed = stageEvent(job.stage, job, "completed")
        const primary = Number(row.makePrimary) === 1 || !(yield* hasPrimary(table, job.entryId))
        if (!primary) return yield* writeEvents([completed], now)
        yield* switchPrimary(table, job.entryId, job.id, now).pipe(
          Effect.catchTag("PrimaryConflict", (e) => Effect.fail(new StoreError({ message: e.message, cause: e })))
        )
        const queued = yield* next(now)
        yield* writeEvents([completed, ...queued], now)
      }).pipe(sql.withTransaction, Effect.catchTag("SqlError", (e) => Effect.fail(storeError(e))), woke(job.userId))

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
          yield* sql`INSERT INTO voice_entries (id, user_id, blob_key, original_filename, mime_type, size_bytes, sha256, created_at, updated_at)
            VALUES (${id}, ${input.userId}, ${input.blobKey}, ${input.originalFilename}, ${input.mimeType}, ${input.sizeBytes}, ${input.sha256}, ${now}, ${now})`
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
          sql`SELECT p.*, t.status AS "transcriptionStatus", t.duration_seconds AS "durationSeconds",
              c.status AS "cleanupStatus", c.title AS "title", n.status AS "notionSyncStatus"
            FROM (SELECT ${cols(entryColumns)} FROM voice_entries WHERE user_id = ${userId}
              ORDER BY created_at DESC, id DESC LIMIT ${request.limit} OFFSET ${request.offset}) p
            LEFT JOIN transcriptions t ON t.id = (SELECT x.id FROM transcriptions x WHERE x.entry_id = p.id
              ORDER BY x.is_primary DESC, x.created_at DESC, x.id DESC LIMIT 1)
            LEFT JOIN cleaned_entries c ON c.id = (SELECT x.id FROM cleaned_entries x WHERE x.entry_id = p.id
              ORDER BY x.is_primary DESC, x.created_at DESC, x.id DESC LIMIT 1)
            LEFT JOIN notion_syncs n ON n.id = (SELECT x.id FROM notion_syncs x WHERE x.entry_id = p.id
              ORDER BY x.created_at DESC, x.id DESC LIMIT 1)
            ORDER BY p."createdAt" DESC, p.id DESC`.pipe(
            Effect.mapError(storeError),
            Effect.flatMap(decodeEntrySummaries)
          ),
          sql`SELECT CAST(count(*) AS INTEGER) AS total FROM voice_entries WHERE user_id = ${userId}`,
          request
        ),

      deleteEntry: (userId, entryId) =>
        Effect.gen(function*() {
          const entry = yield* getEntry(userId, entryId)
          // children first: portable even where ON DELETE CASCADE is not enforced
          yield* sql`DELETE FROM notion_syncs WHERE entry_id = ${entryId}`
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
          const id = yield* insertCleanup({ entryId, userId, transcriptionId, makePrimary: options.makePrimary }, now)
          yield* writeEvents([stageEvent("cleanup", { id, entryId, userId }, "pending")], now)
          return yield* getCleanup(userId, id)
        }).pipe(sql.withTransaction, Effect.catchTag("SqlError", (e) => Effect.fail(storeError(e))), woke(userId)),

      listCleanups: listForEntry("cleaned_entries", cleanupColumns, decodeCleanups),

      getCleanup,

      setPrimaryCleanup: setPrimary("cleaned_entries", cleanupColumns, decodeCleanups, "cleanup"),

      addNotionSync: (userId, entryId) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          yield* lockEntry(userId, entryId, now)
          const primary = yield* sql<{ id: string }>`SELECT id FROM cleaned_entries
            WHERE entry_id = ${entryId} AND is_primary = 1`.pipe(Effect.mapError(storeError))
          if (primary.length === 0) {
            return yield* new InvalidState({ message: `entry ${entryId} has no completed cleanup to sync` })
          }
          const { events, id } = yield* ensureNotionSync({ entryId, userId, cleanedEntryId: primary[0]!.id }, now)
          yield* writeEvents(events, now)
          return yield* getNotionSync(userId, id)
        }).pipe(sql.withTransaction, Effect.catchTag("SqlError", (e) => Effect.fail(storeError(e))), woke(userId)),

      getNotionSync,

      listNotionSyncs: (userId, request) =>
        page(
          sql`SELECT ${cols(notionSyncColumns)} FROM notion_syncs WHERE user_id = ${userId}
            ${request.status === undefined ? sql`` : sql`AND status = ${request.status}`}
            ORDER BY created_at DESC, id DESC LIMIT ${request.limit} OFFSET ${request.offset}`.pipe(
            Effect.mapError(storeError),
            Effect.flatMap(decodeNotionSyncs)
          ),
          sql`SELECT CAST(count(*) AS INTEGER) AS total FROM notion_syncs WHERE user_id = ${userId}
            ${request.status === undefined ? sql`` : sql`AND status = ${request.status}`}`,
          request
        ),

      listNotionSyncsForEntry: listForEntry("notion_syncs", notionSyncColumns, decodeNotionSyncs),

      retryNotionSync: (userId, id) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          const rows = yield* sql<{ id: string; entryId: string }>`UPDATE notion_syncs SET status = 'pending', attempts = 0, next_attempt_at = ${now}, updated_at = ${now}
            WHERE id = ${id} AND user_id = ${userId} AND status = 'failed' RETURNING id, entry_id AS "entryId"`.pipe(Effect.mapError(storeError))
          if (rows.length === 0) {
            const sync = yield* getNotionSync(userId, id)
            return yield* new InvalidState({ message: `notion sync ${id} is ${sync.status}; only failed syncs can be retried` })
          }
          yield* writeEvents([stageEvent("notion", { ...rows[0]!, userId }, "pending")], now)
          return yield* getNotionSync(userId, id)
        }).pipe(sql.withTransaction, Effect.catchTag("SqlError", (e) => Effect.fail(storeError(e))), woke(userId)),

      claimNext: (stage, { leaseMillis, workerId }) =>
        Effect.gen(function*() {
          const nowMs = yield* Clock.currentTimeMillis
          const now = new Date(nowMs).toISOString()
          const rows = yield* dialect.claimOne(sql, stageTables[stage].table, {
            owner: workerId,
            now,
            leaseExpiresAt: new Date(nowMs + leaseMillis).toISOString()
          }).pipe(Effect.mapError(storeError))
          if (rows.length === 0) return Option.none()
          const row = rows[0]!
          yield* writeEvents([stageEvent(stage, row, "processing")], now)
          return Option.some<Job>({
            stage,
            id: row.id,
            entryId: row.entryId as EntryId,
            userId: row.userId as UserId,
            attempts: Number(row.attempts),
            leaseOwner: workerId,
            leaseExpiresAt: new Date(row.leaseExpiresAt)
          })
        }).pipe(
          sql.withTransaction,
          Effect.catchTag("SqlError", (e) => Effect.fail(storeError(e))),
          Effect.tap((job) => Option.isSome(job) && Option.isSome(signal) ? signal.value.notify(job.value.userId) : Effect.void)
        ),

      heartbeat: (job, leaseMillis) =>
        Effect.gen(function*() {
          const nowMs = yield* Clock.currentTimeMillis
          const leaseExpiresAt = new Date(nowMs + leaseMillis)
          yield* fenced(job, sql`lease_expires_at = ${leaseExpiresAt.toISOString()}`)
          return { ...job, leaseExpiresAt }
        }),

      completeTranscription: (job, result) =>
        completeAndPromote(
          job,
          "transcriptions",
          (now) =>
            sql`text = ${result.text}, engine = ${result.engine}, language = ${result.language},
              duration_seconds = ${result.durationSeconds}, updated_at = ${now}`,
          (now) =>
            insertCleanup({ entryId: job.entryId, userId: job.userId, transcriptionId: job.id, makePrimary: true }, now).pipe(
              Effect.map((id) => [stageEvent("cleanup", { id, entryId: job.entryId, userId: job.userId }, "pending")])
            )
        ),

      completeCleanup: (job, result, { queueNotionSync }) =>
        completeAndPromote(
          job,
          "cleaned_entries",
          (now) => sql`title = ${result.title}, text = ${result.text}, model = ${result.model}, updated_at = ${now}`,
          (now) =>
            queueNotionSync
              ? ensureNotionSync({ entryId: job.entryId, userId: job.userId, cleanedEntryId: job.id }, now).pipe(Effect.map((r) => r.events))
              : Effect.succeed([])
        ),

      recordNotionPage: (job, pageId) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          yield* fenced(job, sql`notion_page_id = ${pageId}, updated_at = ${now}`)
        }),

      completeNotionSync: (job, pageId) =>
        transition(job, "success", (now) =>
          sql`status = 'success', notion_page_id = ${pageId}, lease_owner = NULL, lease_expires_at = NULL,
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
