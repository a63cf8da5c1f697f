/**
 * The whole server as one Layer, from a {@link ServerConfig}: storage
 * (SQLite or PostgreSQL), audio directory, engines, the pipeline workers and
 * the HTTP API. Shutdown: the listener stops accepting, then in-flight
 * requests and the pipeline's stages drain together within one grace period
 * (see {@link layerListener}); what is left is cut off or interrupted (leases
 * released), then the database closes.
 *
 * @since 0.1.0
 */
import { HttpApiBuilder, HttpApiScalar, type HttpApp, type HttpMiddleware, HttpServer } from "@effect/platform"
import { NodeContext, NodeHttpServer } from "@effect/platform-node"
import { PgJournalStore, PgRequestBudget } from "@voice-journal/adapter-postgres"
import { SqliteJournalStore } from "@voice-journal/adapter-sqlite"
import {
  AudioPieces,
  AudioProbe,
  BlobStore,
  BlobSweeper,
  Cleaner,
  Destinations,
  Domain,
  JournalEvents,
  JournalStore,
  NotionPublisher,
  Pipeline,
  RequestBudget,
  SecretBox,
  Transcriber,
  VoiceJournal,
  WatchFolder,
  WhisperTranscriber,
  WorkSignal
} from "@voice-journal/core"
import { Clock, Context, Deferred, Duration, Effect, Layer, Option, Redacted, Schedule } from "effect"
import * as fs from "node:fs"
import type * as http from "node:http"
import { createServer } from "node:http"
import { createServer as createHttpsServer } from "node:https"
import { VoiceJournalApi } from "./Api.js"
import * as ApiErrors from "./ApiErrors.js"
import { defaultLeaseSeconds, type ServerConfig } from "./Config.js"
import { layerHandlers, ServerClosing } from "./Http.js"
import * as RateLimit from "./RateLimit.js"
import * as Metrics from "./Metrics.js"
import * as RequestLog from "./RequestLog.js"
import * as Session from "./Session.js"
import * as Tracing from "./Tracing.js"
import * as WebApp from "./WebApp.js"

/**
 * Storage, wake-ups and the Notion request budget for the configured
 * database: on PostgreSQL the budget lives in the database, so every node
 * shares Notion's per-integration limit; on SQLite it is in-process.
 * @since 0.1.0
 */
export const layerStorage = (config: ServerConfig) => {
  if (config.database.kind === "postgres") {
    // the store wakes this node's event streams itself; other nodes' writes arrive by LISTEN (layerEventHints)
    const store = PgJournalStore.layer({ url: config.database.url }).pipe(Layer.provideMerge(JournalEvents.layerSignal))
    // wake-ups across nodes with LISTEN/NOTIFY
    return Layer.provideMerge(Layer.mergeAll(PgJournalStore.layerWorkSignal, PgRequestBudget.layer, PgJournalStore.layerEventHints), store)
  }
  fs.mkdirSync(config.dataDir, { recursive: true })
  return Layer.mergeAll(
    SqliteJournalStore.layer({ filename: config.database.filename }).pipe(Layer.provideMerge(JournalEvents.layerSignal)),
    WorkSignal.layer,
    RequestBudget.layerInProcess
  )
}

/** How long idempotency keys and journal events are kept (the events' replay window). */
const webStateRetention = Duration.hours(24)

/**
 * Hourly (and at start): removes expired sessions, and idempotency keys and
 * journal events older than 24 h. A failure is logged and retried next hour.
 * @since 0.1.0
 */
export const layerPrune = Layer.scopedDiscard(
  Effect.gen(function*() {
    const store = yield* JournalStore.JournalStore
    const prune = Effect.gen(function*() {
      const before = new Date((yield* Clock.currentTimeMillis) - Duration.toMillis(webStateRetention))
      yield* store.pruneExpired({ idempotencyKeysBefore: before, eventsBefore: before })
    }).pipe(Effect.catchAll((e) => Effect.logWarning("pruning sessions, idempotency keys and events failed; retrying in an hour", e)))
    yield* prune.pipe(Effect.repeat(Schedule.spaced("1 hour")), Effect.forkScoped)
  })
)

/**
 * Where recordings live: S3-compatible object storage with `VJ_BLOB_URL`,
 * else files in the audio directory. Unfinished uploads older than
 * `staleAfter` (a killed node's) are removed at start-up.
 * @since 0.1.0
 */
