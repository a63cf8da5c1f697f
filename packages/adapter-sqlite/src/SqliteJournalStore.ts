/**
 * `JournalStore` on SQLite (`@effect/sql-sqlite-node`, better-sqlite3): the
 * embedded default, for ONE server process (several nodes: use PostgreSQL).
 * WAL journal (readers never wait for a writer), `synchronous = NORMAL`
 * (durable across process crashes; the last transactions may roll back on
 * power loss), foreign keys on.
 *
 * SQLite serialises writers, so one `UPDATE … WHERE id = (SELECT … LIMIT 1)
 * RETURNING` claims a row atomically without `SKIP LOCKED`.
 *
 * **Another process holding the lock** (a backup, a `sqlite3` shell in
 * `BEGIN EXCLUSIVE`). better-sqlite3 is synchronous: while SQLite's busy
 * handler waits, the whole event loop waits with it. So the busy timeout is
 * tiny ({@link SqliteJournalStoreConfig.busyTimeout}) and a store call that
 * meets `SQLITE_BUSY`/`SQLITE_LOCKED` is retried with an Effect `Schedule`
 * that sleeps between attempts (the loop keeps serving) until
 * {@link SqliteJournalStoreConfig.busyWait} has passed; then it fails with a
 * `StoreError` marked `busy`. Every store call runs as one transaction, so a
 * retry repeats all of it, never half of one.
 *
 * @since 0.1.0
 */
import { NodeContext } from "@effect/platform-node"
import { SqlClient } from "@effect/sql"
import type { SqlError } from "@effect/sql"
import { SqliteClient, SqliteMigrator } from "@effect/sql-sqlite-node"
import { type EntrySearch, Errors, JournalStore, Migrations, SqlJournalStore } from "@voice-journal/core"
import { Duration, Effect, Layer, Option, Schedule } from "effect"

/**
 * @since 0.1.0
 * @category models
 */
export interface SqliteJournalStoreConfig {
  /** A file path, or `:memory:` (one connection, gone when the layer closes). */
  readonly filename: string
  /**
   * How long ONE statement waits, synchronously, for another process's lock
   * before SQLite reports it busy. It blocks the event loop, so keep it to
   * tens of milliseconds. Default 20 ms.
   */
  readonly busyTimeout?: Duration.DurationInput | undefined
  /**
   * How long a store call keeps retrying (asynchronously) while the database
   * is locked by another process, before it fails with a busy `StoreError`.
   * Also how long start-up migrations wait for a lock. Default 5 seconds.
   */
  readonly busyWait?: Duration.DurationInput | undefined
}

/** An FTS5 string: double quotes, inner ones doubled — whatever is inside is one term, never syntax. */
const ftsString = (s: string) => `"${s.replaceAll("\"", "\"\"")}"`

/**
 * The FTS5 MATCH expression of a query: every key in `match_keys`, every
 * term in the text columns (the last as a prefix if asked).
 * @since 0.1.0
 */
export const matchExpression = (query: EntrySearch.Query): string => {
  const keys = `match_keys : (${query.keys.map(ftsString).join(" AND ")})`
  if (query.terms.length === 0) return keys
  const last = query.terms.length - 1
  const terms = query.terms.map((t, i) => ftsString(t) + (query.prefixLast && i === last ? "*" : "")).join(" AND ")
  return `${keys} AND {title tags cleaned transcript} : (${terms})`
}

/** Column weights of the rank: a hit in the title or tags counts 10, in the cleaned text 2, in the transcript 1. */
const rankWeights = [["title", 10], ["tags", 10], ["cleaned", 2], ["transcript", 1]] as const

/**
 * Search on the FTS5 table `entry_search_fts` (migration 0009): MATCH finds
 * the rows; the rank adds, per query term, the weights of the document
 * columns that contain it (the last term as a prefix), read from the
 * matched rows only. Not bm25: its IDF reads the whole posting list of every
 * term, which for a word in half the journal cost 40× the rest of the query
 * (`pnpm bench:search`).
 * @since 0.1.0
 */
