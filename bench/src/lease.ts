/**
 * bench/lease — what a shorter stage lease costs PostgreSQL, and what it buys.
 *
 * For each setting (lease 30 s / heartbeat 10 s, and lease 10 s / heartbeat 3 s):
 *
 * 1. **Load.** One node (the real `Pipeline`, PostgreSQL adapter) runs JOBS
 *    transcription stages that never finish, for PERIOD seconds, so every one
 *    of them keeps heartbeating. Counted: heartbeat calls (exact, in process),
 *    and this database's `pg_stat_database` deltas (`xact_commit`,
 *    `tup_updated`) — which include the node's idle polling (one claim per
 *    idle worker per second), the base load any node puts on the database.
 * 2. **Rescue.** KILLS times: a server process (`voice-journal serve` with
 *    `VJ_LEASE_SECONDS` / `VJ_HEARTBEAT_SECONDS`) holds a cleanup stage, a
 *    second node is up, the first is SIGKILLed; measured is the time from the
 *    kill to the second node's claim (the row's `started_at`).
 *
 * Prints both settings and the ratios.
 *
 * Run: pnpm bench:lease   (JOBS=20 PERIOD=60 KILLS=5; PostgreSQL: DATABASE_URL, else embedded)
 */
import { NodeContext } from "@effect/platform-node"
import { SqlClient } from "@effect/sql"
import { PgJournalStore, PgTestDatabase } from "@voice-journal/adapter-postgres"
import { AudioPieces, AudioProbe, BlobStore, Cleaner, JournalStore, Pipeline, Transcriber, VoiceJournal, WorkSignal } from "@voice-journal/core"
import { Context, Duration, Effect, Layer, Redacted, Ref, Stream } from "effect"
import type { ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { audioBytes } from "../../packages/core/test/support/Audio.js"
import * as FakeOllama from "../../packages/core/test/support/FakeOllama.js"
import * as FakeOpenAi from "../../packages/core/test/support/FakeOpenAiTranscription.js"
import { exitOf, freePort, serve } from "../../packages/http-server/test/support/TestServer.js"

const JOBS = Number(process.env.JOBS ?? 20)
const PERIOD = Number(process.env.PERIOD ?? 60)
const KILLS = Number(process.env.KILLS ?? 5)

interface Setting {
  readonly lease: number
  readonly heartbeat: number
}
const settings: ReadonlyArray<Setting> = [{ lease: 30, heartbeat: 10 }, { lease: 10, heartbeat: 3 }]

const percentile = (xs: ReadonlyArray<number>, p: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!
}

const tempDir = (prefix: string) =>
  Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), prefix))),
    (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
  )

const dbStats = (sql: SqlClient.SqlClient) =>
  Effect.gen(function*() {
    // a fresh read, not this backend's cached snapshot
    yield* sql`SELECT pg_stat_clear_snapshot()`
    const [row] = yield* sql<{ xact_commit: string; tup_updated: string }>`
      SELECT xact_commit, tup_updated FROM pg_stat_database WHERE datname = current_database()`
    return { xactCommit: Number(row!.xact_commit), tupUpdated: Number(row!.tup_updated) }
  })

