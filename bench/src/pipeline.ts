/**
 * bench/pipeline — 1,000 short recordings through all three stages
 * (transcription → Ollama cleanup → Notion page) with instant loopback
 * engines, on SQLite and on PostgreSQL. What it measures is voice-journal's
 * own overhead: upload, queueing, claiming, leases, transactions, the real
 * HTTP clients. Engines answer at once; the audio probe is skipped; the
 * Notion rate limit is raised (the real 3 requests/s would dominate).
 *
 * Prints entries/second end to end, and the time from upload to
 * transcription start (p50/p99), per adapter.
 *
 * Run: pnpm bench:pipeline   (ENTRIES=1000; PostgreSQL: DATABASE_URL, else embedded)
 */
import { NodeContext } from "@effect/platform-node"
import { PgTestDatabase } from "@voice-journal/adapter-postgres"
import { AudioPieces, AudioProbe, BlobStore, Cleaner, NotionPublisher, Pipeline, Transcriber, VoiceJournal, WorkSignal } from "@voice-journal/core"
import type { Domain } from "@voice-journal/core"
import { Effect, Layer, Redacted, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { audioBytes } from "../../packages/core/test/support/Audio.js"
import * as FakeNotion from "../../packages/core/test/support/FakeNotion.js"
import * as FakeOllama from "../../packages/core/test/support/FakeOllama.js"
import * as FakeOpenAi from "../../packages/core/test/support/FakeOpenAiTranscription.js"
import { storeLayer, type StoreKind } from "../../packages/core/test/support/PipelineHarness.js"

const ENTRIES = Number(process.env.ENTRIES ?? 1000)

const percentile = (xs: ReadonlyArray<number>, p: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!
}

const runOn = (kind: StoreKind) =>
  Effect.scoped(Effect.gen(function*() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vj-bench-pipeline-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
    const location = kind === "sqlite" ? path.join(dir, "journal.db") : yield* PgTestDatabase.freshDatabase("vj_bench")
    const transcription = yield* FakeOpenAi.make({ instantText: "hello world this is a short voice note" })
    const ollama = yield* FakeOllama.make()
    const notion = yield* FakeNotion.make()
    const services = Layer.mergeAll(
      storeLayer(kind, location),
      BlobStore.layerFileSystem({ directory: path.join(dir, "audio") }),
      WorkSignal.layer,
      Transcriber.layerOpenAi({ baseUrl: transcription.url, model: "whisper-1" }),
      Cleaner.layerOllama({ host: ollama.url, model: "llama3.2" }),
      Layer.succeed(AudioProbe.AudioProbe, { probe: () => Effect.succeed({ codec: "pcm", durationSeconds: 1 }) }),
      AudioPieces.layerFfmpeg.pipe(Layer.provide(NodeContext.layer)),
      NotionPublisher.layer({ token: Redacted.make(notion.token), databaseId: notion.databaseId, baseUrl: notion.url, requestsPerSecond: 10_000 })
    )
    const ctx = yield* Layer.build(services)
    const journal = yield* Effect.provide(VoiceJournal.make({ notionEnabled: true }), ctx)
    const { user } = yield* journal.createUser("bench")
    const audio = audioBytes("wav")
    const t0 = performance.now()
    yield* Layer.build(
      Pipeline.layer({ concurrency: { transcription: 4, cleanup: 4, delivery: 4 } }).pipe(Layer.provide(Layer.succeedContext(ctx)))
    )
    const ids = yield* Effect.forEach(
      Array.from({ length: ENTRIES }, (_, i) => i),
      () => journal.ingest(user.id, Stream.make(audio)).pipe(Effect.map((d) => d.entry.id)),
      { concurrency: 8 }
    )
    const uploadedAt = performance.now()
    // wait until every entry has its Notion page
    while (true) {
      const done = yield* journal.listNotionSyncs(user.id, { limit: 1, offset: 0, status: "success" })
      if (done.total === ENTRIES) break
      yield* Effect.sleep("100 millis")
    }
    const elapsed = (performance.now() - t0) / 1000
    const waits = yield* Effect.forEach(ids, (id: Domain.EntryId) =>
      journal.listTranscriptions(user.id, id).pipe(
        Effect.map(([t]) => t!.startedAt!.getTime() - t!.createdAt.getTime())
      ), { concurrency: 8 })
    console.log(
      `${kind.padEnd(10)} ${ENTRIES} entries in ${elapsed.toFixed(1)} s = ${(ENTRIES / elapsed).toFixed(1)} entries/s ` +
        `(uploads alone ${((uploadedAt - t0) / 1000).toFixed(1)} s) | upload → transcription start ` +
        `p50 ${percentile(waits, 50)} ms, p99 ${percentile(waits, 99)} ms | Notion pages: ${notion.pages().length}`
    )
  }))

const main = Effect.gen(function*() {
  console.log(`bench/pipeline: ${ENTRIES} entries, 3 stages, instant loopback engines, node ${process.version}, ${os.cpus().length} cores`)
  yield* runOn("sqlite")
  if (!process.env.DATABASE_URL) {
    const server = yield* Effect.acquireRelease(
      Effect.promise(() => PgTestDatabase.startEmbedded()),
      (s) => Effect.promise(() => s.stop())
    )
    process.env.DATABASE_URL = server.url
  }
  yield* runOn("postgres")
}).pipe(Effect.scoped)

Effect.runPromise(main).then(() => process.exit(0), (e) => {
  console.error(e)
  process.exit(1)
})
