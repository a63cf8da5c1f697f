/**
 * `JournalStore` on PostgreSQL (`@effect/sql-pg`): any number of processes
 * on any number of machines can share one database and its work queue.
 *
 * Claims lock the chosen row with `FOR UPDATE SKIP LOCKED` inside a CTE, so
 * concurrent claimers skip each other's rows instead of waiting, and the
 * planner cannot re-run the `LIMIT` subquery and claim extra rows.
 *
 * @since 0.1.0
 */
import { NodeContext } from "@effect/platform-node"
import { type SqlError, SqlClient } from "@effect/sql"
import { PgClient, PgMigrator } from "@effect/sql-pg"
import { type EntrySearch, Errors, JournalEvents, JournalStore, Migrations, SqlJournalStore, WorkSignal } from "@voice-journal/core"
import { Deferred, Effect, Layer, Option, Redacted, Schedule, Stream } from "effect"
import * as PgPool from "./PgPool.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface PgJournalStoreConfig {
  /** `postgres://user:password@host:port/database` */
  readonly url: Redacted.Redacted<string> | string
  /** Connection pool size per process. Default 10. */
  readonly maxConnections?: number | undefined
  readonly applicationName?: string | undefined
}

/** A tsquery lexeme: single quotes, inner quotes and backslashes escaped — one lexeme, never syntax. */
const lexeme = (s: string) => `'${s.replaceAll("\\", "\\\\").replaceAll("'", "''")}'`

/** The query terms as tsquery operands, restricted to the text weights (A title/tags, B cleaned, C transcript). */
const termOperands = (query: EntrySearch.Query) =>
  query.terms.map((t, i) => lexeme(t) + (query.prefixLast && i === query.terms.length - 1 ? ":*ABC" : ":ABC"))

/**
 * The tsquery of a query: every key (weight D) and every term (weights
 * A–C; the last as a prefix if asked).
 * @since 0.1.0
 */
export const tsquery = (query: EntrySearch.Query): string =>
  [...query.keys.map((k) => `${lexeme(k)}:D`), ...termOperands(query)].join(" & ")

/**
 * Search on `entry_search.document` (a `tsvector` with a GIN index,
 * migration 0009), ranked by `ts_rank` over the terms only, with weights
 * A (title, tags) 1.0, B (cleaned text) 0.4, C (transcript) 0.2, D (keys) 0.
 * @since 0.1.0
 */
export const search: SqlJournalStore.SearchDialect = {
  matches: (sql, query) => ({
    from: sql`entry_search s`,
    where: sql`s.document @@ CAST(${tsquery(query)} AS tsquery)`,
    rank: query.terms.length === 0
      ? sql`0`
      : sql`-ts_rank('{0, 0.2, 0.4, 1.0}', s.document, CAST(${termOperands(query).join(" & ")} AS tsquery))`
  })
}

/**
 * The PostgreSQL differences: the claim query, the unique-violation code, `tsvector` search.
 * @since 0.1.0
 */
/** The claim's CTEs: expired leases first, then due rows, locked and skipped by concurrent claimers. */
const claimCtes = (sql: SqlClient.SqlClient, table: string, params: SqlJournalStore.ClaimParams) =>
  // FOR UPDATE is not allowed in a UNION: lock in two CTEs; the Append
  // under the LIMIT reads the second only while the first falls short
  sql`expired AS (
      SELECT id FROM ${sql(table)} WHERE ${SqlJournalStore.expiredLeaseCondition(sql, params.now)}
      ORDER BY lease_expires_at LIMIT ${params.limit} FOR UPDATE SKIP LOCKED),
    due AS (
      SELECT id FROM ${sql(table)} WHERE ${SqlJournalStore.dueRunCondition(sql, params.now)}
      ORDER BY next_attempt_at, id LIMIT ${params.limit} FOR UPDATE SKIP LOCKED),
    next AS (SELECT id FROM expired UNION ALL SELECT id FROM due LIMIT ${params.limit})`