/** JOBS stages that never finish, heartbeating for PERIOD seconds. */
const measureLoad = (setting: Setting) =>
  Effect.scoped(Effect.gen(function*() {
    const url = yield* PgTestDatabase.freshDatabase("vj_bench_lease")
    const dir = yield* tempDir("vj-bench-lease-")
    const base = yield* Layer.build(Layer.mergeAll(
      PgJournalStore.layer({ url, maxConnections: 8 }),
      BlobStore.layerFileSystem({ directory: path.join(dir, "audio") }),
      WorkSignal.layer,
      Layer.succeed(Transcriber.Transcriber, { transcribe: () => Effect.never }),
      Layer.succeed(Cleaner.Cleaner, { clean: () => Effect.never }),
      Layer.succeed(AudioProbe.AudioProbe, { probe: () => Effect.succeed({ codec: "pcm", durationSeconds: 1 }) }),
      AudioPieces.layerFfmpeg.pipe(Layer.provide(NodeContext.layer))
    ))
    const store = Context.get(base, JournalStore.JournalStore)
    const sql = Context.get(base, SqlClient.SqlClient)
    const heartbeats = yield* Ref.make(0)
    const counted = Context.add(base, JournalStore.JournalStore, {
      ...store,
      heartbeat: (job, leaseMillis) => Effect.zipRight(Ref.update(heartbeats, (n) => n + 1), store.heartbeat(job, leaseMillis))
    })
    const journal = yield* Effect.provide(VoiceJournal.make(), counted)
    const { user } = yield* journal.createUser("bench")
    const audio = audioBytes("wav")
    yield* Effect.forEach(Array.from({ length: JOBS }), () => journal.ingest(user.id, Stream.make(audio)), { concurrency: 4 })
    yield* Layer.build(
      Pipeline.layer({
        lease: Duration.seconds(setting.lease),
        heartbeat: Duration.seconds(setting.heartbeat),
        concurrency: { transcription: JOBS },
        shutdownGrace: "0 millis"
      }).pipe(Layer.provide(Layer.succeedContext(counted)))
    )
    while (true) {
      const [row] = yield* sql<{ n: string | number }>`SELECT count(*) AS n FROM transcriptions WHERE status = 'processing'`
      if (Number(row!.n) === JOBS) break
      yield* Effect.sleep("100 millis")
    }
    yield* Effect.sleep("2 seconds") // let the claims' statistics reach pg_stat
    const before = yield* dbStats(sql)
    const beatsBefore = yield* Ref.get(heartbeats)
    yield* Effect.sleep(Duration.seconds(PERIOD))
    const beats = (yield* Ref.get(heartbeats)) - beatsBefore
    const after = yield* dbStats(sql)
    const perMinute = (n: number) => (n * 60) / PERIOD
    return {
      heartbeats: perMinute(beats),
      xactCommit: perMinute(after.xactCommit - before.xactCommit),
      tupUpdated: perMinute(after.tupUpdated - before.tupUpdated)
    }
  }))

/** KILLS times: the node holding a stage is SIGKILLed; seconds until another node claims it. */
const measureRescue = (setting: Setting) =>
  Effect.scoped(Effect.gen(function*() {
    const url = yield* PgTestDatabase.freshDatabase("vj_bench_lease")
    const audioDir = path.join(yield* tempDir("vj-bench-lease-audio-"), "audio")
    const transcription = yield* FakeOpenAi.make({ instantText: "hello world this is a test" })
    const ollama = yield* FakeOllama.make()
    const key = yield* Effect.scoped(
      Effect.flatMap(VoiceJournal.VoiceJournal, (j) => j.createUser("bench")).pipe(
        Effect.map(({ apiKey }) => Redacted.value(apiKey)),
        Effect.provide(VoiceJournal.layer().pipe(Layer.provide(Layer.mergeAll(
          PgJournalStore.layer({ url, maxConnections: 2 }),
          BlobStore.layerFileSystem({ directory: audioDir }),
          WorkSignal.layer
        ))))
      )
    )
    const sqlCtx = yield* Layer.build(PgJournalStore.layer({ url, maxConnections: 2 }))
    const sql = Context.get(sqlCtx, SqlClient.SqlClient)
    const node = (port: number) =>
      Effect.flatMap(tempDir("vj-bench-lease-node-"), (dataDir) =>
        serve({
          ...process.env,
          VJ_PORT: String(port),
          VJ_DATA_DIR: dataDir,
          VJ_DATABASE_URL: url,
          VJ_AUDIO_DIR: audioDir,
          VJ_TRANSCRIBER: "openai",
          VJ_TRANSCRIBE_URL: transcription.url,
          OLLAMA_HOST: ollama.url,
          VJ_LEASE_SECONDS: String(setting.lease),
          VJ_HEARTBEAT_SECONDS: String(setting.heartbeat),
          VJ_SHUTDOWN_GRACE_SECONDS: "0"
        }, port))
    const rescues: Array<number> = []
    for (let i = 0; i < KILLS; i++) {
      yield* Effect.scoped(Effect.gen(function*() {
        const port = yield* Effect.promise(freePort)
        ollama.failNext({ kind: "hang" }) // the holder's cleanup never answers
        const holder: ChildProcess = yield* node(port)
        const created = yield* Effect.promise(() =>
          fetch(`http://127.0.0.1:${port}/entries`, {
            method: "POST",
            headers: { authorization: `Bearer ${key}`, "content-type": "audio/wav" },
            body: audioBytes("wav")
          }).then((r) => r.json() as Promise<{ id: string }>)
        )
        const row = sql<{ status: string; attempts: string | number; startedAt: string | null }>`
          SELECT status, attempts, started_at AS "startedAt" FROM cleaned_entries WHERE entry_id = ${created.id}`
        while ((yield* row)[0]?.status !== "processing") yield* Effect.sleep("50 millis")
        yield* node(yield* Effect.promise(freePort)) // the rescuer
        const killedAt = Date.now()
        holder.kill("SIGKILL")
        yield* Effect.promise(() => exitOf(holder))
        while (true) {
          const [r] = yield* row
          if (Number(r!.attempts) >= 2 && r!.startedAt !== null) {
            rescues.push((new Date(r!.startedAt).getTime() - killedAt) / 1000)
            break
          }
          yield* Effect.sleep("100 millis")
        }
        // let the rescuer finish before it is killed in turn: a stage left behind would take the next round's hang
        while ((yield* row)[0]?.status !== "completed") yield* Effect.sleep("100 millis")
      }))
    }
    return { p50: percentile(rescues, 50), max: Math.max(...rescues), all: rescues }
  }))

