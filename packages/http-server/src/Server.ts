/**
 * The whole server as one Layer, from a {@link ServerConfig}: storage
 * (SQLite or PostgreSQL), audio directory, engines, the pipeline workers and
 * the HTTP API. Shutdown order follows from the layers: the HTTP server stops
 * accepting first (in-flight requests finish), then the pipeline drains its
 * stages for the grace period and releases what is left, then the database
 * closes.
 *
 * @since 0.1.0
 */
import { HttpApiBuilder, HttpApiScalar, HttpServer } from "@effect/platform"
import { NodeContext, NodeHttpServer } from "@effect/platform-node"
import { PgJournalStore, PgRequestBudget } from "@voice-journal/adapter-postgres"
import { SqliteJournalStore } from "@voice-journal/adapter-sqlite"
import {
  AudioProbe,
  BlobStore,
  BlobSweeper,
  Cleaner,
  NotionPublisher,
  Pipeline,
  RequestBudget,
  Transcriber,
  VoiceJournal,
  WorkSignal
} from "@voice-journal/core"
import { Duration, Layer, Option } from "effect"
import * as fs from "node:fs"
import { createServer } from "node:http"
import { VoiceJournalApi } from "./Api.js"
import * as ApiErrors from "./ApiErrors.js"
import { defaultLeaseSeconds, type ServerConfig } from "./Config.js"
import { layerHandlers } from "./Http.js"
import * as RateLimit from "./RateLimit.js"
import * as RequestLog from "./RequestLog.js"

/**
 * Storage, wake-ups and the Notion request budget for the configured
 * database: on PostgreSQL the budget lives in the database, so every node
 * shares Notion's per-integration limit; on SQLite it is in-process.
 * @since 0.1.0
 */
export const layerStorage = (config: ServerConfig) => {
  if (config.database.kind === "postgres") {
    const store = PgJournalStore.layer({ url: config.database.url })
    // wake-ups across nodes with LISTEN/NOTIFY
    return Layer.provideMerge(Layer.merge(PgJournalStore.layerWorkSignal, PgRequestBudget.layer), store)
  }
  fs.mkdirSync(config.dataDir, { recursive: true })
  return Layer.mergeAll(SqliteJournalStore.layer({ filename: config.database.filename }), WorkSignal.layer, RequestBudget.layerInProcess)
}

/**
 * The engines: transcriber, cleaner, audio probe and (if configured) Notion.
 * @since 0.1.0
 */
export const layerEngines = (config: ServerConfig) => {
  const t = config.transcription
  const transcriber = t.kind === "openai"
    ? Transcriber.layerOpenAi({
      baseUrl: t.url,
      model: t.model,
      ...(Option.isSome(t.apiKey) ? { apiKey: t.apiKey.value } : {})
    })
    : Transcriber.layerCommand({
      command: Transcriber.parseCommandLine(t.command),
      ...(t.convert === "wav16k" ? { convert: "wav16k" as const } : {})
    })
  const notion = Option.match(config.notion, {
    onNone: () => Layer.empty,
    // takes from the RequestBudget it is given (layerApp gives it storage's), else from its own
    onSome: (n) =>
      NotionPublisher.layer({ token: n.token, databaseId: n.databaseId, baseUrl: n.baseUrl, requestsPerSecond: n.requestsPerSecond })
  })
  return Layer.mergeAll(
    transcriber,
    Cleaner.layerOllama({ host: config.ollama.host, model: config.ollama.model, numCtx: config.ollama.numCtx }),
    AudioProbe.layerFfprobe,
    notion
  ).pipe(Layer.provide(NodeContext.layer))
}

/**
 * Everything but the HTTP listener: storage, audio, engines, the front door,
 * the workers and the audio sweep (orphaned blobs, stale partial uploads).
 * @since 0.1.0
 */
export const layerApp = (config: ServerConfig) => {
  const storage = layerStorage(config)
  // the engines get storage's request budget; the same layer value, so storage is built once
  const engines = layerEngines(config).pipe(Layer.provide(storage))
  const sweepAge = Duration.seconds(config.audioSweep?.minAgeSeconds ?? 3600)
  const services = Layer.mergeAll(storage, BlobStore.layerFileSystem({ directory: config.audioDir, staleAfter: sweepAge }), engines)
  const journal = VoiceJournal.layer({ maxUploadBytes: config.maxUploadBytes, notionEnabled: Option.isSome(config.notion) })
  const leaseSeconds = config.lease?.seconds ?? defaultLeaseSeconds
  const pipeline = Pipeline.layer({
    lease: Duration.seconds(leaseSeconds),
    heartbeat: Duration.seconds(config.lease?.heartbeatSeconds ?? leaseSeconds / 3),
    shutdownGrace: Duration.seconds(config.shutdownGraceSeconds),
    ...(Option.isSome(config.notion) ? { retry: { notion: { maxAttempts: config.notion.value.maxRetries } } } : {})
  })
  const sweeper = BlobSweeper.layer({ minAge: sweepAge, interval: Duration.seconds(config.audioSweep?.intervalSeconds ?? 3600) })
  return Layer.mergeAll(journal, pipeline, sweeper).pipe(Layer.provideMerge(services))
}

/**
 * The HTTP API (routes, OpenAPI at /openapi.json, docs at /docs) on the app.
 * @since 0.1.0
 */
export const layerHttpApi = (config: ServerConfig) =>
  // request logs with query values redacted; rate limits are counted at authentication (RateLimit, Http)
  HttpApiBuilder.serve((app) => RequestLog.logger(app)).pipe(
    Layer.provide(HttpApiScalar.layer({ path: "/docs" })),
    Layer.provide(HttpApiBuilder.middlewareOpenApi({ path: "/openapi.json" })),
    // every error answer is the `{ error, message }` envelope, unknown routes and defects included
    Layer.provide(ApiErrors.layerEnvelope({ extraGetPaths: ["/docs", "/openapi.json"] })),
    Layer.provide(HttpApiBuilder.api(VoiceJournalApi).pipe(
      Layer.provide(layerHandlers({ maxUploadBytes: config.maxUploadBytes, uploadIdleSeconds: config.uploadIdleSeconds })),
      Layer.provide(RateLimit.layer({ ...config.limits, trustProxy: config.trustProxy }))
    )),
    HttpServer.withLogAddress
  )

/**
 * The Node listener. Node's default `requestTimeout` (300 s) would cut off
 * a large upload on a slow link, so it allows the largest upload at 256 KiB/s.
 * @since 0.1.0
 */
export const layerListener = (config: ServerConfig) =>
  NodeHttpServer.layer(
    () => createServer({ requestTimeout: Math.max(300_000, Math.ceil(config.maxUploadBytes / 256)) }),
    { port: config.port, host: config.host }
  )

/**
 * The complete server. Its output includes the `HttpServer` (for its address).
 * @since 0.1.0
 * @category layers
 */
export const layer = (config: ServerConfig) =>
  layerHttpApi(config).pipe(Layer.provideMerge(layerListener(config)), Layer.provide(layerApp(config)))
