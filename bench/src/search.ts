/**
 * bench/search — full-text search (`JournalStore.searchEntries`: SQLite FTS5,
 * PostgreSQL tsvector + GIN) against the query one writes without it: a
 * `LIKE '%word%'` scan of the user's entries (through the (user_id,
 * created_at) index, joined to the primary transcription and cleanup), in the
 * same run, on the same rows, on SQLite and PostgreSQL.
 *
 * Data: ENTRIES entries (default 1,000,000) over 1,000 users, each with a
 * completed primary transcription (20 words), cleanup (3-word title, the same
 * 20 words as text, one or two tags) and search document. Words come from a
 * 2,000-word vocabulary with a skewed (roughly Zipf-like) frequency, so some
 * words are in most entries and some in few. Rows are generated in the
 * database (`INSERT … SELECT` from 10,000 generated texts, whose search
 * fields `EntrySearch.document` computed) in one transaction per table; a
 * sample of documents is rewritten by the store's own code and compared
 * before measuring.
 *
 * Queries (each ROUNDS times, random users, limit 20 with total): a rare
 * word, a common word, two words with the last as a prefix, and a tag filter
 * with a word. p50/p99 in milliseconds and LIKE/search ratios.
 *
 * Run: pnpm bench:search   (PostgreSQL: DATABASE_URL, else embedded)
 * Env: ENTRIES (default 1000000), ROUNDS (default 100), ONLY (sqlite or postgres: one of them),
 * SQLITE_FILE (a new file to keep the SQLite database in)
 */
import { NodeFileSystem } from "@effect/platform-node"
import { FileSystem } from "@effect/platform"
import { SqlClient } from "@effect/sql"
import { PgJournalStore, PgTestDatabase } from "@voice-journal/adapter-postgres"
import { SqliteJournalStore } from "@voice-journal/adapter-sqlite"
import { type Domain, EntrySearch, JournalStore, SqlJournalStore } from "@voice-journal/core"
import { Context, Effect, Layer } from "effect"

const ENTRIES = Number(process.env.ENTRIES ?? 1_000_000)
const ROUNDS = Number(process.env.ROUNDS ?? 100)
const ONLY = process.env.ONLY
const USERS = 1000
const VOCABULARY = 2000
const WORDS_PER_ENTRY = 20
const TAGS = ["work", "family", "health", "ideas", "travel", "reading", "sport", "money", "garden", "music"]

/** 2,000 distinct pronounceable lower-case words ("bakadi", "molu", …): what the folding leaves unchanged. */
const vocabulary = (() => {
  const syllables = ["ba", "ka", "di", "lo", "mu", "ne", "ri", "sa", "to", "vi", "ze", "po", "gu", "fe", "ha", "jo"]
  const words: Array<string> = []
  for (let n = 0; words.length < VOCABULARY; n++) {
    let w = ""
    for (let k = n + 16; k > 0; k = Math.floor(k / 16)) w += syllables[k % 16]
    words.push(w)
  }
  return words
})()

const percentile = (xs: Array<number>, p: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!
}

/** A deterministic pseudo-random number in [0, 1) for (i, k). */
const unit = (i: number, k: number) => {
  let h = Math.imul(i + 1, 2654435761) ^ Math.imul(k + 1, 40503)
  h = Math.imul(h ^ (h >>> 15), 2246822519)
  h = Math.imul(h ^ (h >>> 13), 3266489917)
  return ((h ^ (h >>> 16)) >>> 0) / 4294967296
}

/** A word with a skewed frequency: P(index < m) = sqrt(m / VOCABULARY), so word 0 is in a third of the texts. */
const skewedWord = (i: number, k: number) => vocabulary[Math.floor(unit(i, k) ** 2 * VOCABULARY)]!

/**
 * TEXTS distinct recordings: a transcript, a title, a cleaned text (the
 * transcript as a sentence), and their search-document fields, written by
 * `EntrySearch.document` itself. Entry x gets text x·7919 mod TEXTS.
 */
const TEXTS = 10_000
const texts = Array.from({ length: TEXTS }, (_, i) => {
  const transcript = Array.from({ length: WORDS_PER_ENTRY }, (_, k) => skewedWord(i, k)).join(" ")
  const title = Array.from({ length: 3 }, (_, k) => skewedWord(i, 100 + k)).join(" ")
  const cleaned = `${transcript.charAt(0).toUpperCase()}${transcript.slice(1)}.`
  const doc = EntrySearch.document({ userId: "", title, tags: [], cleaned, transcript })
  return { i, transcript, title, cleaned, doc }
})

