/**
 * The schema, as versioned migrations for the `@effect/sql` Migrator. One
 * set of SQL serves SQLite and PostgreSQL: timestamps are ISO-8601 `TEXT`
 * (compare correctly as text, bind on both drivers), flags are `INTEGER`
 * 0/1, and partial unique indexes exist on both.
 *
 * Adapters run these through their dialect's migrator at start-up
 * (`SqliteMigrator.layer` / `PgMigrator.layer` with {@link loader}); applied
 * migrations are recorded in `voice_journal_migrations`, so re-running is a
 * no-op.
 *
 * @since 0.1.0
 */
import * as Migrator from "@effect/sql/Migrator"
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

/** The migrations table name. @since 0.1.0 */
export const table = "voice_journal_migrations"

/** Columns every stage row (a work-queue item) carries. */
const stageColumns = `
  status TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at TEXT NOT NULL,
  lease_owner TEXT,
  lease_expires_at TEXT,
  started_at TEXT,
  last_error TEXT,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL`

/** Indexes the claim query needs on a stage table: due rows, and expired leases. */
const claimIndexes = (t: string) => [
  `CREATE INDEX ${t}_due_idx ON ${t} (status, next_attempt_at)`,
  `CREATE INDEX ${t}_lease_idx ON ${t} (status, lease_expires_at)`
]

const initial = [
  `CREATE TABLE users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL)`,
  `CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT)`,
  `CREATE INDEX api_keys_user_idx ON api_keys (user_id)`,
  `CREATE TABLE voice_entries (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    blob_key TEXT NOT NULL,
    original_filename TEXT,
    mime_type TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL)`,
  // "a user's entries, newest first": id breaks ties so pages are stable
  `CREATE INDEX voice_entries_user_created_idx ON voice_entries (user_id, created_at, id)`,
  `CREATE TABLE transcriptions (
    id TEXT PRIMARY KEY,
    entry_id TEXT NOT NULL REFERENCES voice_entries (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    is_primary INTEGER NOT NULL DEFAULT 0,
    make_primary INTEGER NOT NULL DEFAULT 0,
    engine TEXT,
    text TEXT,
    language TEXT,
    duration_seconds DOUBLE PRECISION,
    ${stageColumns})`,
  `CREATE INDEX transcriptions_entry_idx ON transcriptions (entry_id, created_at)`,
  `CREATE UNIQUE INDEX transcriptions_one_primary_idx ON transcriptions (entry_id) WHERE is_primary = 1`,
  ...claimIndexes("transcriptions"),
  `CREATE TABLE cleaned_entries (
    id TEXT PRIMARY KEY,
    entry_id TEXT NOT NULL REFERENCES voice_entries (id) ON DELETE CASCADE,
    transcription_id TEXT NOT NULL REFERENCES transcriptions (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    is_primary INTEGER NOT NULL DEFAULT 0,
    make_primary INTEGER NOT NULL DEFAULT 0,
    model TEXT,
    title TEXT,
    text TEXT,
    ${stageColumns})`,
  `CREATE INDEX cleaned_entries_entry_idx ON cleaned_entries (entry_id, created_at)`,
  `CREATE INDEX cleaned_entries_transcription_idx ON cleaned_entries (transcription_id)`,
  `CREATE UNIQUE INDEX cleaned_entries_one_primary_idx ON cleaned_entries (entry_id) WHERE is_primary = 1`,
  ...claimIndexes("cleaned_entries"),
  `CREATE TABLE notion_syncs (
    id TEXT PRIMARY KEY,
    entry_id TEXT NOT NULL REFERENCES voice_entries (id) ON DELETE CASCADE,
    cleaned_entry_id TEXT NOT NULL REFERENCES cleaned_entries (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    notion_page_id TEXT,
    ${stageColumns})`,
  // "a user's syncs with this status, newest first"
  `CREATE INDEX notion_syncs_user_status_idx ON notion_syncs (user_id, status, created_at, id)`,
  `CREATE INDEX notion_syncs_user_created_idx ON notion_syncs (user_id, created_at, id)`,
  `CREATE INDEX notion_syncs_entry_idx ON notion_syncs (entry_id, created_at)`,
  `CREATE INDEX notion_syncs_cleaned_entry_idx ON notion_syncs (cleaned_entry_id)`,
  ...claimIndexes("notion_syncs")
]

const run = (statements: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    for (const statement of statements) {
      yield* sql.unsafe(statement)
    }
  })

/**
 * Request budgets shared by nodes (`RequestBudget`; used by the PostgreSQL
 * adapter's `PgRequestBudget`): per budget, the GCRA time by which every
 * token handed out is paid back and a server's `Retry-After`, both in
 * milliseconds since the epoch on the database's clock. Portable DDL kept
 * with the rest of the schema (one migration history for every adapter);
 * on SQLite, where one process owns the database and the budget stays in
 * memory, the table is simply unused.
 */
