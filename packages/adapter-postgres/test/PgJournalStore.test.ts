import { describe, expect, it } from "@effect/vitest"
import { SqlClient, type Statement } from "@effect/sql"
import { EntrySearch, JournalStore, Migrations, SqlJournalStore } from "@voice-journal/core"
import { JournalStoreSuite } from "@voice-journal/core/testing"
import { Context, Effect, Layer } from "effect"
import { PgJournalStore, PgTestDatabase } from "../src/index.js"

const freshDatabase = PgTestDatabase.freshDatabase().pipe(
  Effect.map((url) => PgJournalStore.layer({ url, maxConnections: 4 }))
)

JournalStoreSuite.run("PostgreSQL", { freshDatabase })

describe("PostgreSQL adapter", () => {
  const connect = Effect.gen(function*() {
    const ctx = yield* Layer.build(yield* freshDatabase)
    return Context.get(ctx, SqlClient.SqlClient)
  })

  it.scoped("concurrent start-ups migrate once", () =>
    Effect.gen(function*() {
      const layer = yield* freshDatabase
      yield* Effect.all([Layer.build(layer), Layer.build(layer), Layer.build(layer)], { concurrency: "unbounded" })
      const sql = Context.get(yield* Layer.build(layer), SqlClient.SqlClient)
      const rows = yield* sql<{ n: number }>`SELECT CAST(count(*) AS INTEGER) AS n FROM voice_journal_migrations`
      // each migration recorded once, however many nodes started together
      expect(rows[0]!.n).toBe((yield* Migrations.loader.pipe(Effect.provideService(SqlClient.SqlClient, sql))).length)
    }))

  it.scoped("a pool of one connection migrates and serves, also with other nodes starting at once", () =>
    Effect.gen(function*() {
      const url = yield* PgTestDatabase.freshDatabase()
      const layer = PgJournalStore.layer({ url, maxConnections: 1 })
      const [a] = yield* Effect.all([Layer.build(layer), Layer.build(layer)], { concurrency: "unbounded" }).pipe(
        Effect.timeoutFail({ duration: "30 seconds", onTimeout: () => new Error("start-up with one connection never finished") })
      )
      const store = Context.get(a, JournalStore.JournalStore)
      const user = yield* store.createUser("one-connection")
      expect((yield* store.getUser(user.id)).name).toBe("one-connection")
    }))

  it.scoped("statements are prepared once per connection, except those with a `*`; a prepared one survives another node's migration", () =>
    Effect.gen(function*() {
      const url = yield* PgTestDatabase.freshDatabase()
      // one connection: every statement below runs on it, and pg_prepared_statements is per connection
      const ctx = yield* Layer.build(PgJournalStore.layer({ url, maxConnections: 1 }))
      const store = Context.get(ctx, JournalStore.JournalStore)
      const sql = Context.get(ctx, SqlClient.SqlClient)
      const user = yield* store.createUser("prepared")
      yield* store.getUser(user.id)
      yield* sql`SELECT * FROM users WHERE id = ${user.id}`
      const prepared = (like: string) =>
        sql<{ name: string }>`SELECT name FROM pg_prepared_statements WHERE statement LIKE ${like}`.pipe(
          Effect.map((rows) => rows.map((r) => r.name))
        )
      const getUser = yield* prepared("SELECT%FROM users WHERE id = $1")
      expect(getUser).toHaveLength(1)
      expect(getUser[0]).toMatch(/^vj_/)
      expect(yield* prepared("SELECT * FROM users%")).toEqual([])
      // the same text again: still one statement, not a second
      yield* store.getUser(user.id)
      expect(yield* prepared("SELECT%FROM users WHERE id = $1")).toEqual(getUser)

      // another node migrates (a new column): explicit column lists are re-planned, not broken
      const other = Context.get(yield* Layer.build(PgJournalStore.layer({ url, maxConnections: 1 })), SqlClient.SqlClient)
      yield* other`ALTER TABLE users ADD COLUMN nickname TEXT`
      expect((yield* store.getUser(user.id)).name).toBe("prepared")
      expect(yield* sql<{ nickname: string | null }>`SELECT * FROM users WHERE id = ${user.id}`).toMatchObject([{ nickname: null }])
    }))

  describe("query plans (EXPLAIN)", () => {
    /** Enough rows that the planner prefers an index when it can use one. */
    const seed = (sql: SqlClient.SqlClient) =>
      Effect.gen(function*() {
        yield* sql`INSERT INTO users (id, name, created_at) SELECT 'u' || g, 'user', '2026-01-01T00:00:00.000Z' FROM generate_series(1, 20) g`
        yield* sql`INSERT INTO voice_entries (id, user_id, blob_key, original_filename, mime_type, size_bytes, sha256, created_at, updated_at)
          SELECT 'e' || g, 'u' || (g % 20 + 1), 'b' || g, NULL, 'audio/mpeg', 1, 'x',
                 to_char(timestamp '2026-01-01' + g * interval '1 second', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                 to_char(timestamp '2026-01-01' + g * interval '1 second', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
          FROM generate_series(1, 20000) g`
        yield* sql`ANALYZE`
      })

    const plan = (sql: SqlClient.SqlClient, query: string) =>
      sql.unsafe<{ "QUERY PLAN": string }>(`EXPLAIN ${query}`).pipe(
        Effect.map((rows) => rows.map((r) => r["QUERY PLAN"]).join("\n"))
      )

    it.scoped("a user's entries, newest first, come from the (user_id, created_at) index without a sort", () =>
      Effect.gen(function*() {
        const sql = yield* connect
        yield* seed(sql)
        const query = `SELECT * FROM voice_entries WHERE user_id = 'u7' ORDER BY created_at DESC, id DESC LIMIT 20 OFFSET 50`
        const withIndex = yield* plan(sql, query)
        expect(withIndex).toContain("voice_entries_user_created_idx")
        expect(withIndex).not.toMatch(/\bSort\b/)
        yield* sql`DROP INDEX voice_entries_user_created_idx`
        const without = yield* plan(sql, query)
        expect(without).toMatch(/\bSort\b/)
      }))

    it.scoped("a user's deliveries by status, newest first, use the (user_id, status) index without a sort", () =>
      Effect.gen(function*() {
        const sql = yield* connect
        // 20,000 deliveries of one user, 1 % failed; FK triggers off to seed without the parent rows
        yield* sql`SET session_replication_role = replica`
        yield* sql`INSERT INTO deliveries (id, entry_id, cleaned_entry_id, user_id, destination_id, status, attempts, next_attempt_at, created_at, updated_at)
          SELECT 's' || g, 'e' || g, 'c' || g, 'u', 'server-notion', CASE WHEN g % 100 = 0 THEN 'failed' ELSE 'success' END, 1, 'x',
                 to_char(timestamp '2026-01-01' + g * interval '1 second', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), 'x'
          FROM generate_series(1, 20000) g`
        yield* sql`ANALYZE deliveries`
        const query = `SELECT * FROM deliveries WHERE user_id = 'u' AND status = 'failed' ORDER BY created_at DESC, id DESC LIMIT 20`
        const withIndex = yield* plan(sql, query)
        expect(withIndex).toContain("deliveries_user_status_idx")
        expect(withIndex).not.toMatch(/\bSort\b/)
      }))

    it.scoped("a search (page and count) reads the GIN index on entry_search.document, owner key and words together, not a scan", () =>
      Effect.gen(function*() {
        const sql = yield* connect
        // 20,000 documents of 20 users; FK triggers off to seed without the parent rows
        yield* sql`SET session_replication_role = replica`
        yield* sql`INSERT INTO entry_search (entry_id, user_id, created_at, match_keys, title, tags, cleaned, transcript)
          SELECT 'e' || g, 'u' || (g % 20), to_char(timestamp '2026-01-01' + g * interval '1 second', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                 'o' || encode(convert_to('u' || (g % 20), 'UTF8'), 'hex'), 'note ' || g, '', 'word' || (g % 1000) || ' and more',
                 'we said word' || (g % 777) || ' today'
          FROM generate_series(1, 20000) g`
        // VACUUM moves the rows out of GIN's pending list (fastupdate) into the index proper, as autovacuum would
        yield* sql`VACUUM ANALYZE entry_search`
        const query = EntrySearch.parse("u7" as never, { q: "word42 today" })
        if (typeof query === "string" || query instanceof EntrySearch.InvalidSearch) return yield* Effect.dieMessage("no query")
        const matched = SqlJournalStore.searchMatches(sql, PgJournalStore.dialect.search, query)
        const explain = (statement: Statement.Statement<unknown>) => {
          const [text, params] = statement.compile()
          return sql.unsafe<{ "QUERY PLAN": string }>(`EXPLAIN ${text}`, params).pipe(
            Effect.map((rows) => rows.map((r) => r["QUERY PLAN"]).join("\n"))
          )
        }
        const page = matched.page({ limit: 20, offset: 0 }) as unknown as Statement.Statement<unknown>
        const count = matched.count as unknown as Statement.Statement<unknown>
        for (const statement of [page, count]) {
          const withIndex = yield* explain(statement)
          expect(withIndex).toContain("entry_search_document_idx")
          expect(withIndex).not.toMatch(/Seq Scan on entry_search/)
        }
        // the check can fail: without the GIN index the search scans every document
        yield* sql`DROP INDEX entry_search_document_idx`
        expect(yield* explain(page)).toMatch(/Seq Scan on entry_search/)
      }))

    it.scoped("a claim reads due rows from the partial due index in order, and expired leases from their own index, without a sort or a scan", () =>
      Effect.gen(function*() {
        const sql = yield* connect
        // 20,000 due rows, 1 % processing; FK triggers off to seed without the parent rows
        yield* sql`SET session_replication_role = replica`
        yield* sql`INSERT INTO transcriptions (id, entry_id, user_id, status, attempts, next_attempt_at, lease_expires_at, created_at, updated_at)
          SELECT 't' || g, 'e' || g, 'u', CASE WHEN g % 100 = 0 THEN 'processing' ELSE 'pending' END, 0,
                 to_char(timestamp '2026-01-01' + g * interval '1 second', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), '2026-02-01', 'x', 'x'
          FROM generate_series(1, 20000) g`
        yield* sql`ANALYZE transcriptions`
        const claim = PgJournalStore.dialect.claim(sql, "transcriptions", {
          owner: "w",
          now: "2026-03-01T00:00:00.000Z",
          leaseExpiresAt: "2026-03-01T00:00:10.000Z",
          limit: 4
        }) as unknown as Statement.Statement<unknown>
        const [text, params] = claim.compile()
        const explain = sql.unsafe<{ "QUERY PLAN": string }>(`EXPLAIN ${text}`, params).pipe(
          Effect.map((rows) => rows.map((r) => r["QUERY PLAN"]).join("\n"))
        )
        const withIndex = yield* explain
        expect(withIndex).toContain("transcriptions_claim_due_idx")
        expect(withIndex).toContain("transcriptions_claim_lease_idx")
        expect(withIndex).not.toMatch(/\bSort\b/)
        expect(withIndex).not.toMatch(/Seq Scan on transcriptions/)
        // the check can fail: without the due index the claim sorts (or scans) the backlog
        yield* sql`DROP INDEX transcriptions_claim_due_idx`
        expect(yield* explain).toMatch(/\bSort\b|Seq Scan on transcriptions/)
      }))
  })
})
