/**
 * Everything a pipeline test needs, all real: a SQLite file or a fresh
 * PostgreSQL database, a blob directory, and the loopback Ollama, Notion and
 * OpenAI-compatible transcription servers, wired through the real adapters.
 * Pipelines can be started and stopped (scope closed = graceful shutdown)
 * several times over the same data.
 */
import { NodeContext } from "@effect/platform-node"
import { SqlClient } from "@effect/sql"
import { PgJournalStore, PgTestDatabase } from "@voice-journal/adapter-postgres"
import { SqliteJournalStore } from "@voice-journal/adapter-sqlite"
import { Context, Duration, Effect, Exit, Layer, Redacted, Schedule, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as AudioPieces from "../../src/AudioPieces.js"
import * as AudioProbe from "../../src/AudioProbe.js"
import * as BlobStore from "../../src/BlobStore.js"
import * as Cleaner from "../../src/Cleaner.js"
import * as Destinations from "../../src/Destinations.js"
import * as JournalStore from "../../src/JournalStore.js"
import * as NotionPublisher from "../../src/NotionPublisher.js"
import * as Pipeline from "../../src/Pipeline.js"
import * as SecretBox from "../../src/SecretBox.js"
import * as Transcriber from "../../src/Transcriber.js"
import * as VoiceJournal from "../../src/VoiceJournal.js"
import * as WorkSignal from "../../src/WorkSignal.js"
import * as FakeNotion from "./FakeNotion.js"
import * as FakeOllama from "./FakeOllama.js"
import * as FakeOpenAi from "./FakeOpenAiTranscription.js"
import * as FakeWebhookReceiver from "./FakeWebhookReceiver.js"

/** The server key tests seal destination secrets with (VJ_SECRET_KEY). */
export const testSecretKey = "11".repeat(32)

/** What the harness's `Destinations` allow: a Markdown root in the test directory, loopback webhooks, the loopback Notion. */
export const destinationsOptions = (markdownRoot: string, notionUrl: string): Destinations.DestinationsOptions => ({
  markdownRoot,
  notionBaseUrl: notionUrl,
  notionRequestsPerSecond: 50,
  webhookAllowHosts: ["127.0.0.1"]
})

export type StoreKind = "sqlite" | "postgres"

/** Short leases and delays so recovery happens within a test; only final states are asserted. */
export const fastPipeline: Pipeline.PipelineOptions = {
  lease: "2 seconds",
  heartbeat: "500 millis",
  pollInterval: "200 millis",
  shutdownGrace: "2 seconds",
  retry: Object.fromEntries((["transcription", "cleanup", "delivery"] as const).map((stage) => [stage, {
    initialDelay: "100 millis",
    inProcessRetries: 3,
    durableDelay: "300 millis",
    maxDurableDelay: "1 second",
    maxAttempts: 6
  }]))
}

export interface Harness {
  readonly dir: string
  readonly kind: StoreKind
  /** How a child process reaches the same database (SQLite path or PostgreSQL URL). */
  readonly storeLocation: string
  readonly blobDir: string
  readonly journal: VoiceJournal.VoiceJournalService
  readonly store: JournalStore.JournalStoreService
  readonly sql: SqlClient.SqlClient
  readonly ollama: FakeOllama.FakeOllama
  readonly notion: FakeNotion.FakeNotion
  readonly transcription: FakeOpenAi.FakeOpenAiTranscription
  readonly webhook: FakeWebhookReceiver.FakeWebhookReceiver
  /** Root of users' Markdown folders. */
  readonly markdownRoot: string
  readonly destinations: Destinations.Destinations["Type"]
  /** Starts workers; closing the returned scope shuts them down gracefully. */
  readonly startPipeline: (options?: Pipeline.PipelineOptions) => Effect.Effect<Scope.CloseableScope>
  readonly stopPipeline: (scope: Scope.CloseableScope) => Effect.Effect<void>
}

export const storeLayer = (kind: StoreKind, location: string) =>
  kind === "sqlite" ? SqliteJournalStore.layer({ filename: location }) : PgJournalStore.layer({ url: location, maxConnections: 8 })

/**
 * The real services a pipeline test builds on, on `kind`'s store in a temp
 * folder (removed with the scope): store, filesystem blobs, work signal,
 * ffprobe and ffmpeg. Tests add their engine (and wrap the store) on top.
 */
export const realServices = (kind: StoreKind, prefix: string) =>
  Effect.gen(function*() {
    const dir = yield* Effect.acquireRelease(
      Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), prefix))),
      (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
    )
    const location = kind === "sqlite" ? path.join(dir, "journal.db") : yield* PgTestDatabase.freshDatabase()
    return yield* Layer.build(Layer.mergeAll(
      storeLayer(kind, location),
      BlobStore.layerFileSystem({ directory: path.join(dir, "audio") }),
      WorkSignal.layer,
      AudioProbe.layerFfprobe.pipe(Layer.provide(NodeContext.layer)),
      AudioPieces.layerFfmpeg.pipe(Layer.provide(NodeContext.layer))
    ))
  })