export const search: SqlJournalStore.SearchDialect = {
  matches: (sql, query) => {
    const last = query.terms.length - 1
    // documents are folded words separated by single spaces: ' word ' is a whole word, ' word' a prefix
    const hits = query.terms.flatMap((term, i) => {
      const needle = query.prefixLast && i === last ? ` ${term}` : ` ${term} `
      return rankWeights.map(([column, weight]) =>
        sql`${sql.literal(String(weight))} * (instr(' ' || s.${sql.literal(column)} || ' ', ${needle}) > 0)`
      )
    })
    return {
      from: sql`entry_search_fts JOIN entry_search s ON s.doc_id = entry_search_fts.rowid`,
      where: sql`entry_search_fts MATCH ${matchExpression(query)}`,
      rank: hits.length === 0 ? sql`0` : sql`-(${sql.join(" + ", false)(hits)})`
    }
  }
}

/**
 * The SQLite differences: the claim query, the unique-violation code, FTS5 search.
 * @since 0.1.0
 */
export const dialect: SqlJournalStore.Dialect = {
  search,
  claim: (sql, table, params) =>
    // one writer at a time: the subqueries cannot race another claimer
    sql<SqlJournalStore.ClaimedRow>`UPDATE ${sql(table)} SET ${SqlJournalStore.claimAssignments(sql, params)}
      WHERE id IN (
        SELECT id FROM (SELECT id FROM ${sql(table)} WHERE ${SqlJournalStore.expiredLeaseCondition(sql, params.now)}
          ORDER BY lease_expires_at LIMIT ${params.limit})
        UNION ALL
        SELECT id FROM (SELECT id FROM ${sql(table)} WHERE ${SqlJournalStore.dueRunCondition(sql, params.now)}
          ORDER BY next_attempt_at, id LIMIT ${params.limit})
        LIMIT ${params.limit})
      RETURNING ${sql.literal(SqlJournalStore.claimedColumns)}`,
  isUniqueViolation: (error) => {
    const code = (error.cause as { code?: unknown } | undefined)?.code
    return code === "SQLITE_CONSTRAINT_UNIQUE" || code === "SQLITE_CONSTRAINT_PRIMARYKEY"
  }
}

const toStoreError = (e: { readonly message: string }) =>
  new Errors.StoreError({ message: `SQLite: ${e.message}`, cause: e })

const millis = (d: Duration.DurationInput) => Math.round(Duration.toMillis(Duration.decode(d)))

/**
 * True if `u` (or one of its causes) is SQLite's "database is busy/locked":
 * another connection holds a lock we need (`SQLITE_BUSY`, `SQLITE_BUSY_SNAPSHOT`,
 * `SQLITE_LOCKED`, …).
 * @since 0.1.0
 */
