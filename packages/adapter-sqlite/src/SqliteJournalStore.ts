/**
 * `JournalStore` on SQLite (`@effect/sql-sqlite-node`, better-sqlite3): the
 * embedded default. WAL journal, `synchronous = NORMAL` (durable across
 * process crashes; the last transactions may roll back on power loss), a
 * busy timeout so several processes can share one file, foreign keys on.
 *
 * SQLite serialises writers, so one `UPDATE … WHERE id = (SELECT … LIMIT 1)
 * RETURNING` claims a row atomically without `SKIP LOCKED`.
 *
 * @since 0.1.0
 */
import { NodeContext } from "@effect/platform-node"
import type { SqlClient } from "@effect/sql"
import { SqliteClient, SqliteMigrator } from "@effect/sql-sqlite-node"
import { Errors, JournalStore, Migrations, SqlJournalStore } from "@voice-journal/core"
import { Duration, Effect, Layer } from "effect"

/**
 * @since 0.1.0
 * @category models
 */
export interface SqliteJournalStoreConfig {
  /** A file path, or `:memory:` (one connection, gone when the layer closes). */
  readonly filename: string
  /** How long a writer waits for another process's lock. Default 10 seconds. */
  readonly busyTimeout?: Duration.DurationInput | undefined
}

/**
 * The SQLite differences: the claim query and the unique-violation code.
 * @since 0.1.0
 */
export const dialect: SqlJournalStore.Dialect = {
  claimOne: (sql, table, params) =>
    sql<SqlJournalStore.ClaimedRow>`UPDATE ${sql(table)} SET ${SqlJournalStore.claimAssignments(sql, params)}
      WHERE id = (SELECT id FROM ${sql(table)} WHERE ${SqlJournalStore.dueCondition(sql, params.now)}
                  ORDER BY next_attempt_at, id LIMIT 1)
      RETURNING ${sql.literal(SqlJournalStore.claimedColumns)}`,
  isUniqueViolation: (error) => {
    const code = (error.cause as { code?: unknown } | undefined)?.code
    return code === "SQLITE_CONSTRAINT_UNIQUE" || code === "SQLITE_CONSTRAINT_PRIMARYKEY"
  }
}

const toStoreError = (e: { readonly message: string }) =>
  new Errors.StoreError({ message: `SQLite: ${e.message}`, cause: e })

/**
 * The SQLite client with voice-journal's connection settings, schema
 * migrated. Also provides `SqlClient` for callers that need raw SQL.
 * @since 0.1.0
 * @category layers
 */
export const layerClient = (
  config: SqliteJournalStoreConfig
): Layer.Layer<SqliteClient.SqliteClient | SqlClient.SqlClient, Errors.StoreError> => {
  const busyMillis = Duration.toMillis(Duration.decode(config.busyTimeout ?? "10 seconds"))
  const client = SqliteClient.layer({ filename: config.filename })
  const pragmas = Layer.effectDiscard(
    Effect.gen(function*() {
      const sql = yield* SqliteClient.SqliteClient
      yield* sql.unsafe(`PRAGMA busy_timeout = ${Math.round(busyMillis)}`)
      yield* sql.unsafe("PRAGMA foreign_keys = ON")
      yield* sql.unsafe("PRAGMA synchronous = NORMAL")
    })
  )
  const migrations = SqliteMigrator.layer({ loader: Migrations.loader, table: Migrations.table }).pipe(
    Layer.provide(NodeContext.layer)
  )
  return Layer.provideMerge(migrations.pipe(Layer.provideMerge(pragmas)), client).pipe(
    Layer.mapError(toStoreError)
  )
}

/**
 * `JournalStore` (and `SqlClient`) on a SQLite file.
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  config: SqliteJournalStoreConfig
): Layer.Layer<JournalStore.JournalStore | SqlClient.SqlClient, Errors.StoreError> =>
  Layer.effect(JournalStore.JournalStore, SqlJournalStore.make(dialect)).pipe(
    Layer.provideMerge(layerClient(config))
  ) as Layer.Layer<JournalStore.JournalStore | SqlClient.SqlClient, Errors.StoreError>
