// PROTOTYPE (not committed): how fast set-based batches of K claims/completions could be.
import { SqlClient } from "@effect/sql"
import { PgTestDatabase } from "@voice-journal/adapter-postgres"
import { Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { storeLayer, type StoreKind } from "../../packages/core/test/support/PipelineHarness.js"
const K = Number(process.env.K ?? 4)
const LOOPS = Number(process.env.LOOPS ?? 1)
const N = Number(process.env.N ?? 4000)
const run = (kind: StoreKind) => Effect.scoped(Effect.gen(function*() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vj-proto-"))
  const location = kind === "sqlite" ? path.join(dir, "j.db") : yield* PgTestDatabase.freshDatabase("vj_proto")
  const ctx = yield* Layer.build(storeLayer(kind, location))
  const sql = yield* Effect.provide(SqlClient.SqlClient, ctx)
  const now = new Date().toISOString()
  yield* sql`INSERT INTO users (id, name, created_at) VALUES ('u', 'b', ${now})`
  const series = sql.literal(`WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < ${N})`)
  yield* sql`${series} INSERT INTO voice_entries (id, user_id, blob_key, mime_type, size_bytes, sha256, created_at, updated_at) SELECT 'e' || g, 'u', 'k', 'audio/wav', 1, 'x', ${now}, ${now} FROM s`
  yield* sql`${series} INSERT INTO transcriptions (id, entry_id, user_id, make_primary, status, attempts, next_attempt_at, created_at, updated_at) SELECT 't' || g, 'e' || g, 'u', 1, 'pending', 0, ${now}, ${now}, ${now} FROM s`
  let done = 0
  const loop = (w: number) => Effect.gen(function*() {
    while (true) {
      const t = new Date().toISOString()
      const claimed = yield* Effect.gen(function*() {
        const rows = yield* sql<{ id: string; entryId: string; userId: string }>`UPDATE transcriptions SET status = 'processing', lease_owner = ${"w" + w + "/"} || id, lease_expires_at = ${t}, attempts = attempts + 1, started_at = ${t}, updated_at = ${t}
          WHERE id IN (SELECT id FROM transcriptions WHERE status IN ('pending', 'retrying') AND next_attempt_at <= ${t} ORDER BY next_attempt_at, id LIMIT ${K})
          RETURNING id, entry_id AS "entryId", user_id AS "userId"`
        if (rows.length === 0) return rows
        yield* sql`INSERT INTO journal_events ${sql.insert(rows.map((r) => ({ user_id: r.userId, entry_id: r.entryId, kind: "stage", stage: "transcription", stage_id: r.id, status: "processing", at: t })))}`
        yield* sql`SELECT * FROM voice_entries WHERE ${sql.in("id", rows.map((r) => r.entryId))}`
        return rows
      }).pipe(sql.withTransaction)
      if (claimed.length === 0) return
      yield* Effect.gen(function*() {
        const ids = claimed.map((r) => r.id), entries = claimed.map((r) => r.entryId)
        yield* sql`UPDATE voice_entries SET updated_at = ${t} WHERE ${sql.in("id", entries)}`
        const textCase = sql.literal("CASE id " + ids.map((id) => `WHEN '${id}' THEN 'noop'`).join(" ") + " END")
        yield* sql`UPDATE transcriptions SET status = 'completed', text = ${textCase}, engine = 'noop', lease_owner = NULL, lease_expires_at = NULL, updated_at = ${t} WHERE ${sql.in("id", ids)} AND status = 'processing' RETURNING id, make_primary`
        yield* sql`UPDATE transcriptions SET is_primary = 0 WHERE ${sql.in("entry_id", entries)} AND is_primary = 1 AND ${sql.literal("id NOT IN (" + ids.map((i) => `'${i}'`).join(",") + ")")}`
        yield* sql`UPDATE transcriptions SET is_primary = 1 WHERE ${sql.in("id", ids)}`
        yield* sql`SELECT e.id, t.text FROM voice_entries e LEFT JOIN transcriptions t ON t.entry_id = e.id AND t.is_primary = 1 WHERE ${sql.in("e.id", entries)}`
        yield* sql`INSERT INTO entry_search ${sql.insert(claimed.map((r) => ({ entry_id: r.entryId, user_id: r.userId, created_at: t, match_keys: "ou", title: "", tags: "", cleaned: "", transcript: "noop" })))} ON CONFLICT (entry_id) DO UPDATE SET transcript = excluded.transcript`
        yield* sql`INSERT INTO cleaned_entries ${sql.insert(claimed.map((r) => ({ id: globalThis.crypto.randomUUID(), entry_id: r.entryId, transcription_id: r.id, user_id: r.userId, make_primary: 1, status: "pending", attempts: 0, next_attempt_at: t, created_at: t, updated_at: t })))}`
        yield* sql`INSERT INTO journal_events ${sql.insert(claimed.flatMap((r) => [{ user_id: r.userId, entry_id: r.entryId, kind: "stage", stage: "transcription", stage_id: r.id, status: "completed", at: t }, { user_id: r.userId, entry_id: r.entryId, kind: "stage", stage: "cleanup", stage_id: "x", status: "pending", at: t }]))}`
      }).pipe(sql.withTransaction)
      done += claimed.length
    }
  })
  const t0 = performance.now()
  yield* Effect.all(Array.from({ length: LOOPS }, (_, w) => loop(w)), { concurrency: "unbounded" })
  if (done !== N) throw new Error(`done ${done}`)
  return N / ((performance.now() - t0) / 1000)
}))
Effect.runPromise(Effect.gen(function*() {
  const pg = yield* run("postgres")
  const lite = yield* run("sqlite")
  console.log(`K=${K} LOOPS=${LOOPS}: PostgreSQL ${pg.toFixed(0)} jobs/s, SQLite ${lite.toFixed(0)} jobs/s`)
})).then(() => process.exit(0), (e) => { console.error(e); process.exit(1) })
