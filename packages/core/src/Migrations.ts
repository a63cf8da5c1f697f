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
 * What the web app needs (`POST /session`, `Idempotency-Key`, `GET /events`):
 *
 * - `sessions`: browser sessions, by the SHA-256 of their random id only,
 *   with the API key they came from (revoking it ends them) and an expiry;
 * - `idempotency_keys`: one row per (user, key), unique, pointing at the
 *   entry the first upload made — concurrent retries meet at this index;
 * - `journal_events`: stage status changes and entry creations/deletions,
 *   written in the transaction of the change; the id is the SSE event id
 *   (an identity column on PostgreSQL, AUTOINCREMENT on SQLite: never reused).
 */
const webSessionsIdempotencyEvents = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const eventId = sql.onDialectOrElse({
    pg: () => "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    orElse: () => "id INTEGER PRIMARY KEY AUTOINCREMENT"
  })
  yield* run([
    `CREATE TABLE sessions (
      id_hash TEXT PRIMARY KEY,
      user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
      api_key_id TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
      created_at TEXT NOT NULL,
      expires_at TEXT NOT NULL)`,
    `CREATE INDEX sessions_api_key_idx ON sessions (api_key_id)`,
    `CREATE INDEX sessions_expires_idx ON sessions (expires_at)`,
    `CREATE TABLE idempotency_keys (
      user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
      idem_key TEXT NOT NULL,
      entry_id TEXT NOT NULL,
      created_at TEXT NOT NULL,
      PRIMARY KEY (user_id, idem_key))`,
    `CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at)`,
    `CREATE INDEX idempotency_keys_entry_idx ON idempotency_keys (entry_id)`,
    `CREATE TABLE journal_events (
      ${eventId},
      user_id TEXT NOT NULL,
      entry_id TEXT NOT NULL,
      kind TEXT NOT NULL,
      stage TEXT,
      stage_id TEXT,
      status TEXT NOT NULL,
      at TEXT NOT NULL)`,
    // "this user's events after id n", and pruning by age
    `CREATE INDEX journal_events_user_idx ON journal_events (user_id, id)`,
    `CREATE INDEX journal_events_at_idx ON journal_events (at)`
  ])
})

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
  "0007_sessions_idempotency_events": webSessionsIdempotencyEvents
})