const main = Effect.gen(function*() {
  console.log(
    `bench/lease: ${JOBS} running stages for ${PERIOD} s per setting, ${KILLS} SIGKILLs per setting, ` +
      `node ${process.version}, ${os.cpus().length} cores`
  )
  if (!process.env.DATABASE_URL) {
    const server = yield* Effect.acquireRelease(
      Effect.promise(() => PgTestDatabase.startEmbedded()),
      (s) => Effect.promise(() => s.stop())
    )
    process.env.DATABASE_URL = server.url
  }
  const results: Array<{ setting: Setting; load: Effect.Effect.Success<ReturnType<typeof measureLoad>>; rescue: Effect.Effect.Success<ReturnType<typeof measureRescue>> }> = []
  for (const setting of settings) {
    const load = yield* measureLoad(setting)
    const rescue = yield* measureRescue(setting)
    results.push({ setting, load, rescue })
    console.log(
      `lease ${String(setting.lease).padStart(2)} s / heartbeat ${String(setting.heartbeat).padStart(2)} s: ` +
        `heartbeats ${load.heartbeats.toFixed(0)}/min, xact_commit ${load.xactCommit.toFixed(0)}/min, ` +
        `tup_updated ${load.tupUpdated.toFixed(0)}/min | rescue after SIGKILL p50 ${rescue.p50.toFixed(1)} s, ` +
        `max ${rescue.max.toFixed(1)} s (${rescue.all.map((s) => s.toFixed(1)).join(", ")})`
    )
  }
  const [slow, fast] = results as [typeof results[0], typeof results[0]]
  const ratio = (a: number, b: number) => (b === 0 ? "n/a" : `×${(a / b).toFixed(2)}`)
  console.log(
    `ratio ${fast.setting.lease}/${fast.setting.heartbeat} vs ${slow.setting.lease}/${slow.setting.heartbeat}: ` +
      `heartbeats ${ratio(fast.load.heartbeats, slow.load.heartbeats)}, xact_commit ${ratio(fast.load.xactCommit, slow.load.xactCommit)}, ` +
      `tup_updated ${ratio(fast.load.tupUpdated, slow.load.tupUpdated)}; rescue p50 ${ratio(fast.rescue.p50, slow.rescue.p50)}`
  )
}).pipe(Effect.scoped)

Effect.runPromise(main).then(() => process.exit(0), (e) => {
  console.error(e)
  process.exit(1)
})