export const isBusy = (u: unknown, depth = 0): boolean => {
  if (depth > 6 || typeof u !== "object" || u === null) return false
  const code = (u as { code?: unknown }).code
  if (typeof code === "string" && (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED"))) return true
  return isBusy((u as { cause?: unknown }).cause, depth + 1)
}

/**
 * The SQLite client with voice-journal's connection settings, schema
 * migrated. Also provides `SqlClient` for callers that need raw SQL.
 * @since 0.1.0
 * @category layers
 */
export const layerClient = (
  config: SqliteJournalStoreConfig
): Layer.Layer<SqliteClient.SqliteClient | SqlClient.SqlClient, Errors.StoreError> => {
  const client = SqliteClient.layer({ filename: config.filename })
  const setup = Layer.effectDiscard(
    Effect.gen(function*() {
      const sql = yield* SqliteClient.SqliteClient
      yield* sql.unsafe("PRAGMA foreign_keys = ON")
      yield* sql.unsafe("PRAGMA synchronous = NORMAL")
      // nothing is served yet, so migrations may wait for a lock synchronously
      yield* sql.unsafe(`PRAGMA busy_timeout = ${millis(config.busyWait ?? "5 seconds")}`)
      yield* SqliteMigrator.run({ loader: Migrations.loader, table: Migrations.table }).pipe(Effect.provide(NodeContext.layer))
      yield* sql.unsafe(`PRAGMA busy_timeout = ${millis(config.busyTimeout ?? "20 millis")}`)
    })
  )
  return Layer.provideMerge(setup, client).pipe(Layer.mapError(toStoreError))
}

/**
 * The busy retries: short waits growing from 10 ms to at most 200 ms
 * (jittered), for `budget` in total.
 */
const busySchedule = (budget: Duration.DurationInput) =>
  Schedule.exponential("10 millis", 2).pipe(
    Schedule.union(Schedule.spaced("200 millis")),
    Schedule.jittered,
    Schedule.upTo(budget)
  )

const busyMessage = "the database is busy (locked by another process)"

/**
 * Wraps every method of `store`: each call runs as one transaction, retried
 * while SQLite reports it busy, then failed with a busy `StoreError`.
 *
 * - `ping` is not retried: readiness must answer at once. It takes the write
 *   lock for an instant (`BEGIN IMMEDIATE` … `ROLLBACK`), since a plain
 *   `SELECT 1` succeeds while another process holds the lock.
 * - `claimNext` and `claimBatch` are not retried: the worker's next poll is its retry.
 * - inside a caller's own transaction nothing is retried (that would repeat
 *   half of it); the busy failure goes up to whoever owns the transaction.
 */
const withBusyRetry = (
  store: JournalStore.JournalStoreService,
  sql: SqlClient.SqlClient,
  budget: Duration.DurationInput
): JournalStore.JournalStoreService => {
  const schedule = busySchedule(budget)
  const markBusy = <E>(e: E): E | Errors.StoreError =>
    isBusy(e) ? new Errors.StoreError({ message: busyMessage, busy: true, cause: e }) : e
  const once = <A, E, R>(self: Effect.Effect<A, E, R>) =>
    sql.withTransaction(self).pipe(
      Effect.catchIf((e): e is SqlError.SqlError => (e as { _tag?: unknown })._tag === "SqlError", (e) => Effect.fail(toStoreError(e)))
    ) as Effect.Effect<A, E | Errors.StoreError, R>
  const wrap = <A, E, R>(self: Effect.Effect<A, E, R>, retry: boolean) =>
    Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (outer) =>
      (retry && Option.isNone(outer)
        // the schedule's driver is made at the first busy answer: most calls never meet one
        ? Effect.catchIf(once(self), isBusy, () => Effect.retry(once(self), { schedule, while: isBusy }))
        : once(self)).pipe(
        Effect.mapError(markBusy)
      ))

  const wrapped = SqlJournalStore.mapCalls(store, (call, name) => wrap(call, name !== "ping" && name !== "claimNext" && name !== "claimBatch"))
  const ping = Effect.scoped(
    Effect.gen(function*() {
      const conn = yield* sql.reserve
      yield* Effect.acquireRelease(
        conn.executeUnprepared("BEGIN IMMEDIATE", [], undefined),
        // a ROLLBACK of an empty transaction cannot fail unless the connection is broken: that is a defect
        () => Effect.orDie(conn.executeUnprepared("ROLLBACK", [], undefined))
      )
    })
  ).pipe(Effect.mapError((e) => (isBusy(e) ? new Errors.StoreError({ message: busyMessage, busy: true, cause: e }) : toStoreError(e))))
  return { ...wrapped, ping }
}

/**
 * `JournalStore` (and `SqlClient`) on a SQLite file.
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  config: SqliteJournalStoreConfig
): Layer.Layer<JournalStore.JournalStore | SqlClient.SqlClient, Errors.StoreError> =>
  Layer.effect(
    JournalStore.JournalStore,
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const store = yield* SqlJournalStore.make(dialect)
      return withBusyRetry(store, sql, config.busyWait ?? "5 seconds")
    })
  ).pipe(Layer.provideMerge(layerClient(config))) as Layer.Layer<JournalStore.JournalStore | SqlClient.SqlClient, Errors.StoreError>
