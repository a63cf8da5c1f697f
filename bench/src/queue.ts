/**
 * bench/queue — how fast the work queue itself runs: N queued no-op
 * transcription runs worked off by the real `Pipeline` (concurrency 4, one
 * process; the transcriber, cleaner and audio probe answer at once, later
 * stages have no workers), on SQLite and on PostgreSQL; and, on the same
 * PostgreSQL server in the same run, graphile-worker 0.17.3 working off N
 * no-op jobs with `concurrency: 4`. Each at a small and a large backlog.
 *
 * A voice-journal "job" here is everything a transcription run costs the
 * queue: its share of a claim (the pipeline claims as many rows as it has
 * free slots, with their entries and `processing` events), the blob lookup,
 * and its share of a completing transaction (finished runs are written
 * together: result, promotion, search document, the next stage's row,
 * events). A graphile-worker job is its claim and its completion.
 *
 * Rows are seeded in bulk with SQL before the workers start, so the clock
 * measures draining the backlog only; each system first drains 1,000 jobs
 * uncounted (JIT compilation and pool start-up, as bench/upload warms up). Under each line, the CPU each drain
 * cost per job: this process (all its threads) and the PostgreSQL server
 * (every process named `postgres` on this machine, from /proc: keep the
 * machine otherwise quiet; "n/a" off Linux).
 *
 * Backlogs up to 20,000 are drained ROUNDS times (default 3) by each system
 * in turn and each system's median drain is reported (with its CPU); larger
 * ones once. The default large backlog is 20,000 (100,000 takes too long on
 * a 2-core machine at the baseline rate); BACKLOGS=1000,100000 runs the
 * goal's size.
 *
 * Run: pnpm bench:queue   (BACKLOGS=1000,20000, ROUNDS=3; PostgreSQL: DATABASE_URL, else embedded;
 * CPU_PROF=<dir>: CPU profiles of the voice-journal drains)
 */
import { NodeContext } from "@effect/platform-node"
import { SqlClient } from "@effect/sql"
import { PgTestDatabase } from "@voice-journal/adapter-postgres"
import { AudioPieces, AudioProbe, BlobStore, Cleaner, Pipeline, Transcriber, WorkSignal } from "@voice-journal/core"
import { Deferred, Effect, Layer, Logger as EffectLogger, LogLevel } from "effect"
import { Logger, makeWorkerUtils, run as runGraphile, runMigrations } from "graphile-worker"
import * as fs from "node:fs"
import * as inspector from "node:inspector/promises"
import pg from "pg"
import * as os from "node:os"
import * as path from "node:path"
import { storeLayer, type StoreKind } from "../../packages/core/test/support/PipelineHarness.js"
import { programCpuMs } from "./cpu.js"

const BACKLOGS = (process.env.BACKLOGS ?? "1000,20000").split(",").map(Number)
const CONCURRENCY = 4
const WARM_UP = 1000
/** Drains per system at backlogs up to {@link ROUNDS_UP_TO}, the median reported: a drain of 1,000 lasts ~0.3 s, and one GC or neighbour's burst moves it by a third. */
const ROUNDS = Number(process.env.ROUNDS ?? 3)
const ROUNDS_UP_TO = 20_000

/** Inserts `n` entries, each with a pending transcription row, in two set-based statements (SQLite and PostgreSQL). */
const seed = (sql: SqlClient.SqlClient, n: number, blobKey: string) =>
  Effect.gen(function*() {
    const now = new Date().toISOString()
    yield* sql`INSERT INTO users (id, name, created_at) VALUES ('bench-user', 'bench', ${now})`
    const series = sql.literal(`WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < ${n})`)
    yield* sql`${series} INSERT INTO voice_entries (id, user_id, blob_key, mime_type, size_bytes, sha256, created_at, updated_at)
      SELECT 'e' || g, 'bench-user', ${blobKey}, 'audio/wav', 1, 'x', ${now}, ${now} FROM s`
    yield* sql`${series} INSERT INTO transcriptions (id, entry_id, user_id, make_primary, status, attempts, next_attempt_at, created_at, updated_at)
      SELECT 't' || g, 'e' || g, 'bench-user', 1, 'pending', 0, ${now}, ${now}, ${now} FROM s`
  })

