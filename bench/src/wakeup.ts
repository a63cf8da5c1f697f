/**
 * bench/wakeup — wake-ups across nodes. Two processes on one PostgreSQL
 * database: node A (this process) is a `VoiceJournal` with no workers; node B
 * (src/wakeup-worker.ts, its own process) runs only the pipeline workers.
 * 30 uploads to A, one at a time; each time we wait until B has started the
 * transcription and take latency = transcription `started_at` − entry
 * `created_at`, both from the database (one clock for both ends). Before
 * each upload a random 0.1–1.1 s pause lets B go idle and puts the upload
 * at a random point of B's poll cycle (back-to-back uploads would land in
 * B's re-check right after its previous job and hide the poll wait).
 *
 * - "NOTIFY": A on `PgJournalStore.layerWorkSignal` (its notify sends a
 *   `pg_notify` hint), B polling every hour — only the wake-up can start it.
 * - "baseline": A on the plain in-process `WorkSignal.layer` (no hint leaves
 *   A), B polling every second — what other nodes got without NOTIFY.
 *
 * Goal (issue 11): B starts within 50 ms, p50 over 30 uploads.
 *
 * Run: pnpm bench:wakeup   (UPLOADS=30; PostgreSQL: DATABASE_URL, else embedded)
 */
import { SqlClient } from "@effect/sql"
import { PgJournalStore, PgTestDatabase } from "@voice-journal/adapter-postgres"
import { BlobStore, VoiceJournal, WorkSignal } from "@voice-journal/core"
import { Effect, Layer, Stream } from "effect"
import * as child from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as url from "node:url"
import { wavHeader } from "./wav.js"

const UPLOADS = Number(process.env.UPLOADS ?? 30)
const GOAL_MS = 50
const workerScript = path.join(path.dirname(url.fileURLToPath(import.meta.url)), "wakeup-worker.ts")

/** A tiny valid PCM WAV: 16 kHz mono 16-bit, 0.1 s of silence. */
const wav = new Uint8Array(Buffer.concat([wavHeader(3200), Buffer.alloc(3200)]))

const percentile = (xs: ReadonlyArray<number>, p: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!
}

/** Starts node B and waits for its "ready"; killed when the scope closes (also on error or interrupt). */
const startNodeB = (config: { readonly url: string; readonly blobDir: string; readonly pollIntervalMs: number }) =>
  Effect.acquireRelease(
    Effect.async<child.ChildProcess, Error>((resume) => {
      const proc = child.spawn(process.execPath, ["--import", "tsx", "--conditions=source", workerScript, JSON.stringify(config)], {
        stdio: ["ignore", "pipe", "inherit"]
      })
      let out = ""
      proc.stdout!.on("data", (chunk: Buffer) => {
        out += chunk.toString()
        if (out.includes("ready")) resume(Effect.succeed(proc))
      })
      proc.once("exit", (code, signal) => resume(Effect.fail(new Error(`node B exited before ready (code ${code}, signal ${signal})`))))
      return Effect.sync(() => proc.kill("SIGKILL"))
    }),
    (proc) =>
      Effect.async<void>((resume) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return resume(Effect.void)
        proc.once("exit", () => resume(Effect.void))
        proc.kill("SIGKILL")
      })
  )

/** Latencies (ms) of `UPLOADS` sequential uploads to A until B starts each transcription. */
const run = (mode: "notify" | "baseline") =>
  Effect.scoped(Effect.gen(function*() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vj-bench-wakeup-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
    const blobDir = path.join(dir, "audio")
    fs.mkdirSync(blobDir)
    const dbUrl = yield* PgTestDatabase.freshDatabase("vj_bench_wakeup")
    const store = PgJournalStore.layer({ url: dbUrl, maxConnections: 4, applicationName: "vj-bench-wakeup-a" })
    const signal = mode === "notify" ? PgJournalStore.layerWorkSignal.pipe(Layer.provide(store)) : WorkSignal.layer
    const ctx = yield* Layer.build(Layer.mergeAll(store, signal, BlobStore.layerFileSystem({ directory: blobDir })))
    const sql = yield* Effect.provide(SqlClient.SqlClient, ctx)
    const journal = yield* Effect.provide(VoiceJournal.make(), ctx)
    const { user } = yield* journal.createUser("bench")
    yield* startNodeB({ url: dbUrl, blobDir, pollIntervalMs: mode === "notify" ? 3_600_000 : 1_000 })
    const latencies: Array<number> = []
    for (let i = 0; i < UPLOADS; i++) {
      // B idle again (its post-job re-check done) and the upload at a random
      // point of its poll cycle, as a real upload would arrive
      yield* Effect.sleep(`${100 + Math.floor(Math.random() * 1000)} millis`)
      const { entry } = yield* journal.ingest(user.id, Stream.make(wav))
      const deadline = Date.now() + 30_000
      while (true) {
        const [row] = yield* sql<{ readonly created_at: string; readonly started_at: string | null }>`
          SELECT e.created_at, t.started_at FROM voice_entries e JOIN transcriptions t ON t.entry_id = e.id
          WHERE e.id = ${entry.id}`
        if (row?.started_at) {
          latencies.push(Date.parse(row.started_at) - Date.parse(row.created_at))
          break
        }
        if (Date.now() > deadline) return yield* Effect.dieMessage(`${mode}: node B did not start entry ${entry.id} within 30 s`)
        yield* Effect.sleep("2 millis")
      }
    }
    return latencies
  }))

const report = (label: string, xs: ReadonlyArray<number>) =>
  console.log(
    `${label.padEnd(44)} p50 ${String(percentile(xs, 50)).padStart(5)} ms   p99 ${String(percentile(xs, 99)).padStart(5)} ms   max ${
      String(Math.max(...xs)).padStart(5)
    } ms`
  )

const main = Effect.gen(function*() {
  console.log(`bench/wakeup: ${UPLOADS} sequential uploads to node A, transcription started by node B (another process)`)
  console.log(`latency = transcription started_at − entry created_at (database times)\n`)
  const notify = yield* run("notify")
  report("NOTIFY (A sends pg_notify; B polls every 1 h)", notify)
  const baseline = yield* run("baseline")
  report("baseline (no hint from A; B polls every 1 s)", baseline)
  const p50 = percentile(notify, 50)
  console.log(`\nbaseline p50 / NOTIFY p50 = ${(percentile(baseline, 50) / Math.max(p50, 1)).toFixed(1)}×`)
  console.log(`goal (issue 11): B starts within ${GOAL_MS} ms, p50 → ${p50 <= GOAL_MS ? "met" : "NOT met"} (p50 ${p50} ms)`)
})

const program = Effect.gen(function*() {
  if (process.env.DATABASE_URL === undefined || process.env.DATABASE_URL === "") {
    const embedded = yield* Effect.acquireRelease(
      Effect.promise(() => PgTestDatabase.startEmbedded()),
      (pg) => Effect.promise(() => pg.stop())
    )
    process.env.DATABASE_URL = embedded.url
  }
  yield* main
})

Effect.runPromise(Effect.scoped(program)).catch((e) => {
  console.error(e)
  process.exitCode = 1
})