const rateBudgets = [
  `CREATE TABLE rate_budgets (
    name TEXT PRIMARY KEY,
    next_at DOUBLE PRECISION NOT NULL,
    blocked_until DOUBLE PRECISION NOT NULL DEFAULT 0)`
]

/**
 * Claims served by an index in due order (`SqlJournalStore.dueRunCondition`,
 * `expiredLeaseCondition`): the old (status, next_attempt_at) index cannot
 * give rows of two statuses in next_attempt_at order, so every claim sorted
 * the whole backlog. A partial index per claimable state does: due rows in
 * (next_attempt_at, id) order, and the few running rows by lease expiry.
 * The old indexes are dropped: nothing else reads them, and every status
 * change had to update them.
 */
const claimPartialIndexes = ["transcriptions", "cleaned_entries", "notion_syncs"].flatMap((t) => [
  `DROP INDEX ${t}_due_idx`,
  `DROP INDEX ${t}_lease_idx`,
  `CREATE INDEX ${t}_claim_due_idx ON ${t} (next_attempt_at, id) WHERE status IN ('pending', 'retrying')`,
  `CREATE INDEX ${t}_claim_lease_idx ON ${t} (lease_expires_at) WHERE status = 'processing'`
])

/**
 * Destinations as a port: `destinations` (a user's configured Notion
 * databases, Markdown folders and webhooks; secrets sealed with the server
 * key) and `deliveries` (one work-queue row per cleaned entry ×
 * destination) replacing `notion_syncs`, whose rows move over as
 * deliveries to the implicit server-wide Notion destination (same ids,
 * `notion_page_id` as `external_ref`).
 */
const destinations = [
  `CREATE TABLE destinations (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    sealed_secret TEXT,
    disabled_at TEXT,
    disabled_reason TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL)`,
  `CREATE INDEX destinations_user_idx ON destinations (user_id, created_at, id)`,
  `CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    entry_id TEXT NOT NULL REFERENCES voice_entries (id) ON DELETE CASCADE,
    cleaned_entry_id TEXT NOT NULL REFERENCES cleaned_entries (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    destination_id TEXT NOT NULL,
    external_ref TEXT,
    ${stageColumns})`,
  `INSERT INTO deliveries (id, entry_id, cleaned_entry_id, user_id, destination_id, external_ref, status, attempts,
      next_attempt_at, lease_owner, lease_expires_at, started_at, last_error, created_at, updated_at)
    SELECT id, entry_id, cleaned_entry_id, user_id, 'server-notion', notion_page_id, status, attempts,
      next_attempt_at, lease_owner, lease_expires_at, started_at, last_error, created_at, updated_at FROM notion_syncs`,
  `DROP TABLE notion_syncs`,
  // the delivery log: a user's deliveries (by status, by destination), an entry's, a cleanup's
  `CREATE INDEX deliveries_user_status_idx ON deliveries (user_id, status, created_at, id)`,
  `CREATE INDEX deliveries_user_created_idx ON deliveries (user_id, created_at, id)`,
  `CREATE INDEX deliveries_destination_idx ON deliveries (destination_id, entry_id, created_at)`,
  `CREATE INDEX deliveries_entry_idx ON deliveries (entry_id, created_at)`,
  `CREATE INDEX deliveries_cleaned_entry_idx ON deliveries (cleaned_entry_id)`,
  `CREATE INDEX deliveries_claim_due_idx ON deliveries (next_attempt_at, id) WHERE status IN ('pending', 'retrying')`,
  `CREATE INDEX deliveries_claim_lease_idx ON deliveries (lease_expires_at) WHERE status = 'processing'`
]

/**
 * All migrations, in order. Append new ones; never edit an applied one.
 * @since 0.1.0
 */
export const loader: Migrator.Loader<SqlClient.SqlClient> = Migrator.fromRecord({
  "0001_initial": run(initial),
  // the audio sweep asks "which of these blob keys have an entry" for every stored blob
  "0002_voice_entries_blob_key": run([`CREATE INDEX voice_entries_blob_key_idx ON voice_entries (blob_key)`]),
  "0003_rate_budgets": run(rateBudgets),
  "0004_claim_partial_indexes": run(claimPartialIndexes),
  // a watch folder asks "does this user already have audio with this sha256" for every new file
  "0005_voice_entries_user_sha256": run([`CREATE INDEX voice_entries_user_sha256_idx ON voice_entries (user_id, sha256)`]),
  "0010_destinations": run(destinations)
})