export const layerBlobs = (config: ServerConfig, staleAfter?: Duration.DurationInput) => {
  const blobs = config.blobs
  if (blobs === undefined) return BlobStore.layerFileSystem({ directory: config.audioDir, staleAfter })
  // loaded only when used: the AWS SDK takes a while to load, and every CLI command reads this configuration
  return Layer.unwrapEffect(Effect.promise(() => import("@voice-journal/adapter-s3")).pipe(Effect.map(({ S3BlobStore }) =>
    S3BlobStore.layer({
      bucket: blobs.bucket,
      prefix: blobs.prefix,
      staleAfter,
      client: {
        forcePathStyle: blobs.forcePathStyle,
        ...(blobs.region !== undefined ? { region: blobs.region } : {}),
        ...(blobs.endpoint !== undefined ? { endpoint: blobs.endpoint } : {})
      }
    })
  )))
}

/**
 * The engines: transcriber, cleaner, audio probe, the cutter of long
 * recordings (ffmpeg) and (if configured) Notion.
 * @since 0.1.0
 */
export const layerEngines = (config: ServerConfig) => {
  const t = config.transcription
  const transcriber = t.kind === "openai"
    ? Transcriber.layerOpenAi({
      baseUrl: t.url,
      model: t.model,
      ...(t.language !== undefined && t.language !== "auto" ? { language: t.language } : {}),
      maxBytes: t.maxBytes,
      ...(Option.isSome(t.apiKey) ? { apiKey: t.apiKey.value } : {})
    })
    : t.kind === "whisper"
    ? WhisperTranscriber.layer({
      modelPath: t.modelPath,
      language: t.language,
      concurrency: t.concurrency,
      threads: t.threads,
      secondsPerAudioMinute: t.secondsPerAudioMinute
    })
    : Layer.merge(
      Transcriber.layerCommand({
        command: Transcriber.parseCommandLine(t.command),
        maxBytes: t.maxBytes,
        ...(t.convert === "wav16k" ? { convert: "wav16k" as const } : {})
      }),
      // said once, at start-up: what to run for transcripts worth keeping
      t.missingModel === undefined ? Layer.empty : Layer.effectDiscard(Effect.logWarning(
        `no Whisper model at ${t.missingModel.path}: transcribing with pocketsphinx, which gets many words wrong. ` +
          `For Whisper-quality transcripts run: voice-journal models pull ${t.missingModel.name}` +
          (t.missingModel.bytes > 0 ? ` (${(t.missingModel.bytes / 1048576).toFixed(0)} MiB, once), then restart the server` : ", then restart the server")
      ))
    )
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
    AudioPieces.layerFfmpeg,
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
  const base = Layer.mergeAll(storage, layerBlobs(config, sweepAge), engines)
  // users' destinations: secrets open with VJ_SECRET_KEY; start-up fails if stored secrets need it and it is missing
  const d = config.destinations
  const secrets = d !== undefined && Option.isSome(d.secretKey) ? SecretBox.layer(d.secretKey.value) : Layer.empty
  const destinations = Destinations.layer({
    markdownRoot: d?.markdownRoot,
    webhookAllowHosts: d?.webhookAllowHosts,
    notionBaseUrl: d?.notionBaseUrl,
    notionRequestsPerSecond: d?.notionRequestsPerSecond
  }).pipe(Layer.provide(Layer.merge(base, secrets)))
  const services = Layer.mergeAll(base, destinations)
  const journal = VoiceJournal.layer({
    maxUploadBytes: config.maxUploadBytes,
    notionEnabled: Option.isSome(config.notion),
    ...(config.longRecordings !== undefined ? { maxAudioSeconds: config.longRecordings.maxAudioSeconds } : {})
  })
  const leaseSeconds = config.lease?.seconds ?? defaultLeaseSeconds
  const pipeline = Pipeline.layer({
    lease: Duration.seconds(leaseSeconds),
    heartbeat: Duration.seconds(config.lease?.heartbeatSeconds ?? leaseSeconds / 3),
    shutdownGrace: Duration.seconds(config.shutdownGraceSeconds),
    chunkSeconds: config.longRecordings?.chunkSeconds,
    pieceConcurrency: config.longRecordings?.pieceConcurrency,
    ...(Option.isSome(config.notion) ? { retry: { delivery: { maxAttempts: config.notion.value.maxRetries } } } : {})
  })
  const sweeper = BlobSweeper.layer({ minAge: sweepAge, interval: Duration.seconds(config.audioSweep?.intervalSeconds ?? 3600) })
  // the watch folder (if configured) ingests through the same front door; its start fails the server's
  // start (unknown user, missing folder), then it scans in a fiber closed with the app
  const watch = config.watch
  const watcher = watch === undefined ? Layer.empty : WatchFolder.layer({
    directory: watch.directory,
    userId: watch.userId as Domain.UserId,
    moveTo: watch.moveTo,
    settle: Duration.seconds(watch.settleSeconds ?? 2)
  }).pipe(Layer.provide(journal))
  return Layer.mergeAll(journal, pipeline, sweeper, watcher, layerPrune).pipe(Layer.provideMerge(services))
}