/** jobs/s of voice-journal draining `n` queued transcription runs. */
const voiceJournal = (kind: StoreKind, n: number) =>
  Effect.scoped(Effect.gen(function*() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vj-bench-queue-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
    const location = kind === "sqlite" ? path.join(dir, "journal.db") : yield* PgTestDatabase.freshDatabase("vj_bench_queue")
    const blobDir = path.join(dir, "audio")
    const blobKey = globalThis.crypto.randomUUID()
    fs.mkdirSync(blobDir)
    fs.writeFileSync(path.join(blobDir, blobKey), "RIFF")
    let transcribed = 0
    const allTranscribed = yield* Deferred.make<void>()
    const services = Layer.mergeAll(
      storeLayer(kind, location),
      BlobStore.layerFileSystem({ directory: blobDir }),
      WorkSignal.layer,
      Layer.succeed(Transcriber.Transcriber, {
        transcribe: () =>
          Effect.suspend(() => {
            transcribed++
            const done = { text: "noop", engine: "noop", language: null, durationSeconds: null, segments: null }
            return transcribed === n ? Deferred.succeed(allTranscribed, undefined).pipe(Effect.as(done)) : Effect.succeed(done)
          })
      }),
      Layer.succeed(Cleaner.Cleaner, { clean: () => Effect.succeed({ title: "noop", text: "noop", model: "noop", summary: null, actionItems: [], tags: [], sections: {} }) }),
      Layer.succeed(AudioProbe.AudioProbe, { probe: () => Effect.succeed({ codec: "noop", durationSeconds: null }) }),
      AudioPieces.layerFfmpeg.pipe(Layer.provide(NodeContext.layer))
    )
    const ctx = yield* Layer.build(services)
    const sql = yield* Effect.provide(SqlClient.SqlClient, ctx)
    yield* seed(sql, n, blobKey)
    const profiling = yield* startProfile
    const stop = startClocks()
    yield* Layer.build(
      Pipeline.layer({ concurrency: { transcription: CONCURRENCY, cleanup: 0, delivery: 0 } }).pipe(
        Layer.provide(Layer.succeedContext(ctx))
      )
    )
    yield* Deferred.await(allTranscribed)
    // the last completions may still be committing
    while (true) {
      const [row] = yield* sql<{ readonly done: number | string }>`SELECT count(*) AS done FROM transcriptions WHERE status = 'completed'`
      if (Number(row!.done) >= n) break
      yield* Effect.sleep("5 millis")
    }
    const drained = stop(n)
    yield* profiling(`queue-${kind}-${n}`)
    return drained
  }))

/**
 * CPU_PROF=<dir>: a V8 CPU profile of each voice-journal drain is written
 * there (open it in Chrome DevTools). What it returns stops and writes it.
 */
const startProfile = Effect.promise(async () => {
  const dir = process.env.CPU_PROF
  if (dir === undefined) return (_name: string) => Effect.void
  const session = new inspector.Session()
  session.connect()
  await session.post("Profiler.enable")
  await session.post("Profiler.start")
  return (name: string) =>
    Effect.promise(async () => {
      const { profile } = await session.post("Profiler.stop")
      fs.mkdirSync(dir, { recursive: true })
      fs.writeFileSync(path.join(dir, `${name}.cpuprofile`), JSON.stringify(profile))
      session.disconnect()
    })
})

/** A drain's rate and the CPU it cost per job: this process (main thread and pool) and the PostgreSQL server's processes. */
interface Drained {
  readonly jobsPerSecond: number
  readonly nodeMsPerJob: number
  readonly postgresMsPerJob: number | undefined
}

/** Starts the clocks; what it returns stops them once `n` jobs are done. */
const startClocks = () => {
  const pg0 = programCpuMs("postgres")
  const node0 = process.cpuUsage()
  const t0 = performance.now()
  return (n: number): Drained => {
    const seconds = (performance.now() - t0) / 1000
    const node = process.cpuUsage(node0)
    const pg1 = programCpuMs("postgres")
    return {
      jobsPerSecond: n / seconds,
      nodeMsPerJob: (node.user + node.system) / 1000 / n,
      postgresMsPerJob: pg0 === undefined || pg1 === undefined ? undefined : (pg1 - pg0) / n
    }
  }
}

const silent = new Logger(() => () => {})