const claimUpdate = (sql: SqlClient.SqlClient, table: string, params: SqlJournalStore.ClaimParams) =>
  sql`UPDATE ${sql(table)} SET ${SqlJournalStore.claimAssignments(sql, params)}
    FROM next WHERE ${sql(table)}.id = next.id`

/**
 * The PostgreSQL differences: the claim query (one statement with its
 * event and the entry), the unique-violation code, `tsvector` search, and
 * event hints by NOTIFY after commit.
 * @since 0.1.0
 */
export const dialect: SqlJournalStore.Dialect = {
  search,
  claim: (sql, table, params) =>
    sql<SqlJournalStore.ClaimedRow>`WITH ${claimCtes(sql, table, params)}
      ${claimUpdate(sql, table, params)}
      RETURNING ${sql.literal(SqlJournalStore.claimedColumns.replace(/(^|, )(\w+)/g, `$1${table}.$2`))}`,
  // one round trip instead of a transaction of four statements
  claimWithEvent: (sql, table, params) =>
    sql<SqlJournalStore.ClaimedRow & Record<string, unknown>>`WITH ${claimCtes(sql, table, params)},
      claimed AS (${claimUpdate(sql, table, params)}
        RETURNING ${sql(table)}.id, ${sql(table)}.entry_id, ${sql(table)}.user_id, ${sql(table)}.attempts, ${sql(table)}.lease_expires_at),
      event AS (${SqlJournalStore.claimEvent(sql, params.stage, params.now)})
      SELECT c.id, c.entry_id AS "entryId", c.user_id AS "userId", c.attempts, c.lease_expires_at AS "leaseExpiresAt",
        ${sql.literal(SqlJournalStore.claimedEntryColumns("e"))}
      FROM claimed c JOIN voice_entries e ON e.id = c.entry_id`,
  isUniqueViolation: (error) => (error.cause as { code?: unknown } | undefined)?.code === "23505",
  // a hint per user, which every LISTENing node's event streams wake on
  makeEventHints: (sql) => Effect.sync(() => (userId: string) => hintSender(sql)(eventsChannel, userId))
}

/**
 * Sends NOTIFY hints, on any channel. After a commit they go out coalesced:
 * a hint given while a send is in flight joins the next send, so a busy
 * node sends at most one NOTIFY statement at a time for all its channels
 * (one sender per client: the work signal and the event hints share it),
 * and never inside its write transactions, whose commits PostgreSQL would
 * otherwise serialise on the notification queue's lock. Inside a caller's
 * transaction a hint is sent in it (PostgreSQL delivers it at that
 * commit). A failed send is logged at warning: hints only cost latency when
 * lost, polling finds the work.
 */
const hintSender = (sql: SqlClient.SqlClient): ((channel: string, payload: string) => Effect.Effect<void, SqlError.SqlError>) => {
  const existing = hintSenders.get(sql)
  if (existing !== undefined) return existing
  const pending = new Map<string, [channel: string, payload: string]>()
  let sending = false
  const drain: Effect.Effect<void> = Effect.suspend(() => {
    if (pending.size === 0) {
      sending = false
      return Effect.void
    }
    const batch = [...pending.values()]
    pending.clear()
    return notifyAll(sql, batch).pipe(Effect.catchAll(notifyFailed(batch)), Effect.zipRight(drain))
  })
  const hint = (channel: string, payload: string): Effect.Effect<void, SqlError.SqlError> =>
    Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (transaction) => {
      if (Option.isSome(transaction)) return Effect.asVoid(notifyAll(sql, [[channel, payload]]))
      pending.set(JSON.stringify([channel, payload]), [channel, payload])
      if (sending) return Effect.void
      sending = true
      return Effect.asVoid(Effect.forkDaemon(drain))
    })
  hintSenders.set(sql, hint)
  return hint
}

const hintSenders = new WeakMap<SqlClient.SqlClient, (channel: string, payload: string) => Effect.Effect<void, SqlError.SqlError>>()

/** Any constant: the advisory lock key that serialises start-up migrations across nodes. */
const migrationLockKey = 7_240_213

/** The LISTEN/NOTIFY channel that carries "new events for user <payload>" hints between nodes. */
const eventsChannel = "voice_journal_events"