type Dialect = {
  readonly name: string
  /** Rows x = 1..n. */
  readonly series: (n: number) => string
  readonly timestamp: (x: string) => string
  readonly prepare: (sql: SqlClient.SqlClient) => Effect.Effect<void, unknown>
  readonly finish: (sql: SqlClient.SqlClient) => Effect.Effect<void, unknown>
}

const sqlite: Dialect = {
  name: "SQLite",
  series: (n) => `(WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < ${n}) SELECT x FROM g) s`,
  timestamp: (x) => `strftime('%Y-%m-%dT%H:%M:%fZ', '2026-01-01', '+' || ${x} || ' seconds')`,
  prepare: () => Effect.void,
  // FTS5 merges its segments as a steady-state index would have them
  finish: (sql) => Effect.zipRight(sql.unsafe(`INSERT INTO entry_search_fts (entry_search_fts) VALUES ('optimize')`), sql.unsafe("ANALYZE"))
}

let ginDefinition = ""
const postgres: Dialect = {
  name: "PostgreSQL",
  series: (n) => `generate_series(1, ${n}) s(x)`,
  timestamp: (x) => `to_char(timestamp '2026-01-01' + ${x} * interval '1 second', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`,
  // a bulk load builds the GIN index once at the end (from its own definition), not row by row
  prepare: (sql) =>
    Effect.gen(function*() {
      const def = yield* sql<{ def: string }>`SELECT pg_get_indexdef('entry_search_document_idx'::regclass) AS def`
      ginDefinition = def[0]!.def
      yield* sql.unsafe("DROP INDEX entry_search_document_idx")
    }),
  finish: (sql) =>
    Effect.gen(function*() {
      yield* sql.unsafe("SET maintenance_work_mem = '256MB'")
      yield* sql.unsafe(ginDefinition)
      yield* sql.unsafe("VACUUM ANALYZE")
    })
}

/** Multi-row INSERTs of literal rows (generated words only: no quotes to escape), 500 a statement. */
const insertRows = (sql: SqlClient.SqlClient, table: string, rows: ReadonlyArray<ReadonlyArray<string | number>>) =>
  Effect.forEach(Array.from({ length: Math.ceil(rows.length / 500) }, (_, b) => rows.slice(b * 500, b * 500 + 500)), (batch) =>
    sql.unsafe(`INSERT INTO ${table} VALUES ${batch.map((r) => `(${r.map((v) => typeof v === "number" ? v : `'${v}'`).join(", ")})`).join(", ")}`), {
    discard: true
  })