/**
 * The HTTP API (routes, OpenAPI at /openapi.json, docs at /docs) on the app.
 * @since 0.1.0
 */
export const layerHttpApi = (config: ServerConfig) =>
  // request logs with query values redacted; rate limits are counted at authentication (RateLimit, Http)
  HttpApiBuilder.serve((app) => RequestLog.logger(Metrics.observeRequests(app))).pipe(
    Layer.provide(HttpApiScalar.layer({ path: "/docs" })),
    // the web app at / and /app/* (its shell, hashed assets, service worker, manifest)
    Layer.provide(WebApp.layer(config.webDir !== undefined ? { directory: config.webDir } : {})),
    Layer.provide(HttpApiBuilder.middlewareOpenApi({ path: "/openapi.json" })),
    // every error answer is the `{ error, message }` envelope, unknown routes and defects included
    Layer.provide(ApiErrors.layerEnvelope({ extraGetPaths: ["/docs", "/openapi.json", "/", "/app", ...WebApp.rootFiles] })),
    Layer.provide(HttpApiBuilder.api(VoiceJournalApi).pipe(
      Layer.provide(layerHandlers({
        maxUploadBytes: config.maxUploadBytes,
        uploadIdleSeconds: config.uploadIdleSeconds,
        session: {
          lifetimeSeconds: config.sessionSeconds ?? Session.defaultLifetimeSeconds,
          publicOrigin: config.publicOrigin,
          tls: config.tls !== undefined
        },
        eventsHeartbeatSeconds: config.eventsHeartbeatSeconds,
        eventsPollSeconds: config.eventsPollSeconds
      })),
      Layer.provide(RateLimit.layer({ ...config.limits, trustProxy: config.trustProxy })),
      Layer.provide(Metrics.layer({ token: config.metricsToken ?? Option.none() }))
    )),
    withLogAddress(config),
    Metrics.withoutPlatformSpans
  )

/** `HttpServer.withLogAddress`, but saying `https://` when the listener speaks TLS (the platform always says http). */
const withLogAddress = (config: ServerConfig) => <A, E, R>(layer: Layer.Layer<A, E, R>) =>
  Layer.effectDiscard(HttpServer.addressFormattedWith((address) =>
    Effect.log(`Listening on ${config.tls !== undefined ? address.replace(/^http:/, "https:") : address}`)
  )).pipe(Layer.provideMerge(layer))

/**
 * The Node listener, stopped within the grace period whatever the clients
 * do. `NodeHttpServer` alone stops by removing its request handler and
 * calling `server.close()`, which waits for every connection: responses
 * still said `keep-alive`, a client reusing its socket sent a request
 * nobody answered, and the close (and everything after it) never ended.
 * Here, when the scope closes, before the handler goes:
 *
 * 1. stop accepting, close idle keep-alive sockets, and answer everything
 *    from now on with `Connection: close`;
 * 2. let in-flight requests and the pipeline's stages (if a `Pipeline` is
 *    in the context) drain together, within one grace period;
 * 3. then destroy the connections that are left (a stalled upload) and give
 *    their handlers a moment to clean up (remove the partial file).
 *
 * Node's default `requestTimeout` (300 s) would cut off a large upload on a
 * slow link, so it allows the largest upload at 256 KiB/s.
 *
 * With `config.tls` the listener is an `https.Server` (HTTP/1.1 over TLS;
 * it has the `http.Server` methods used here). Not HTTP/2: the platform
 * serves `http.IncomingMessage`s, an `http2` server has no
 * `closeAllConnections`, and HTTP/2 has no `Connection: close` (Node drops
 * the header with a warning; draining would need GOAWAY handling).
 * @since 0.1.0
 */
