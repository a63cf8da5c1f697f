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
  CleanedEntry,
  type CleanupId,
  type EntryId,
  EntrySummary,
  Delivery,
  type DeliveryId,
  type DestinationId,
  type Job,
  type Page,
  serverNotionDestination,
  StoredDestination,
  Transcription,
  type TranscriptionId,
  User,
  type UserId,
  VoiceEntry
} from "./Domain.js"
import { InvalidState, LeaseLost, NotFound, PrimaryConflict, StoreError } from "./Errors.js"
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
const decodeDeliveries = decoder(Delivery)
const decodeDestinations = decoder(StoredDestination)

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
        if (open.length > 0) return open[0]!.id as DeliveryId
        const known = yield* sql<{ ref: string }>`SELECT external_ref AS ref FROM deliveries
          WHERE destination_id = ${row.destinationId} AND entry_id = ${row.entryId} AND external_ref IS NOT NULL
          ORDER BY created_at DESC, id DESC LIMIT 1`.pipe(Effect.mapError(storeError))
        const id = newId()
        yield* sql`INSERT INTO deliveries (id, entry_id, cleaned_entry_id, user_id, destination_id, external_ref, status, attempts, next_attempt_at, created_at, updated_at)
          VALUES (${id}, ${row.entryId}, ${row.cleanedEntryId}, ${row.userId}, ${row.destinationId}, ${known[0]?.ref ?? null},
            'pending', 0, ${now}, ${now}, ${now})`.pipe(Effect.mapError(storeError))
        return id as DeliveryId
      })

    /** The user's enabled destinations, then `implicit` ones. */
    const deliveryTargets = (userId: string, implicit: ReadonlyArray<DestinationId>) =>
      sql<{ id: string }>`SELECT id FROM destinations WHERE user_id = ${userId} AND disabled_at IS NULL
        ORDER BY created_at, id`.pipe(
        Effect.mapError(storeError),
        Effect.map((rows) => [...implicit, ...rows.map((r) => r.id as DestinationId)])
      )

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
      next: (now: string) => Effect.Effect<unknown, StoreError>
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
        const primary = Number(row.makePrimary) === 1 || !(yield* hasPrimary(table, job.entryId))
        if (!primary) return
        yield* switchPrimary(table, job.entryId, job.id, now).pipe(
          Effect.catchTag("PrimaryConflict", (e) => Effect.fail(new StoreError({ message: e.message, cause: e })))
        )
        yield* next(now)
      }).pipe(sql.withTransaction, Effect.catchTag("SqlError", (e) => Effect.fail(storeError(e))))

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
        }),

      createEntry: (input) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          const id = newId() as EntryId
          yield* sql`INSERT INTO voice_entries (id, user_id, blob_key, original_filename, mime_type, size_bytes, sha256, created_at, updated_at)
            VALUES (${id}, ${input.userId}, ${input.blobKey}, ${input.originalFilename}, ${input.mimeType}, ${input.sizeBytes}, ${input.sha256}, ${now}, ${now})`
            .pipe(Effect.mapError(storeError))
          const transcriptionId = yield* insertTranscription({ entryId: id, userId: input.userId, makePrimary: true }, now)
          const entry = yield* getEntry(input.userId, id).pipe(Effect.orDie)
          const transcription = yield* getTranscription(input.userId, transcriptionId).pipe(Effect.orDie)
          return { entry, transcription }
        }).pipe(sql.withTransaction, Effect.catchTag("SqlError", (e) => Effect.fail(storeError(e)))),

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
            LEFT JOIN deliveries n ON n.id = (SELECT x.id FROM deliveries x WHERE x.entry_id = p.id
              AND x.destination_id = ${serverNotionDestination} ORDER BY x.created_at DESC, x.id DESC LIMIT 1)
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
          yield* sql`DELETE FROM deliveries WHERE entry_id = ${entryId}`
          yield* sql`DELETE FROM cleaned_entries WHERE entry_id = ${entryId}`
          yield* sql`DELETE FROM transcriptions WHERE entry_id = ${entryId}`
          yield* sql`DELETE FROM voice_entries WHERE id = ${entryId} AND user_id = ${userId}`
          return entry
        }).pipe(sql.withTransaction, Effect.catchTag("SqlError", (e) => Effect.fail(storeError(e)))),

      addTranscription: (userId, entryId, { makePrimary }) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          yield* getEntry(userId, entryId)
          const id = yield* insertTranscription({ entryId, userId, makePrimary }, now)
          return yield* getTranscription(userId, id)
        }),

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
          return yield* getCleanup(userId, id)
        }),

      listCleanups: listForEntry("cleaned_entries", cleanupColumns, decodeCleanups),

      getCleanup,

      setPrimaryCleanup: setPrimary("cleaned_entries", cleanupColumns, decodeCleanups, "cleanup"),

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
            ids.push(yield* ensureDelivery({ entryId, userId, cleanedEntryId: primary[0]!.id, destinationId }, now))
          }
          return yield* Effect.forEach(ids, (id) => getDelivery(userId, id))
        }).pipe(sql.withTransaction, Effect.catchTag("SqlError", (e) => Effect.fail(storeError(e)))),

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
          const rows = yield* sql`UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ${now}, updated_at = ${now}
            WHERE id = ${id} AND user_id = ${userId} AND status = 'failed' RETURNING id`.pipe(Effect.mapError(storeError))
          if (rows.length === 0) {
            const delivery = yield* getDelivery(userId, id)
            return yield* new InvalidState({ message: `delivery ${id} is ${delivery.status}; only failed deliveries can be retried` })
          }
          return yield* getDelivery(userId, id)
        }),

      claimNext: (stage, { leaseMillis, workerId }) =>
        Effect.gen(function*() {
          const nowMs = yield* Clock.currentTimeMillis
          const rows = yield* dialect.claimOne(sql, stageTables[stage].table, {
            owner: workerId,
            now: new Date(nowMs).toISOString(),
            leaseExpiresAt: new Date(nowMs + leaseMillis).toISOString()
          }).pipe(Effect.mapError(storeError))
          if (rows.length === 0) return Option.none()
          const row = rows[0]!
          return Option.some<Job>({
            stage,
            id: row.id,
            entryId: row.entryId as EntryId,
            userId: row.userId as UserId,
            attempts: Number(row.attempts),
            leaseOwner: workerId,
            leaseExpiresAt: new Date(row.leaseExpiresAt)
          })
        }),

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
            insertCleanup({ entryId: job.entryId, userId: job.userId, transcriptionId: job.id, makePrimary: true }, now)
        ),

      completeCleanup: (job, result, { implicit }) =>
        completeAndPromote(
          job,
          "cleaned_entries",
          (now) => sql`title = ${result.title}, text = ${result.text}, model = ${result.model}, updated_at = ${now}`,
          (now) =>
            deliveryTargets(job.userId, implicit).pipe(
              Effect.flatMap((targets) =>
                Effect.forEach(targets, (destinationId) =>
                  ensureDelivery({ entryId: job.entryId, userId: job.userId, cleanedEntryId: job.id, destinationId }, now))
              )
            )
        ),

      recordExternalRef: (job, ref) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          yield* fenced(job, sql`external_ref = ${ref}, updated_at = ${now}`)
        }),

      completeDelivery: (job, ref) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          yield* fenced(
            job,
            sql`status = 'success', external_ref = ${ref}, lease_owner = NULL, lease_expires_at = NULL,
              last_error = NULL, updated_at = ${now}`
          )
        }),

      failTemporarily: (job, { error, nextAttemptAt }) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          yield* fenced(
            job,
            sql`status = 'retrying', next_attempt_at = ${nextAttemptAt.toISOString()}, last_error = ${error},
              lease_owner = NULL, lease_expires_at = NULL, updated_at = ${now}`
          )
        }),

      failPermanently: (job, { error }) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          yield* fenced(
            job,
            sql`status = 'failed', last_error = ${error}, lease_owner = NULL, lease_expires_at = NULL, updated_at = ${now}`
          )
        }),

      releaseLease: (job) =>
        Effect.gen(function*() {
          const now = yield* isoNow
          const { table } = stageTables[job.stage]
          yield* sql`UPDATE ${sql(table)} SET
              status = CASE WHEN last_error IS NULL THEN 'pending' ELSE 'retrying' END,
              attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END,
              next_attempt_at = ${now}, lease_owner = NULL, lease_expires_at = NULL, updated_at = ${now}
            WHERE id = ${job.id} AND lease_owner = ${job.leaseOwner} AND status = 'processing'`.pipe(
            Effect.mapError(storeError)
          )
        }),

      ping: sql`SELECT 1 AS ok`.pipe(Effect.mapError(storeError), Effect.asVoid),

      existingBlobKeys: (keys) =>
        // batches keep every statement well under the drivers' bound-parameter limits
        Effect.forEach(Arr.chunksOf(keys, 500), (batch) =>
          sql<{ blobKey: string }>`SELECT blob_key AS "blobKey" FROM voice_entries WHERE ${sql.in("blob_key", batch)}`.pipe(
            Effect.mapError(storeError)
          )).pipe(Effect.map((results) => new Set(results.flat().map((r) => r.blobKey))))
    }
    return store
  })
