/**
 * Node B of bench/wakeup: pipeline workers only, in their own process, on a
 * shared PostgreSQL database, with instant no-op engines (same shape as
 * packages/core/test/support/worker-process.ts). Listens on the store's
 * LISTEN/NOTIFY channel; `pollIntervalMs` decides how long it would wait
 * without a wake-up. Prints "ready" once its workers run; runs until killed.
 *
 *   tsx --conditions=source src/wakeup-worker.ts '{"url":"postgres://…","blobDir":"/tmp/…","pollIntervalMs":3600000}'
 */
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { PgJournalStore } from "@voice-journal/adapter-postgres"
import { AudioPieces, AudioProbe, BlobStore, Cleaner, Pipeline, Transcriber } from "@voice-journal/core"
import { Duration, Effect, Layer } from "effect"

interface WakeupWorkerConfig {
  readonly url: string
  readonly blobDir: string
  readonly pollIntervalMs: number
}

const config = JSON.parse(process.argv[2]!) as WakeupWorkerConfig

const engines = Layer.mergeAll(
  Layer.succeed(Transcriber.Transcriber, {
    transcribe: () => Effect.succeed({ text: "noop", engine: "noop", language: null, durationSeconds: null, segments: null })
  }),
  Layer.succeed(Cleaner.Cleaner, { clean: () => Effect.succeed({ title: "noop", text: "noop", model: "noop", summary: null, actionItems: [], tags: [], sections: {} }) }),
  Layer.succeed(AudioProbe.AudioProbe, { probe: () => Effect.succeed({ codec: "noop", durationSeconds: null }) }),
  AudioPieces.layerFfmpeg.pipe(Layer.provide(NodeContext.layer))
)

const store = PgJournalStore.layer({ url: config.url, maxConnections: 4, applicationName: "vj-bench-wakeup-b" })

const Worker = Pipeline.layer({
  pollInterval: Duration.millis(config.pollIntervalMs),
  concurrency: { transcription: 2, cleanup: 2, delivery: 0 }
}).pipe(
  Layer.provide(Layer.mergeAll(
    store,
    PgJournalStore.layerWorkSignal.pipe(Layer.provide(store)),
    BlobStore.layerFileSystem({ directory: config.blobDir }),
    engines
  )),
  Layer.tap(() => Effect.sync(() => console.log("ready")))
)

Layer.launch(Worker).pipe(NodeRuntime.runMain({ disableErrorReporting: false }))
