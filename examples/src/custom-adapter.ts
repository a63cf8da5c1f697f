/**
 * Skeleton of a custom storage adapter. A storage adapter is any Layer that
 * provides `JournalStore.JournalStore`. If your database speaks
 * `@effect/sql`, you only write what differs between dialects — here, a
 * claim query for a database without `SKIP LOCKED` but with one writer at a
 * time (like SQLite) — and reuse the shared SQL. Then run the conformance
 * suite against it (see `custom-adapter.test.ts`):
 *
 *   pnpm --filter @voice-journal/examples test
 *
 * The shared SQL covers the whole port, including `existingBlobKeys` (the
 * audio sweep's "which of these blobs does an entry point to", an indexed
 * `blob_key IN (…)` in batches). A store written from scratch must answer it
 * too: a key it wrongly leaves out is audio the sweep deletes.
 */
import { NodeContext } from "@effect/platform-node"
import { SqliteClient, SqliteMigrator } from "@effect/sql-sqlite-node"
import { SqliteJournalStore } from "@voice-journal/adapter-sqlite"
import { JournalStore, Migrations, SqlJournalStore } from "@voice-journal/core"
import { Layer } from "effect"

/**
 * The three things a dialect must say. (The simplest correct claim; the
 * bundled SQLite adapter probes `expiredLeaseCondition` and then
 * `dueRunCondition` separately, so each is served by its partial index.)
 */
export const dialect: SqlJournalStore.Dialect = {
  claim: (sql, table, params) =>
    sql<SqlJournalStore.ClaimedRow>`UPDATE ${sql(table)} SET ${SqlJournalStore.claimAssignments(sql, params)}
      WHERE id IN (SELECT id FROM ${sql(table)} WHERE ${SqlJournalStore.dueCondition(sql, params.now)}
                   ORDER BY next_attempt_at, id LIMIT ${params.limit})
      RETURNING ${sql.literal(SqlJournalStore.claimedColumns)}`,
  isUniqueViolation: (error) => String((error.cause as { code?: unknown } | undefined)?.code).startsWith("SQLITE_CONSTRAINT"),
  // full-text search: on SQLite, the bundled adapter's FTS5 queries (migration 0009 made the index)
  search: SqliteJournalStore.search
}

/** Your client + the shared migrations + the shared store. */
export const layer = (filename: string) =>
  Layer.effect(JournalStore.JournalStore, SqlJournalStore.make(dialect)).pipe(
    Layer.provideMerge(
      SqliteMigrator.layer({ loader: Migrations.loader, table: Migrations.table }).pipe(
        Layer.provide(NodeContext.layer),
        Layer.provideMerge(SqliteClient.layer({ filename }))
      )
    )
  )
