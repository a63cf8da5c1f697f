import { FileSystem } from "@effect/platform"
import { NodeContext, NodeFileSystem } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { SqlClient, type Statement } from "@effect/sql"
import { SqliteClient, SqliteMigrator } from "@effect/sql-sqlite-node"
import { Domain, EntrySearch, JournalStore, Migrations, SqlJournalStore } from "@voice-journal/core"
import { JournalStoreSuite } from "@voice-journal/core/testing"
import { Context, Effect, Layer } from "effect"
import { SqliteJournalStore } from "../src/index.js"

const freshDatabase = Effect.gen(function*() {
  const fs = yield* FileSystem.FileSystem
  const dir = yield* fs.makeTempDirectoryScoped({ prefix: "vj-sqlite-" })
  return SqliteJournalStore.layer({ filename: `${dir}/journal.db` })
}).pipe(Effect.provide(NodeFileSystem.layer))

JournalStoreSuite.run("SQLite file", { freshDatabase })

describe("SQLite adapter", () => {
  it.scoped("migration 0010 moves notion_syncs rows over as deliveries to the server-wide Notion (same ids, page id kept)", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped({ prefix: "vj-sqlite-" })
      const filename = `${dir}/journal.db`
      // a database as it was before 0010, with a finished and a failed sync
      const before = Effect.map(Migrations.loader, (all) => all.filter(([id]) => id < 10))
      yield* Effect.gen(function*() {
        yield* SqliteMigrator.run({ loader: before, table: Migrations.table })
        const sql = yield* SqlClient.SqlClient
        const at = "2026-01-01T00:00:00.000Z"
        yield* sql`INSERT INTO users (id, name, created_at) VALUES ('u', 'u', ${at})`
        yield* sql`INSERT INTO voice_entries (id, user_id, blob_key, mime_type, size_bytes, sha256, created_at, updated_at) VALUES ('e', 'u', 'b', 'audio/wav', 1, 'x', ${at}, ${at})`
        yield* sql`INSERT INTO transcriptions (id, entry_id, user_id, is_primary, status, next_attempt_at, created_at, updated_at) VALUES ('t', 'e', 'u', 1, 'completed', ${at}, ${at}, ${at})`
        yield* sql`INSERT INTO cleaned_entries (id, entry_id, transcription_id, user_id, is_primary, status, next_attempt_at, created_at, updated_at) VALUES ('c', 'e', 't', 'u', 1, 'completed', ${at}, ${at}, ${at})`
        yield* sql`INSERT INTO notion_syncs (id, entry_id, cleaned_entry_id, user_id, notion_page_id, status, attempts, last_error, next_attempt_at, created_at, updated_at)
          VALUES ('s1', 'e', 'c', 'u', 'page-1', 'success', 1, NULL, ${at}, ${at}, ${at}), ('s2', 'e', 'c', 'u', NULL, 'failed', 5, '401 unauthorized', ${at}, ${at}, ${at})`
      }).pipe(Effect.provide(Layer.merge(SqliteClient.layer({ filename }), NodeContext.layer)), Effect.orDie)
      const ctx = yield* Layer.build(SqliteJournalStore.layer({ filename }))
      const store = Context.get(ctx, JournalStore.JournalStore)
      const log = yield* store.listDeliveries("u" as Domain.UserId, { limit: 20, offset: 0 })
      expect(log.items.map((d) => [d.id, d.destinationId, d.status, d.externalRef, d.attempts, d.lastError]).sort()).toEqual([
        ["s1", "server-notion", "success", "page-1", 1, null],
        ["s2", "server-notion", "failed", null, 5, "401 unauthorized"]
      ])
      // and the failed one can be retried as before
      expect((yield* store.retryDelivery("u" as Domain.UserId, "s2" as Domain.DeliveryId)).status).toBe("pending")
    }).pipe(Effect.provide(NodeFileSystem.layer)))

  it.scoped("migrations are idempotent: reopening a database applies nothing twice", () =>
    Effect.gen(function*() {
      const layer = yield* freshDatabase
      const first = yield* Layer.build(layer)
      const store = Context.get(first, JournalStore.JournalStore)
      const user = yield* store.createUser("u")
      const applied = (sql: SqlClient.SqlClient) =>
        sql<{ n: number }>`SELECT count(*) AS n FROM voice_journal_migrations`.pipe(Effect.map((rows) => rows[0]!.n))
      const once = yield* applied(Context.get(first, SqlClient.SqlClient))
      expect(once).toBeGreaterThan(0)
      const again = yield* Layer.build(layer)
      const sql = Context.get(again, SqlClient.SqlClient)
      expect(yield* applied(sql)).toBe(once)
      const users = yield* sql<{ id: string }>`SELECT id FROM users`
      expect(users.map((u) => u.id)).toEqual([user.id])
    }))

  it.scoped("migration 0009 indexes the entries already there (primary transcript, cleanup title, text and tags)", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped({ prefix: "vj-sqlite-" })
      const filename = `${dir}/journal.db`
      const raw = Context.get(yield* Layer.build(SqliteClient.layer({ filename })), SqlClient.SqlClient)
      const upTo0008 = Effect.map(Migrations.loader, (all) => all.filter(([id]) => id < 9))
      yield* SqliteMigrator.run({ loader: upTo0008, table: Migrations.table }).pipe(
        Effect.provide(NodeContext.layer),
        Effect.provideService(SqlClient.SqlClient, raw)
      )
      const t = "2026-01-01T00:00:00.000Z"
      yield* raw`INSERT INTO users (id, name, created_at) VALUES ('u1', 'u', ${t})`
      yield* raw`INSERT INTO voice_entries (id, user_id, blob_key, mime_type, size_bytes, sha256, created_at, updated_at)
        VALUES ('e1', 'u1', 'b1', 'audio/mpeg', 1, 'x', ${t}, ${t}), ('e2', 'u1', 'b2', 'audio/mpeg', 1, 'x', ${t}, ${t})`
      yield* raw`INSERT INTO transcriptions (id, entry_id, user_id, is_primary, text, status, next_attempt_at, created_at, updated_at)
        VALUES ('t1', 'e1', 'u1', 1, 'an old walk by the river', 'completed', ${t}, ${t}, ${t}),
               ('t2', 'e1', 'u1', 0, 'not primary zebra', 'completed', ${t}, ${t}, ${t})`
      yield* raw`INSERT INTO cleaned_entries (id, entry_id, transcription_id, user_id, is_primary, title, text, tags, status, next_attempt_at, created_at, updated_at)
        VALUES ('c1', 'e1', 't1', 'u1', 1, 'River', 'A walk.', '["outdoors"]', 'completed', ${t}, ${t}, ${t})`
      const store = Context.get(yield* Layer.build(SqliteJournalStore.layer({ filename })), JournalStore.JournalStore)
      const ids = (request: EntrySearch.SearchRequest) =>
        store.searchEntries("u1" as never, request).pipe(Effect.map((p) => p.items.map((e) => e.id)))
      expect(yield* ids({ q: "river" })).toEqual(["e1"])
      expect(yield* ids({ tag: "outdoors" })).toEqual(["e1"])
      expect(yield* ids({ q: "zebra" })).toEqual([])
      expect(yield* ids({ q: "walk" })).toEqual(["e1"])
      // every entry got its document, also the one with nothing transcribed yet
      const docs = yield* raw<{ n: number }>`SELECT count(*) AS n FROM entry_search`
      expect(docs[0]!.n).toBe(2)
    }).pipe(Effect.provide(NodeFileSystem.layer)))

  it.scoped("connection settings: WAL, foreign keys on, a busy timeout short enough not to freeze the event loop", () =>
    Effect.gen(function*() {
      const ctx = yield* Layer.build(yield* freshDatabase)
      const sql = Context.get(ctx, SqlClient.SqlClient)
      expect((yield* sql<{ journal_mode: string }>`PRAGMA journal_mode`)[0]!.journal_mode).toBe("wal")
      expect((yield* sql<{ foreign_keys: number }>`PRAGMA foreign_keys`)[0]!.foreign_keys).toBe(1)
      expect((yield* sql<{ timeout: number }>`PRAGMA busy_timeout`)[0]!.timeout).toBe(20)
    }))

  it.scoped(":memory: works for throw-away stores", () =>
    Effect.gen(function*() {
      const ctx = yield* Layer.build(SqliteJournalStore.layer({ filename: ":memory:" }))
      const store = Context.get(ctx, JournalStore.JournalStore)
      const user = yield* store.createUser("u")
      expect((yield* store.listEntries(user.id, { limit: 20, offset: 0 })).total).toBe(0)
    }))

  describe("query plans (EXPLAIN QUERY PLAN)", () => {
    const plan = (sql: SqlClient.SqlClient, query: string) =>
      sql.unsafe<{ detail: string }>(`EXPLAIN QUERY PLAN ${query}`).pipe(Effect.map((rows) => rows.map((r) => r.detail).join("\n")))

    it.scoped("a user's entries, newest first, come from the (user_id, created_at) index without a sort", () =>
      Effect.gen(function*() {
        const ctx = yield* Layer.build(yield* freshDatabase)
        const sql = Context.get(ctx, SqlClient.SqlClient)
        const query = `SELECT * FROM voice_entries WHERE user_id = 'u' ORDER BY created_at DESC, id DESC LIMIT 20 OFFSET 1000`
        const withIndex = yield* plan(sql, query)
        expect(withIndex).toContain("voice_entries_user_created_idx")
        expect(withIndex).not.toContain("TEMP B-TREE")
        // the check can fail: without the index SQLite scans and sorts
        yield* sql`DROP INDEX voice_entries_user_created_idx`
        // (a different statement text: the client caches prepared statements)
        const without = yield* plan(sql, `${query} -- after DROP INDEX`)
        expect(without).toContain("TEMP B-TREE")
      }))

    it.scoped("a user's deliveries by status, newest first, use the (user_id, status) index without a sort", () =>
      Effect.gen(function*() {
        const ctx = yield* Layer.build(yield* freshDatabase)
        const sql = Context.get(ctx, SqlClient.SqlClient)
        const query = `SELECT * FROM deliveries WHERE user_id = 'u' AND status = 'failed' ORDER BY created_at DESC, id DESC LIMIT 20`
        const withIndex = yield* plan(sql, query)
        expect(withIndex).toContain("deliveries_user_status_idx")
        expect(withIndex).not.toContain("TEMP B-TREE")
      }))

    it.scoped("a search (page and count) reads the FTS5 index with MATCH, then documents by rowid, not a scan", () =>
      Effect.gen(function*() {
        const ctx = yield* Layer.build(yield* freshDatabase)
        const sql = Context.get(ctx, SqlClient.SqlClient)
        const query = EntrySearch.parse("u7" as never, { q: "word42 today", tag: "garden" })
        if (typeof query === "string" || query instanceof EntrySearch.InvalidSearch) return yield* Effect.dieMessage("no query")
        const matched = SqlJournalStore.searchMatches(sql, SqliteJournalStore.search, query)
        const explain = (statement: Statement.Statement<unknown>) => {
          const [text, params] = statement.compile()
          return sql.unsafe<{ detail: string }>(`EXPLAIN QUERY PLAN ${text}`, params).pipe(
            Effect.map((rows) => rows.map((r) => r.detail).join("\n"))
          )
        }
        for (const statement of [matched.page({ limit: 20, offset: 0 }), matched.count]) {
          const plan = yield* explain(statement as unknown as Statement.Statement<unknown>)
          // ":M" = the MATCH constraint is handed to FTS5 (its index), not filtered row by row
          expect(plan).toMatch(/SCAN entry_search_fts VIRTUAL TABLE INDEX \d+:M/)
          expect(plan).toMatch(/SEARCH s USING INTEGER PRIMARY KEY/)
          expect(plan).not.toMatch(/SCAN s\b/)
        }
        // the check can fail: the same words as a LIKE scan read every document
        const like = yield* sql.unsafe<{ detail: string }>(
          `EXPLAIN QUERY PLAN SELECT entry_id FROM entry_search s WHERE s.transcript LIKE '%word42%' AND s.user_id = 'u7'`
        )
        expect(like.map((r) => r.detail).join("\n")).toMatch(/SCAN s\b/)
      }))

    it.scoped("a claim reads due rows from the partial due index in order, and expired leases from their own index, without a sort or a scan", () =>
      Effect.gen(function*() {
        const ctx = yield* Layer.build(yield* freshDatabase)
        const sql = Context.get(ctx, SqlClient.SqlClient)
        // 20,000 due rows, 1 % processing; FK checks off to seed without the parent rows
        yield* sql`PRAGMA foreign_keys = OFF`
        yield* sql`WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < 20000)
          INSERT INTO transcriptions (id, entry_id, user_id, status, attempts, next_attempt_at, lease_expires_at, created_at, updated_at)
          SELECT 't' || g, 'e' || g, 'u', CASE WHEN g % 100 = 0 THEN 'processing' ELSE 'pending' END, 0,
                 '2026-01-01T00:00:' || printf('%05d', g), '2026-02-01', 'x', 'x' FROM s`
        yield* sql`ANALYZE`
        const claim = SqliteJournalStore.dialect.claim(sql, "transcriptions", {
          owner: "w",
          now: "2026-03-01T00:00:00.000Z",
          leaseExpiresAt: "2026-03-01T00:00:10.000Z",
          limit: 4
        }) as unknown as Statement.Statement<unknown>
        const [text, params] = claim.compile()
        const explain = (suffix: string) =>
          sql.unsafe<{ detail: string }>(`EXPLAIN QUERY PLAN ${text} ${suffix}`, params).pipe(
            Effect.map((rows) => rows.map((r) => r.detail).join("\n"))
          )
        const withIndex = yield* explain("")
        expect(withIndex).toContain("transcriptions_claim_due_idx")
        expect(withIndex).toContain("transcriptions_claim_lease_idx")
        expect(withIndex).not.toContain("TEMP B-TREE")
        expect(withIndex).not.toMatch(/\bSCAN transcriptions\b/)
        // the check can fail: without the due index SQLite sorts (or scans) the backlog
        yield* sql`DROP INDEX transcriptions_claim_due_idx`
        const without = yield* explain("-- after DROP INDEX")
        expect(without).toMatch(/TEMP B-TREE|SCAN transcriptions/)
      }))
  })
})