export const make = (options: {
  readonly kind: StoreKind
  readonly notion?: boolean
  readonly instantTranscription?: boolean
  /** How the loopback transcription server answers (default: pocketsphinx). */
  readonly transcription?: Parameters<typeof FakeOpenAi.make>[0]
}): Effect.Effect<Harness, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const dir = yield* Effect.acquireRelease(
      Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "vj-pipeline-"))),
      (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
    )
    const storeLocation = options.kind === "sqlite" ? path.join(dir, "journal.db") : yield* PgTestDatabase.freshDatabase()
    const blobDir = path.join(dir, "audio")
    const ollama = yield* FakeOllama.make()
    const notion = yield* FakeNotion.make()
    const transcription = yield* FakeOpenAi.make(
      options.transcription ?? (options.instantTranscription ? { instantText: "hello world this is a test" } : {})
    )
    const webhook = yield* FakeWebhookReceiver.make()
    const markdownRoot = path.join(dir, "vaults")
    const notionEnabled = options.notion !== false

    const integrations = Layer.mergeAll(
      Transcriber.layerOpenAi({ baseUrl: transcription.url, model: "whisper-1", timeout: "1 minute" }),
      Cleaner.layerOllama({ host: ollama.url, model: "llama3.2", timeout: "30 seconds" }),
      AudioProbe.layerFfprobe.pipe(Layer.provide(NodeContext.layer)),
      AudioPieces.layerFfmpeg.pipe(Layer.provide(NodeContext.layer)),
      notionEnabled
        ? NotionPublisher.layer({ token: Redacted.make(notion.token), databaseId: notion.databaseId, baseUrl: notion.url, requestsPerSecond: 50 })
        : Layer.empty
    )
    const base = Layer.mergeAll(
      storeLayer(options.kind, storeLocation),
      BlobStore.layerFileSystem({ directory: blobDir }),
      WorkSignal.layer,
      SecretBox.layer(Redacted.make(testSecretKey)).pipe(Layer.orDie),
      integrations
    )
    const services = Layer.provideMerge(Destinations.layer(destinationsOptions(markdownRoot, notion.url)), base)
    const context = yield* Layer.build(services)
    const journal = yield* Effect.provide(VoiceJournal.make({ notionEnabled, maxUploadBytes: 50 * 1024 * 1024 }), context)

    const outer = yield* Effect.scope
    const startPipeline = (pipelineOptions: Pipeline.PipelineOptions = fastPipeline) =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        // stopped before the store and the fakes go away (finalizers run in reverse order)
        yield* Scope.addFinalizer(outer, Scope.close(scope, Exit.void))
        yield* Layer.buildWithScope(Pipeline.layer(pipelineOptions), scope).pipe(
          Effect.provide(context as Context.Context<never>)
        )
        return scope
      }) as Effect.Effect<Scope.CloseableScope>

    return {
      dir,
      kind: options.kind,
      storeLocation,
      blobDir,
      journal,
      store: Context.get(context, JournalStore.JournalStore),
      sql: Context.get(context, SqlClient.SqlClient),
      ollama,
      notion,
      transcription,
      webhook,
      markdownRoot,
      destinations: Context.get(context, Destinations.Destinations),
      startPipeline,
      stopPipeline: (scope) => Scope.close(scope, Exit.void)
    }
  })

/** Polls `check` until it returns a value (or fails the test after `timeout`). */
export const eventually = <A, E, R>(
  check: Effect.Effect<A | undefined, E, R>,
  timeout: Duration.DurationInput = "60 seconds"
): Effect.Effect<A, E | string, R> =>
  check.pipe(
    Effect.flatMap((a) => (a === undefined ? Effect.fail("not yet" as const) : Effect.succeed(a))),
    Effect.retry({ schedule: Schedule.spaced("50 millis"), while: (e) => e === "not yet" }),
    Effect.timeoutFail({ duration: timeout, onTimeout: () => `condition not met within ${Duration.format(Duration.decode(timeout))}` })
  ) as Effect.Effect<A, E | string, R>

/** Counts rows of a stage table by status. */
export const statusCounts = (sql: SqlClient.SqlClient, table: "transcriptions" | "cleaned_entries" | "deliveries") =>
  sql.unsafe<{ status: string; n: number | string }>(`SELECT status, count(*) AS n FROM ${table} GROUP BY status`).pipe(
    Effect.map((rows) => Object.fromEntries(rows.map((r) => [r.status, Number(r.n)])) as Record<string, number>),
    Effect.orDie
  )