/**
 * Runs the migrations while holding a session advisory lock, so nodes that
 * start together migrate one after the other: the Migrator alone lets a
 * second node go on (its "locked" case) before the first has committed.
 */
const migrateExclusively = Effect.scoped(
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const lockConnection = yield* sql.reserve
    yield* lockConnection.executeUnprepared("SELECT pg_advisory_lock($1)", [migrationLockKey], undefined)
    yield* Effect.addFinalizer(() =>
      lockConnection.executeUnprepared("SELECT pg_advisory_unlock($1)", [migrationLockKey], undefined).pipe(
        Effect.ignore
      )
    )
    yield* PgMigrator.run({ loader: Migrations.loader, table: Migrations.table })
  })
)

const toStoreError = (e: { readonly message: string }) =>
  new Errors.StoreError({ message: `PostgreSQL: ${e.message}`, cause: e })

/**
 * The PostgreSQL client, schema migrated (concurrent start-ups are safe: the
 * migrations run under an advisory lock). Also provides `SqlClient` for raw SQL.
 * @since 0.1.0
 * @category layers
 */
export const layerClient = (
  config: PgJournalStoreConfig
): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, Errors.StoreError> => {
  const url = typeof config.url === "string" ? Redacted.make(config.url) : config.url
  const applicationName = config.applicationName ?? "voice-journal"
  // on a client of its own, closed once done: the lock holds one connection
  // while the migrator uses another, which a pool of one would never free
  const migrations = Layer.effectDiscard(
    migrateExclusively.pipe(
      Effect.provide(Layer.merge(PgClient.layer({ url, maxConnections: 2, applicationName }), NodeContext.layer))
    )
  )
  const client = PgClient.layerFromPool({
    acquire: PgPool.make({ url, maxConnections: config.maxConnections ?? 10, applicationName }),
    applicationName
  })
  return Layer.provideMerge(client, migrations).pipe(Layer.mapError(toStoreError))
}

/**
 * `JournalStore` (and `SqlClient`, `PgClient`) on a PostgreSQL database.
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  config: PgJournalStoreConfig
): Layer.Layer<JournalStore.JournalStore | SqlClient.SqlClient | PgClient.PgClient, Errors.StoreError> =>
  Layer.effect(
    JournalStore.JournalStore,
    // A store call is not interrupted mid-statement: @effect/sql-pg answers an
    // interruption with pg_cancel_backend, which can land on the connection's
    // next statement, someone else's (a batch of completions failed so).
    Effect.map(SqlJournalStore.make(dialect), (store) => SqlJournalStore.mapCalls(store, Effect.uninterruptible))
  ).pipe(Layer.provideMerge(layerClient(config)))


/** The LISTEN/NOTIFY channel that carries "work queued" hints between nodes. */
const channel = "voice_journal_work"

const stages: ReadonlyArray<string> = ["transcription", "cleanup", "delivery"]

/**
 * One NOTIFY statement for several payloads. `pg_notify($1, …)` because
 * `NOTIFY channel, $1` (what `PgClient.notify` sends) is a syntax error in
 * PostgreSQL, and a failed `pool.query` also destroys its connection; this
 * goes through the client's normal query path, where a failure returns the
 * connection to the pool.
 */
const notifyAll = (sql: SqlClient.SqlClient, hints: ReadonlyArray<readonly [channel: string, payload: string]>) =>
  sql`SELECT pg_notify(h->>0, h->>1) FROM json_array_elements(${JSON.stringify(hints)}) AS h`

const notifyFailed = (hints: ReadonlyArray<readonly [channel: string, payload: string]>) => (e: unknown) =>
  Effect.logWarning(`NOTIFY ${[...new Set(hints.map(([channel]) => channel))].join(", ")} failed; other nodes find the change by polling`, e)

/**
 * Sends one "work queued" hint to every node now (what the work signal's
 * coalesced sends run). A failure is logged at warning and never fails the
 * caller: the row is already committed and polling will find it.
 * @since 0.1.0
 */