const seed = (sql: SqlClient.SqlClient, d: Dialect) =>
  Effect.gen(function*() {
    yield* d.prepare(sql)
    yield* sql.unsafe(`CREATE TABLE bench_texts (i INTEGER PRIMARY KEY, title TEXT, transcript TEXT, cleaned TEXT,
      doc_title TEXT, doc_transcript TEXT, doc_cleaned TEXT)`)
    yield* sql.unsafe(`CREATE TABLE bench_users (i INTEGER PRIMARY KEY, id TEXT, owner_key TEXT)`)
    yield* sql.unsafe(`CREATE TABLE bench_tags (i INTEGER PRIMARY KEY, tag TEXT, tag_key TEXT)`)
    yield* sql.withTransaction(Effect.all([
      insertRows(sql, "bench_texts", texts.map((t) => [t.i, t.title, t.transcript, t.cleaned, t.doc.title, t.doc.transcript, t.doc.cleaned])),
      insertRows(sql, "bench_users", Array.from({ length: USERS }, (_, i) => [i, `u${i}`, EntrySearch.ownerKey(`u${i}`)])),
      insertRows(sql, "bench_tags", TAGS.map((tag, i) => [i, tag, EntrySearch.tagKey(tag)]))
    ]))
    const created = `'2026-01-01T00:00:00.000Z'`
    const text = `bench_texts b ON b.i = ((x % ${TEXTS}) * 7919) % ${TEXTS}` // (x mod TEXTS first: no int4 overflow)
    // entry x: user x mod 1000; tags: one (x mod 10), every third entry a second ((x / 10) mod 10)
    const twoTags = `x % 3 = 0 AND g2.i <> g1.i`
    const steps: Array<[string, string]> = [
      ["users", `INSERT INTO users (id, name, created_at) SELECT id, 'user', ${created} FROM bench_users`],
      [
        "voice_entries",
        `INSERT INTO voice_entries (id, user_id, blob_key, original_filename, mime_type, size_bytes, sha256, created_at, updated_at)
          SELECT 'e' || x, 'u' || (x % ${USERS}), 'b' || x, NULL, 'audio/mpeg', 1000, 'x', ${d.timestamp("x")}, ${d.timestamp("x")}
          FROM ${d.series(ENTRIES)}`
      ],
      [
        "transcriptions",
        `INSERT INTO transcriptions (id, entry_id, user_id, is_primary, make_primary, engine, text, status, attempts, next_attempt_at, created_at, updated_at)
          SELECT 't' || x, 'e' || x, 'u' || (x % ${USERS}), 1, 1, 'bench', b.transcript, 'completed', 1, ${created}, ${created}, ${created}
          FROM ${d.series(ENTRIES)} JOIN ${text}`
      ],
      [
        "cleaned_entries",
        `INSERT INTO cleaned_entries (id, entry_id, transcription_id, user_id, is_primary, make_primary, model, title, text, tags, status, attempts, next_attempt_at, created_at, updated_at)
          SELECT 'c' || x, 'e' || x, 't' || x, 'u' || (x % ${USERS}), 1, 1, 'bench', b.title, b.cleaned,
                 CASE WHEN ${twoTags} THEN '["' || g1.tag || '","' || g2.tag || '"]' ELSE '["' || g1.tag || '"]' END,
                 'completed', 1, ${created}, ${created}, ${created}
          FROM ${d.series(ENTRIES)} JOIN ${text}
          JOIN bench_tags g1 ON g1.i = x % 10 JOIN bench_tags g2 ON g2.i = (x / 10) % 10`
      ],
      [
        "entry_search",
        // EntrySearch.document's fields, joined: owner key, then the tags' keys, in the cleanup's tag order
        `INSERT INTO entry_search (entry_id, user_id, created_at, match_keys, title, tags, cleaned, transcript)
          SELECT 'e' || x, u.id, ${d.timestamp("x")},
                 u.owner_key || ' ' || g1.tag_key || CASE WHEN ${twoTags} THEN ' ' || g2.tag_key ELSE '' END,
                 b.doc_title, CASE WHEN ${twoTags} THEN g1.tag || ' ' || g2.tag ELSE g1.tag END, b.doc_cleaned, b.doc_transcript
          FROM ${d.series(ENTRIES)} JOIN ${text} JOIN bench_users u ON u.i = x % ${USERS}
          JOIN bench_tags g1 ON g1.i = x % 10 JOIN bench_tags g2 ON g2.i = (x / 10) % 10`
      ]
    ]
    for (const [table, statement] of steps) {
      const t0 = performance.now()
      yield* sql.withTransaction(sql.unsafe(statement))
      console.log(`  ${d.name}: ${table} loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
    }
    const t0 = performance.now()
    yield* d.finish(sql)
    console.log(`  ${d.name}: index finished in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
  })

/** The seeded documents are exactly what the store writes: a sample is rewritten by the store's own code and compared. */
const checkDocuments = (sql: SqlClient.SqlClient) =>
  Effect.gen(function*() {
    const sample = ["e1", "e2", "e3", "e30", "e999"]
    const read = sql<Record<string, string>>`SELECT entry_id, user_id, created_at, match_keys, title, tags, cleaned, transcript
      FROM entry_search WHERE ${sql.in("entry_id", sample)} ORDER BY entry_id`
    const seeded = yield* read
    yield* SqlJournalStore.refreshSearchDocuments(sql, sample)
    const rewritten = yield* read
    if (seeded.length !== sample.length || JSON.stringify(seeded) !== JSON.stringify(rewritten)) {
      return yield* Effect.dieMessage(`seeded documents differ from the store's: ${JSON.stringify({ seeded, rewritten })}`)
    }
  })

/** The query without full-text search: every word somewhere in the user's primary texts, newest first, with the count. */
const likeScan = (sql: SqlClient.SqlClient, userId: string, words: ReadonlyArray<string>, tag?: string) => {
  const conditions = words.map(() =>
    `(lower(COALESCE(t.text, '')) LIKE ? OR lower(COALESCE(c.title, '')) LIKE ? OR lower(COALESCE(c.text, '')) LIKE ? OR lower(COALESCE(c.tags, '')) LIKE ?)`
  )
  const params: Array<string> = [userId, ...words.flatMap((w) => Array(4).fill(`%${w}%`))]
  if (tag !== undefined) {
    conditions.push(`c.tags LIKE ?`)
    params.push(`%"${tag}"%`)
  }
  const from = `FROM voice_entries e
    LEFT JOIN transcriptions t ON t.entry_id = e.id AND t.is_primary = 1
    LEFT JOIN cleaned_entries c ON c.entry_id = e.id AND c.is_primary = 1
    WHERE e.user_id = ? AND ${conditions.join(" AND ")}`
  const numbered = (q: string) => {
    let n = 0
    return sql.onDialectOrElse({ pg: () => q.replace(/\?/g, () => `$${++n}`), orElse: () => q })
  }
  return Effect.all([
    sql.unsafe(numbered(`SELECT e.id ${from} ORDER BY e.created_at DESC, e.id DESC LIMIT 20`), params),
    sql.unsafe<{ n: number | string }>(numbered(`SELECT count(*) AS n ${from}`), params)
  ]).pipe(Effect.map(([page, count]) => ({ page: page.length, total: Number(count[0]!.n) })))
}

interface Case {
  readonly label: string
  readonly q: ReadonlyArray<string>
  readonly prefix?: boolean
  readonly tag?: string
}

const cases: ReadonlyArray<Case> = [
  { label: "rare word", q: [vocabulary[1900]!] },
  { label: "common word", q: [vocabulary[0]!] },
  { label: "two words, last as prefix", q: [vocabulary[40]!, vocabulary[200]!.slice(0, 4)], prefix: true },
  { label: "tag + word", q: [vocabulary[10]!], tag: "garden" }
]

const runOn = (d: Dialect, layer: Layer.Layer<JournalStore.JournalStore | SqlClient.SqlClient, unknown>) =>
  Effect.scoped(Effect.gen(function*() {
    const ctx = yield* Layer.build(layer)
    const store = Context.get(ctx, JournalStore.JournalStore)
    const sql = Context.get(ctx, SqlClient.SqlClient)
    const t0 = performance.now()
    yield* seed(sql, d)
    console.log(`${d.name}: seeded ${ENTRIES.toLocaleString("en")} entries / ${USERS} users in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
    yield* checkDocuments(sql)
    for (const c of cases) {
      const search: Array<number> = []
      const like: Array<number> = []
      let matches = 0
      for (let i = 0; i < ROUNDS; i++) {
        const userId = `u${Math.floor(Math.random() * USERS)}`
        // alternate which runs first, so neither gets the other's warm cache every time
        const runSearch = Effect.gen(function*() {
          const s0 = performance.now()
          const page = yield* store.searchEntries(userId as Domain.UserId, { q: c.q.join(" "), tag: c.tag, limit: 20 })
          search.push(performance.now() - s0)
          return page.total
        })
        const runLike = Effect.gen(function*() {
          const l0 = performance.now()
          const r = yield* likeScan(sql, userId, c.q, c.tag)
          like.push(performance.now() - l0)
          return r.total
        })
        let found: number
        let scanned: number
        if (i % 2 === 0) {
          found = yield* runSearch
          scanned = yield* runLike
        } else {
          scanned = yield* runLike
          found = yield* runSearch
        }
        // LIKE matches inside words too (and the prefix anywhere), so it finds at least what search finds
        if (scanned < found) return yield* Effect.dieMessage(`${c.label}: LIKE found ${scanned} < search ${found} for ${userId}`)
        matches += found
      }
      const s = { p50: percentile(search, 50), p99: percentile(search, 99) }
      const l = { p50: percentile(like, 50), p99: percentile(like, 99) }
      console.log(
        `${d.name.padEnd(10)} ${c.label.padEnd(26)} search p50 ${s.p50.toFixed(2).padStart(8)} ms  p99 ${s.p99.toFixed(2).padStart(8)} ms | ` +
          `LIKE p50 ${l.p50.toFixed(2).padStart(8)} ms  p99 ${l.p99.toFixed(2).padStart(8)} ms | ` +
          `LIKE/search p50 ${(l.p50 / s.p50).toFixed(1)}x  p99 ${(l.p99 / s.p99).toFixed(1)}x | ${(matches / ROUNDS).toFixed(0)} matches/user`
      )
    }
  }))

const main = Effect.gen(function*() {
  console.log(`bench/search: ${ENTRIES.toLocaleString("en")} entries, ${USERS} users, ${ROUNDS} queries per case (limit 20, with total), node ${process.version}`)
  const fs = yield* FileSystem.FileSystem
  const dir = yield* fs.makeTempDirectoryScoped({ prefix: "vj-bench-search-" })
  // SQLITE_FILE keeps the SQLite database after the run, to inspect its plans
  const file = process.env.SQLITE_FILE ?? `${dir}/bench.db`
  if (ONLY !== "postgres") yield* runOn(sqlite, SqliteJournalStore.layer({ filename: file }))
  if (ONLY === "sqlite") return
  if (!process.env.DATABASE_URL) {
    const server = yield* Effect.acquireRelease(
      Effect.promise(() => PgTestDatabase.startEmbedded()),
      (server) => Effect.promise(() => server.stop())
    )
    process.env.DATABASE_URL = server.url
  }
  const url = yield* PgTestDatabase.freshDatabase("vj_bench_search")
  yield* runOn(postgres, PgJournalStore.layer({ url }))
}).pipe(Effect.scoped, Effect.provide(NodeFileSystem.layer))

Effect.runPromise(main).catch((e) => {
  console.error(e)
  process.exit(1)
})
