/**
 * A pipeline worker in its own process, for crash and many-node tests:
 *   node --import tsx --conditions=source worker-process.ts '<json config>'
 * It prints "ready" once its workers run, and runs until killed.
 * With `noopLog`, stages are instant (no engines) and every transcription
 * run appends "<entryId>\n" to that file, so tests can count executions.
 * With `holdAfterDelivery`, a delivery whose destination's `deliver` has
 * returned writes that file and then hangs before the row is completed, so
 * a test can SIGKILL the worker in that window without timing luck.
 */
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { type Duration, Effect, Layer, Redacted } from "effect"
import * as fs from "node:fs"
import * as AudioPieces from "../../src/AudioPieces.js"
import * as AudioProbe from "../../src/AudioProbe.js"
import * as BlobStore from "../../src/BlobStore.js"
import * as Cleaner from "../../src/Cleaner.js"
import * as NotionPublisher from "../../src/NotionPublisher.js"
import * as Destinations from "../../src/Destinations.js"
import * as Pipeline from "../../src/Pipeline.js"
import * as SecretBox from "../../src/SecretBox.js"
import * as Transcriber from "../../src/Transcriber.js"
import * as WorkSignal from "../../src/WorkSignal.js"
import { destinationsOptions, type StoreKind, storeLayer, testSecretKey } from "./PipelineHarness.js"

export interface WorkerConfig {
  readonly kind: StoreKind
  readonly storeLocation: string
  readonly blobDir: string
  readonly lease: Duration.DurationInput
  readonly concurrency?: number
  readonly ollamaUrl?: string
  readonly transcribeUrl?: string
  readonly notion?: { readonly url: string; readonly token: string; readonly databaseId: string } | undefined
  readonly noopLog?: string
  readonly chunkSeconds?: number
  readonly pieceConcurrency?: number
  /** Users' destinations as the harness has them (same Markdown root, same secret key). */
  readonly destinations?: { readonly markdownRoot: string }
  /** A file written once a `deliver` has returned; that delivery then never reaches its row update. */
  readonly holdAfterDelivery?: string
}

const config = JSON.parse(process.argv[2]!) as WorkerConfig

const engines = config.noopLog !== undefined
  ? Layer.mergeAll(
    Layer.succeed(Transcriber.Transcriber, {
      transcribe: (audio) =>
        Effect.sync(() => {
          fs.appendFileSync(config.noopLog!, `${audio.entryId}\n`)
          return { text: "noop", engine: "noop", language: null, durationSeconds: null, segments: null }
        })
    }),
    Layer.succeed(Cleaner.Cleaner, { clean: () => Effect.succeed({ title: "noop", text: "noop", model: "noop", summary: null, actionItems: [], tags: [], sections: {} }) }),
    Layer.succeed(AudioProbe.AudioProbe, { probe: () => Effect.succeed({ codec: "noop", durationSeconds: null }) }),
    AudioPieces.layerFfmpeg.pipe(Layer.provide(NodeContext.layer))
  )
  : Layer.mergeAll(
    Transcriber.layerOpenAi({ baseUrl: config.transcribeUrl!, model: "whisper-1" }),
    Cleaner.layerOllama({ host: config.ollamaUrl!, model: "llama3.2" }),
    AudioProbe.layerFfprobe.pipe(Layer.provide(NodeContext.layer)),
    AudioPieces.layerFfmpeg.pipe(Layer.provide(NodeContext.layer)),
    config.notion
      ? NotionPublisher.layer({ token: Redacted.make(config.notion.token), databaseId: config.notion.databaseId, baseUrl: config.notion.url })
      : Layer.empty
  )

/** Test-only: every destination's `deliver` signals `marker` when done, then hangs (the row stays `processing`). */
const holdAfterDelivery = (marker: string) =>
  Layer.effect(
    Destinations.Destinations,
    Effect.map(Destinations.Destinations, (registry) =>
      Destinations.Destinations.of({
        ...registry,
        resolve: (userId, id) =>
          Effect.map(registry.resolve(userId, id), (port) => ({
            ...port,
            deliver: (document, previous) =>
              port.deliver(document, previous).pipe(
                Effect.zipRight(Effect.sync(() => fs.writeFileSync(marker, document.deliveryId))),
                Effect.zipRight(Effect.never)
              )
          }))
      }))
  )

const destinations = config.destinations !== undefined
  ? Destinations.layer(destinationsOptions(config.destinations.markdownRoot, config.notion?.url ?? "")).pipe(
    Layer.orDie,
    (registry) => config.holdAfterDelivery !== undefined ? Layer.provide(holdAfterDelivery(config.holdAfterDelivery), registry) : registry
  )
  : Layer.empty

const concurrency = config.concurrency ?? 2
const Worker = Pipeline.layer({
  lease: config.lease,
  heartbeat: "500 millis",
  pollInterval: "200 millis",
  concurrency: { transcription: concurrency, cleanup: concurrency, delivery: concurrency },
  chunkSeconds: config.chunkSeconds,
  pieceConcurrency: config.pieceConcurrency
}).pipe(
  Layer.provide(Layer.provideMerge(
    destinations,
    Layer.mergeAll(
      storeLayer(config.kind, config.storeLocation),
      BlobStore.layerFileSystem({ directory: config.blobDir }),
      WorkSignal.layer,
      SecretBox.layer(Redacted.make(testSecretKey)).pipe(Layer.orDie),
      engines
    )
  )),
  Layer.tap(() => Effect.sync(() => console.log("ready")))
)

Layer.launch(Worker).pipe(NodeRuntime.runMain({ disableErrorReporting: false }))