export const sendWorkHint = (sql: SqlClient.SqlClient, payload: string): Effect.Effect<void> =>
  notifyAll(sql, [[channel, payload]]).pipe(Effect.asVoid, Effect.catchAll(notifyFailed([[channel, payload]])))

/**
 * Wake-ups across nodes: `notify` also sends a hint on `voice_journal_work`,
 * and every node LISTENs and wakes its own idle workers. A hint only —
 * polling stays the source of truth, so a dropped notification (or a
 * listener reconnecting) costs latency, never work.
 * @since 0.1.0
 * @category layers
 */
export const layerWorkSignal: Layer.Layer<WorkSignal.WorkSignal, never, PgClient.PgClient> = Layer.scoped(
  WorkSignal.WorkSignal,
  Effect.gen(function*() {
    const sql = yield* PgClient.PgClient
    const local = yield* WorkSignal.make
    yield* listenForHints(sql, channel, (payload) => stages.includes(payload) ? local.notify(payload as never) : Effect.void)
    const hint = hintSender(sql)
    return {
      next: local.next,
      notify: (stage) => Effect.zipRight(local.notify(stage), hint(channel, stage).pipe(Effect.catchAll(notifyFailed([[channel, stage]]))))
    }
  })
)

/**
 * LISTENs on `name` in a scoped fiber (reconnecting after a failure) and
 * hands each payload to `onHint`; returns once the LISTEN is up, or after
 * 10 s with a warning (hints from other nodes then wait for polling).
 */
const listenForHints = (
  sql: PgClient.PgClient,
  name: string,
  onHint: (payload: string) => Effect.Effect<void>
) =>
  Effect.gen(function*() {
    // a hint only this node understands: its arrival proves the LISTEN is up
    const readyToken = `listening-${globalThis.crypto.randomUUID()}`
    const listening = yield* Deferred.make<void>()
    yield* sql.listen(name).pipe(
      Stream.runForEach((payload) =>
        payload === readyToken
          ? Deferred.succeed(listening, undefined)
          : payload.startsWith("listening-")
          ? Effect.void // another node's readiness token
          : onHint(payload)
      ),
      Effect.tapErrorCause((cause) => Effect.logWarning(`LISTEN ${name} failed; reconnecting`, cause)),
      Effect.retry(Schedule.spaced("1 second")),
      Effect.forkScoped
    )
    // The layer is ready only once its LISTEN connection is: `PgClient.listen`
    // leaks that connection when it is interrupted while connecting (its
    // RcRef's acquisition scope is never closed, Effect-TS/effect#7109), and
    // the open socket kept short-lived commands (`voice-journal migrate`,
    // `users create`) from ever exiting.
    const sendReady = sql`SELECT pg_notify(${name}, ${readyToken})`.pipe(
      Effect.asVoid,
      Effect.catchAll((e) => Effect.logWarning(`NOTIFY ${name} failed while waiting for LISTEN`, e))
    )
    yield* Effect.raceFirst(
      Deferred.await(listening),
      sendReady.pipe(Effect.repeat(Schedule.spaced("200 millis")), Effect.zipRight(Effect.never))
    ).pipe(
      Effect.timeout("10 seconds"),
      Effect.catchTag("TimeoutException", () =>
        Effect.logWarning(`LISTEN ${name} not confirmed within 10 s; hints from other nodes wait for polling`))
    )
  })

/**
 * Event hints across nodes: LISTENs on `voice_journal_events` (the store's
 * `beforeEvents` NOTIFYs it with the user id at every commit that wrote
 * events) and wakes this node's event streams of that user through the
 * in-process `JournalEvents.Signal`. Give the same Signal to the store.
 * @since 0.1.0
 * @category layers
 */
export const layerEventHints: Layer.Layer<never, never, PgClient.PgClient | JournalEvents.Signal> = Layer.scopedDiscard(
  Effect.gen(function*() {
    const sql = yield* PgClient.PgClient
    const signal = yield* JournalEvents.Signal
    yield* listenForHints(sql, eventsChannel, signal.notify)
  })
)
