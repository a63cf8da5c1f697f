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
import * as SqlJournalStore from "./SqlJournalStore.js"

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

/** The columns of a search document (`EntrySearch.SearchDocument`), the same on every dialect. */
const searchDocumentColumns = `
  user_id TEXT NOT NULL,
  created_at TEXT NOT NULL,
  match_keys TEXT NOT NULL,
  title TEXT NOT NULL,
  tags TEXT NOT NULL,
  cleaned TEXT NOT NULL,
  transcript TEXT NOT NULL`

/**
 * Full-text search (`EntrySearch`): one document per entry in `entry_search`,
 * written by `SqlJournalStore` with the writes that change it, and indexed
 * by the database. The index is the one place the dialects differ:
 * - SQLite: an external-content FTS5 table over `entry_search` (the text is
 *   stored once), kept in step by the FTS5 documentation's three triggers;
 *   `doc_id` is the stable integer rowid FTS5 needs.
 * - PostgreSQL: a generated `tsvector` with one weight per column (A title
 *   and tags, B cleaned text, C transcript, D the owner and tag keys) and a
 *   GIN index. Config `simple`: the text is already folded into words.
 * Then every existing entry gets its document, in batches.
 */
const entrySearch = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const textColumns = "match_keys, title, tags, cleaned, transcript"
  const old = textColumns.split(", ").map((c) => `old.${c}`).join(", ")
  const fresh = textColumns.split(", ").map((c) => `new.${c}`).join(", ")
  const statements = sql.onDialectOrElse({
    pg: () => [
      `CREATE TABLE entry_search (
        entry_id TEXT PRIMARY KEY REFERENCES voice_entries (id) ON DELETE CASCADE,
        ${searchDocumentColumns},
        document tsvector GENERATED ALWAYS AS (
          setweight(to_tsvector('simple', match_keys), 'D') || setweight(to_tsvector('simple', title), 'A') ||
          setweight(to_tsvector('simple', tags), 'A') || setweight(to_tsvector('simple', cleaned), 'B') ||
          setweight(to_tsvector('simple', transcript), 'C')) STORED)`,
      `CREATE INDEX entry_search_document_idx ON entry_search USING gin (document)`
    ],
    sqlite: () => [
      `CREATE TABLE entry_search (
        doc_id INTEGER PRIMARY KEY,
        entry_id TEXT NOT NULL UNIQUE REFERENCES voice_entries (id) ON DELETE CASCADE,
        ${searchDocumentColumns})`,
      `CREATE VIRTUAL TABLE entry_search_fts USING fts5(${textColumns}, content = 'entry_search', content_rowid = 'doc_id')`,
      `CREATE TRIGGER entry_search_ai AFTER INSERT ON entry_search BEGIN
        INSERT INTO entry_search_fts (rowid, ${textColumns}) VALUES (new.doc_id, ${fresh}); END`,
      `CREATE TRIGGER entry_search_ad AFTER DELETE ON entry_search BEGIN
        INSERT INTO entry_search_fts (entry_search_fts, rowid, ${textColumns}) VALUES ('delete', old.doc_id, ${old}); END`,
      `CREATE TRIGGER entry_search_au AFTER UPDATE ON entry_search BEGIN
        INSERT INTO entry_search_fts (entry_search_fts, rowid, ${textColumns}) VALUES ('delete', old.doc_id, ${old});
        INSERT INTO entry_search_fts (rowid, ${textColumns}) VALUES (new.doc_id, ${fresh}); END`
    ],
    // another dialect: the documents only; its own `SearchDialect` decides how to read them
    orElse: () => [
      `CREATE TABLE entry_search (
        entry_id TEXT PRIMARY KEY REFERENCES voice_entries (id) ON DELETE CASCADE,
        ${searchDocumentColumns})`
    ]
  })
  yield* run(statements)
  let after = ""
  for (;;) {
    const batch = yield* sql<{ id: string }>`SELECT id FROM voice_entries WHERE id > ${after} ORDER BY id LIMIT 500`
    if (batch.length === 0) break
    yield* SqlJournalStore.refreshSearchDocuments(sql, batch.map((r) => r.id))
    after = batch[batch.length - 1]!.id
  }
})

/**
 * Structured cleanups (issue 10, part 1): what a template asks the model for
 * besides title and text, stored as JSON text (portable: SQLite has no JSON
 * type, and nothing queries inside these columns), and the per-user
 * templates. `template_id` NULL means the built-in journal template; it has
 * no foreign key because a cleanup keeps the id of the template it was
 * written with after that template is deleted (`JournalStore.deleteTemplate`
 * refuses only while a cleanup with it is still queued or running).
 */
const structuredCleanups = [
  `ALTER TABLE cleaned_entries ADD COLUMN summary TEXT`,
  `ALTER TABLE cleaned_entries ADD COLUMN action_items TEXT`,
  `ALTER TABLE cleaned_entries ADD COLUMN tags TEXT`,
  `ALTER TABLE cleaned_entries ADD COLUMN sections TEXT`,
  `ALTER TABLE cleaned_entries ADD COLUMN template_id TEXT`,
  `CREATE INDEX cleaned_entries_template_idx ON cleaned_entries (template_id)`,
  `CREATE TABLE cleanup_templates (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    instructions TEXT NOT NULL,
    sections TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL)`,
  `CREATE UNIQUE INDEX cleanup_templates_user_name_idx ON cleanup_templates (user_id, name)`
]

/**
 * Long recordings are transcribed in pieces (`AudioPieces`, `Pipeline`):
 * each run's planned pieces, keyed by run and index, with each piece's
 * transcript stored as it completes — a resumed run sends only the
 * unfinished ones again. The run keeps its stitched segments (JSON) and how
 * many pieces it has.
 */
const transcriptionPieces = [
  `CREATE TABLE transcription_pieces (
    transcription_id TEXT NOT NULL REFERENCES transcriptions (id) ON DELETE CASCADE,
    piece_index INTEGER NOT NULL,
    start_seconds DOUBLE PRECISION NOT NULL,
    end_seconds DOUBLE PRECISION NOT NULL,
    overlap_seconds DOUBLE PRECISION NOT NULL,
    text TEXT,
    segments TEXT,
    engine TEXT,
    language TEXT,
    completed_at TEXT,
    PRIMARY KEY (transcription_id, piece_index))`,
  `ALTER TABLE transcriptions ADD COLUMN segments TEXT`,
  `ALTER TABLE transcriptions ADD COLUMN pieces_total INTEGER`
]

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
  "0006_transcription_pieces": run(transcriptionPieces),
  "0007_sessions_idempotency_events": webSessionsIdempotencyEvents,
  "0008_structured_cleanups": run(structuredCleanups),
  "0009_entry_search": entrySearch,
  "0010_destinations": run(destinations),
  // the upload's trace (W3C ids, hex): the pipeline's stage spans join it, so one trace runs from upload to Notion page
  "0011_voice_entries_trace": run([
    `ALTER TABLE voice_entries ADD COLUMN trace_id TEXT`,
    `ALTER TABLE voice_entries ADD COLUMN span_id TEXT`
  ])
})