/** jobs/s of graphile-worker draining `n` queued no-op jobs on a fresh database of the same server. */
const graphile = (n: number) =>
  Effect.scoped(Effect.gen(function*() {
    const connectionString = yield* PgTestDatabase.freshDatabase("vj_bench_graphile")
    return yield* Effect.promise(async () => {
      await runMigrations({ connectionString, logger: silent })
      const utils = await makeWorkerUtils({ connectionString, logger: silent })
      try {
        for (let i = 0; i < n; i += 5000) {
          await utils.addJobs(Array.from({ length: Math.min(5000, n - i) }, () => ({ identifier: "noop", payload: {} })))
        }
      } finally {
        await utils.release()
      }
      let done = 0
      let finish: () => void = () => {}
      const finished = new Promise<void>((resolve) => (finish = resolve))
      // our own pool, ended before the database is dropped: the drop terminates
      // idle connections, and an idle pg client's error with no listener crashes the process
      const pgPool = new pg.Pool({ connectionString, max: CONCURRENCY + 2 })
      pgPool.on("error", (e) => console.warn("graphile-worker pool:", e.message))
      pgPool.on("connect", (client) => client.on("error", (e) => console.warn("graphile-worker connection:", e.message)))
      const stop = startClocks()
      const runner = await runGraphile({
        pgPool,
        concurrency: CONCURRENCY,
        noHandleSignals: true,
        pollInterval: 1000,
        logger: silent,
        taskList: { noop: async () => {} }
      })
      runner.events.on("job:success", () => {
        if (++done === n) finish()
      })
      await finished
      const rate = stop(n)
      await runner.stop()
      await pgPool.end()
      return rate
    })
  }))

const main = Effect.gen(function*() {
  console.log(
    `bench/queue: no-op jobs, concurrency ${CONCURRENCY}, one process, node ${process.version}, ${os.cpus().length} cores, ` +
      `after one uncounted drain of ${WARM_UP} each`
  )
  if (!process.env.DATABASE_URL) {
    const server = yield* Effect.acquireRelease(
      Effect.promise(() => PgTestDatabase.startEmbedded()),
      (s) => Effect.promise(() => s.stop())
    )
    process.env.DATABASE_URL = server.url
  }
  // one uncounted drain each first: the first drain of a process also pays for
  // JIT compilation and pool start-up, which would weigh on the small backlog most
  yield* graphile(WARM_UP)
  yield* voiceJournal("postgres", WARM_UP)
  yield* voiceJournal("sqlite", WARM_UP)
  for (const n of BACKLOGS) {
    // each system in turn, round after round (a change in the machine's load hits all alike); the median round of each
    const rounds = n <= ROUNDS_UP_TO ? ROUNDS : 1
    const drains: Array<[Drained, Drained, Drained]> = []
    for (let i = 0; i < rounds; i++) {
      drains.push([yield* graphile(n), yield* voiceJournal("postgres", n), yield* voiceJournal("sqlite", n)])
    }
    const median = (k: 0 | 1 | 2) => drains.map((d) => d[k]).sort((a, b) => a.jobsPerSecond - b.jobsPerSecond)[Math.floor(rounds / 2)]!
    const [g, pg, lite] = [median(0), median(1), median(2)]
    const f = (x: number) => x.toFixed(0).padStart(6)
    const ratio = (d: Drained) => `(${(d.jobsPerSecond / g.jobsPerSecond).toFixed(2)}×)`
    console.log(
      `${String(n).padStart(7)} queued | graphile-worker ${f(g.jobsPerSecond)} jobs/s | voice-journal PostgreSQL ${f(pg.jobsPerSecond)} jobs/s ` +
        `${ratio(pg)} | SQLite ${f(lite.jobsPerSecond)} jobs/s ${ratio(lite)}`
    )
    const ms = (x: number | undefined) => x === undefined ? "   n/a" : x.toFixed(3).padStart(6)
    const cpu = (d: Drained) => `node ${ms(d.nodeMsPerJob)} + postgres ${ms(d.postgresMsPerJob)}`
    console.log(
      `${"".padStart(7)}  CPU ms/job | graphile-worker ${cpu(g)} | voice-journal PostgreSQL ${cpu(pg)} | SQLite ${cpu(lite)}`
    )
  }
}).pipe(Effect.scoped, Effect.provide(EffectLogger.minimumLogLevel(LogLevel.Warning)))

Effect.runPromise(main).then(() => process.exit(0), (e) => {
  console.error(e)
  process.exit(1)
})