export const layerListener = (config: ServerConfig) =>
  Layer.merge(
    Layer.scopedContext(Effect.map(makeListener(config), ({ closing, server }) =>
      Context.make(HttpServer.HttpServer, server).pipe(Context.add(ServerClosing, Deferred.await(closing))))),
    NodeHttpServer.layerContext
  )

/** How long handlers of cut-off connections get to clean up after the grace period. */
const cleanupAfterCutoff = Duration.seconds(1)

const makeListener = (config: ServerConfig) =>
  Effect.gen(function*() {
    const pipeline = yield* Effect.serviceOption(Pipeline.PipelineStatus)
    const grace = Duration.seconds(config.shutdownGraceSeconds)
    let closing = false
    /** Completed when the drain starts: event streams end (ServerClosing). */
    const closingSignal = yield* Deferred.make<void>()
    /** Responses not yet sent in full (their headers may still be changed). */
    const open = new Set<http.ServerResponse>()
    /** Request handlers that have not finished (their request scope is still open). */
    let handling = 0
    const options = { requestTimeout: Math.max(300_000, Math.ceil(config.maxUploadBytes / 256)) }
    const node: http.Server = config.tls !== undefined
      ? createHttpsServer({ ...options, cert: config.tls.cert, key: Redacted.value(config.tls.key) })
      : createServer(options)
    // registered before the platform's handler, so it sees every response first
    node.on("request", (_request: http.IncomingMessage, response: http.ServerResponse) => {
      if (closing) response.setHeader("connection", "close")
      open.add(response)
      response.on("close", () => {
        open.delete(response)
        // a response that had already said keep-alive leaves an idle socket behind
        if (closing) node.closeIdleConnections()
      })
    })
    const inner = yield* NodeHttpServer.make(() => node, { port: config.port, host: config.host })

    const handlersDone = Effect.suspend(() => (handling === 0 ? Effect.void : Effect.fail("busy" as const))).pipe(
      Effect.retry(Schedule.spaced("25 millis"))
    )
    // interruptible inside each timeout: finalizers run uninterruptibly, and an
    // uninterruptible wait would never be cut off (notes/effect3.md)
    const within = (d: Duration.Duration) => <A, E>(wait: Effect.Effect<A, E>) =>
      wait.pipe(Effect.interruptible, Effect.timeout(d), Effect.ignore)
    const drain = Effect.gen(function*() {
      closing = true
      yield* Deferred.succeed(closingSignal, undefined)
      node.close() // no new connections; the platform's own close then finds it closed
      node.closeIdleConnections()
      for (const response of open) if (!response.headersSent) response.setHeader("connection", "close")
      yield* Effect.logInfo(`shutting down: draining requests and stages (grace ${Duration.format(grace)})`)
      yield* Effect.all([
        within(grace)(handlersDone),
        Option.match(pipeline, { onNone: () => Effect.void, onSome: (p) => p.shutdown })
      ], { concurrency: "unbounded", discard: true })
      if (handling > 0) {
        yield* Effect.logWarning(`grace period over: cutting off ${handling} request(s) still in progress`)
        node.closeAllConnections()
        yield* within(cleanupAfterCutoff)(handlersDone)
      }
    })

    const track = <E, R>(handled: HttpApp.Default<E, R>): HttpApp.Default<E, R> =>
      Effect.suspend(() => {
        handling++
        // the request scope's first finalizer, so it runs after the handler's own cleanup
        return Effect.zipRight(Effect.addFinalizer(() => Effect.sync(() => handling--)), handled)
      }) as unknown as HttpApp.Default<E, R>

    const server = HttpServer.make({
      address: inner.address,
      serve: (app, middleware) =>
        Effect.gen(function*() {
          yield* inner.serve(app, ((handled: HttpApp.Default) => track(middleware ? middleware(handled) : handled)) as HttpMiddleware.HttpMiddleware)
          // added after the platform's finalizer (which removes the handler), so it runs before it
          yield* Effect.addFinalizer(() => drain)
        })
    })
    return { server, closing: closingSignal }
  })

/**
 * The complete server. Its output includes the `HttpServer` (for its address).
 * @since 0.1.0
 * @category layers
 */
export const layer = (config: ServerConfig) =>
  layerHttpApi(config).pipe(
    Layer.provideMerge(layerListener(config)),
    Layer.provide(layerApp(config)),
    // the tracer for everything above: requests, the pipeline's stages, the sweeper
    Layer.provide(Tracing.layer(config.otlp))
  )
