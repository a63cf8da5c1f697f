/**
 * bench/list-entries — how listing a user's entries scales, with and without
 * the composite index (user_id, created_at), on SQLite and PostgreSQL.
 *
 * Data: 1,000,000 voice entries over 1,000 users: 10 heavy users with 50,000
 * entries each (so "offset 1,000" is a real page) and 990 users with ~505.
 * Queries are the store's own `listEntries` (page + total). Each query runs
 * `ROUNDS` times over random users; p50/p99 in milliseconds.
 *
 * Run: pnpm bench:list-entries   (PostgreSQL: DATABASE_URL, else embedded)
 * Env: ROUNDS (default 200), ENTRIES (default 1000000)
 */
import { NodeFileSystem } from "@effect/platform-node"
import { FileSystem } from "@effect/platform"
import { SqlClient } from "@effect/sql"
import { PgJournalStore, PgTestDatabase } from "@voice-journal/adapter-postgres"
import { SqliteJournalStore } from "@voice-journal/adapter-sqlite"
import { JournalStore, type Domain } from "@voice-journal/core"
import { Context, Effect, Layer } from "effect"

const ROUNDS = Number(process.env.ROUNDS ?? 200)
const ENTRIES = Number(process.env.ENTRIES ?? 1_000_000)
const USERS = 1000
const HEAVY = 10

const percentile = (xs: Array<number>, p: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!
}

type Seeder = (sql: SqlClient.SqlClient) => Effect.Effect<void, unknown>

// user k (1..1000); entry g goes to a heavy user for the first half, spread over the rest for the second
const seedSqlite: Seeder = (sql) =>
  Effect.gen(function*() {
    yield* sql.unsafe(`WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < ${USERS})
      INSERT INTO users (id, name, created_at) SELECT 'u' || x, 'user', '2026-01-01T00:00:00.000Z' FROM g`)
    yield* sql.unsafe(`WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < ${ENTRIES})
      INSERT INTO voice_entries (id, user_id, blob_key, original_filename, mime_type, size_bytes, sha256, created_at, updated_at)
      SELECT printf('e%08d', x),
             CASE WHEN x <= ${ENTRIES / 2} THEN 'u' || ((x - 1) % ${HEAVY} + 1) ELSE 'u' || ((x - 1) % ${USERS - HEAVY} + ${HEAVY + 1}) END,
             'b' || x, NULL, 'audio/mpeg', 1000, 'x',
             strftime('%Y-%m-%dT%H:%M:%fZ', '2026-01-01', '+' || x || ' seconds'),
             strftime('%Y-%m-%dT%H:%M:%fZ', '2026-01-01', '+' || x || ' seconds')
      FROM g`)
    yield* sql.unsafe("ANALYZE")
  })

const seedPg: Seeder = (sql) =>
  Effect.gen(function*() {
    yield* sql.unsafe(`INSERT INTO users (id, name, created_at)
      SELECT 'u' || x, 'user', '2026-01-01T00:00:00.000Z' FROM generate_series(1, ${USERS}) x`)
    yield* sql.unsafe(`INSERT INTO voice_entries (id, user_id, blob_key, original_filename, mime_type, size_bytes, sha256, created_at, updated_at)
      SELECT 'e' || lpad(x::text, 8, '0'),
             CASE WHEN x <= ${ENTRIES / 2} THEN 'u' || ((x - 1) % ${HEAVY} + 1) ELSE 'u' || ((x - 1) % ${USERS - HEAVY} + ${HEAVY + 1}) END,
             'b' || x, NULL, 'audio/mpeg', 1000, 'x',
             to_char(timestamp '2026-01-01' + x * interval '1 second', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
             to_char(timestamp '2026-01-01' + x * interval '1 second', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
      FROM generate_series(1, ${ENTRIES}) x`)
    yield* sql.unsafe("ANALYZE")
  })

const measure = (store: JournalStore.JournalStoreService, users: () => string, offset: number) =>
  Effect.gen(function*() {
    const times: Array<number> = []
    for (let i = 0; i < ROUNDS; i++) {
      const userId = users() as Domain.UserId
      const t0 = performance.now()
      const page = yield* store.listEntries(userId, { limit: 20, offset })
      times.push(performance.now() - t0)
      if (page.items.length === 0) return yield* Effect.dieMessage(`empty page for ${userId} at ${offset}`)
    }
    return { p50: percentile(times, 50), p99: percentile(times, 99) }
  })

const anyUser = () => `u${1 + Math.floor(Math.random() * USERS)}`
const heavyUser = () => `u${1 + Math.floor(Math.random() * HEAVY)}`

const runOn = (name: string, layer: Layer.Layer<JournalStore.JournalStore | SqlClient.SqlClient, unknown>, seed: Seeder) =>
  Effect.scoped(Effect.gen(function*() {
    const ctx = yield* Layer.build(layer)
    const store = Context.get(ctx, JournalStore.JournalStore)
    const sql = Context.get(ctx, SqlClient.SqlClient)
    const t0 = performance.now()
    yield* seed(sql)
    console.log(`${name}: seeded ${ENTRIES.toLocaleString("en")} entries / ${USERS} users in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
    const withIndex = {
      first: yield* measure(store, anyUser, 0),
      deep: yield* measure(store, heavyUser, 1000)
    }
    yield* sql.unsafe("DROP INDEX voice_entries_user_created_idx")
    yield* sql.unsafe("ANALYZE")
    const without = {
      first: yield* measure(store, anyUser, 0),
      deep: yield* measure(store, heavyUser, 1000)
    }
    const row = (label: string, a: { p50: number; p99: number }, b: { p50: number; p99: number }) =>
      console.log(
        `${name.padEnd(10)} ${label.padEnd(22)} with index p50 ${a.p50.toFixed(2).padStart(8)} ms  p99 ${a.p99.toFixed(2).padStart(8)} ms | ` +
          `without p50 ${b.p50.toFixed(2).padStart(8)} ms  p99 ${b.p99.toFixed(2).padStart(8)} ms | ` +
          `ratio p50 ${(b.p50 / a.p50).toFixed(1)}x  p99 ${(b.p99 / a.p99).toFixed(1)}x`
      )
    row("first page of a user", withIndex.first, without.first)
    row("page at offset 1,000", withIndex.deep, without.deep)
  }))

const main = Effect.gen(function*() {
  console.log(`bench/list-entries: ${ROUNDS} queries per case (limit 20, with total), node ${process.version}`)
  const fs = yield* FileSystem.FileSystem
  const dir = yield* fs.makeTempDirectoryScoped({ prefix: "vj-bench-" })
  yield* runOn("SQLite", SqliteJournalStore.layer({ filename: `${dir}/bench.db` }), seedSqlite)
  if (!process.env.DATABASE_URL) {
    const server = yield* Effect.acquireRelease(
      Effect.promise(() => PgTestDatabase.startEmbedded()),
      (server) => Effect.promise(() => server.stop())
    )
    process.env.DATABASE_URL = server.url
  }
  const url = yield* PgTestDatabase.freshDatabase("vj_bench")
  yield* runOn("PostgreSQL", PgJournalStore.layer({ url }), seedPg)
}).pipe(Effect.scoped, Effect.provide(NodeFileSystem.layer))

Effect.runPromise(main).catch((e) => {
  console.error(e)
  process.exit(1)
})
