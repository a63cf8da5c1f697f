/**
 * Server settings from the environment, read with Effect `Config` and
 * validated at start-up: a bad value stops the server with a message that
 * names the variable.
 *
 * | Variable                    | Default                          | Meaning |
 * |-----------------------------|----------------------------------|---------|
 * | `VJ_HOST`                   | `127.0.0.1`                      | address to listen on (loopback unless you mean it) |
 * | `VJ_PORT`                   | `3000`                           | port |
 * | `VJ_DATA_DIR`               | `./data`                         | SQLite file and audio live here |
 * | `VJ_DATABASE_URL`           | `sqlite:<VJ_DATA_DIR>/journal.db`| `postgres://…` selects PostgreSQL |
 * | `VJ_AUDIO_DIR`              | `<VJ_DATA_DIR>/audio`            | recordings (shared by all nodes) |
 * | `VJ_BLOB_URL`               | — (files in `VJ_AUDIO_DIR`)      | `s3://bucket/prefix`: recordings in S3-compatible object storage instead |
 * | `AWS_REGION`                | SDK default; `us-east-1` with an endpoint | region of the bucket |
 * | `AWS_ENDPOINT_URL`          | AWS                              | S3-compatible server (MinIO, R2, Garage); `AWS_ENDPOINT_URL_S3` wins |
 * | `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` | SDK credential chain | credentials (secret; read by the AWS SDK only) |
 * | `VJ_S3_PATH_STYLE`          | `true` with an endpoint, else `false` | `https://host/bucket/key` instead of `https://bucket.host/key` |
 * | `VJ_MAX_UPLOAD_BYTES`       | `104857600` (100 MiB)            | largest accepted recording |
 * | `VJ_UPLOAD_IDLE_SECONDS`    | `30`                             | an upload that sends nothing this long is answered `408` and dropped |
 * | `VJ_TRANSCRIBER`            | `auto`                           | `auto` (local Whisper when its model is in `VJ_DATA_DIR/models`, else `command`), `whisper`, `command` or `openai` |
 * | `VJ_WHISPER_MODEL`          | `base`                           | a model name from `voice-journal models list`, or the path of a whisper.cpp ggml file |
 * | `VJ_LANGUAGE`               | `auto`                           | ISO-639-1 code of the recordings, or `auto` (detected); given to Whisper and OpenAI-compatible servers |
 * | `VJ_WHISPER_CONCURRENCY`    | `1`                              | local Whisper runs at once on this node |
 * | `VJ_WHISPER_THREADS`        | cores (at most 8)                | CPU threads per run |
 * | `VJ_WHISPER_SECONDS_PER_AUDIO_MINUTE` | `60`                   | a run is killed (and retried later) after this long per minute of audio (at least 60 s) |
 * | `VJ_TRANSCRIBE_COMMAND`     | pocketsphinx (offline)           | command line, `{input}` = the audio file |
 * | `VJ_TRANSCRIBE_CONVERT`     | `wav16k`                         | `wav16k` or `none`: convert before the command |
 * | `VJ_TRANSCRIBE_URL`         | `http://127.0.0.1:8000`          | OpenAI-compatible server |
 * | `VJ_TRANSCRIBE_API_KEY`     | —                                | its key (secret) |
 * | `VJ_TRANSCRIBE_MODEL`       | `whisper-1`                      | its model |
 * | `VJ_TRANSCRIBE_MAX_BYTES`   | `26214400` (25 MiB) for `openai`, none for `command` | the largest file the engine takes; larger recordings go in pieces |
 * | `VJ_CHUNK_SECONDS`          | `600`                            | longer recordings are transcribed in pieces of at most this long, cut at pauses |
 * | `VJ_PIECE_CONCURRENCY`      | `3`                              | pieces of one recording transcribed at the same time |
 * | `VJ_MAX_AUDIO_SECONDS`      | `14400` (4 h)                    | longer recordings are refused at upload (`413`, nothing kept) |
 * | `OLLAMA_HOST`               | `http://127.0.0.1:11434`         | Ollama |
 * | `VJ_OLLAMA_MODEL`           | `llama3.2`                       | model for the cleanup |
 * | `VJ_OLLAMA_NUM_CTX`         | `8192`                           | context window sent with every request |
 * | `NOTION_TOKEN`              | — (Notion off)                   | integration token (secret) |
 * | `VJ_NOTION_DATABASE_ID`     | —                                | required with `NOTION_TOKEN` |
 * | `VJ_NOTION_BASE_URL`        | `https://api.notion.com`         | for proxies and tests |
 * | `NOTION_MAX_RETRIES`        | `5`                              | attempts before a sync is `failed` |
 * | `VJ_NOTION_REQUESTS_PER_SECOND` | `3`                          | Notion requests per second — for all nodes together on PostgreSQL |
 * | `VJ_SECRET_KEY`             | — (no secrets stored)            | 32-byte key (64 hex digits or base64) sealing destination secrets at rest; required once any destination has one (secret) |
 * | `VJ_MARKDOWN_ROOT`          | — (Markdown folders off)         | users' Markdown folders are paths inside this directory |
 * | `VJ_WEBHOOK_ALLOW_HOSTS`    | — (public addresses only)        | comma-separated hosts/IPs webhooks may reach although they are private or loopback |
 * | `VJ_SHUTDOWN_GRACE_SECONDS` | `30`                             | in-flight stages may finish this long on SIGTERM |
 * | `VJ_LEASE_SECONDS`          | `10`                             | a killed node's stage is taken over after at most this long |
 * | `VJ_HEARTBEAT_SECONDS`      | lease / 3                        | how often a running stage renews its lease (< lease) |
 * | `VJ_AUDIO_SWEEP_AGE_SECONDS` | `3600`                          | audio with no entry, and unfinished uploads, are removed once this old |
 * | `VJ_AUDIO_SWEEP_INTERVAL_SECONDS` | `3600`                     | how often each node sweeps such audio (also at start-up) |
 * | `VJ_RATE_LIMIT_PER_MINUTE`  | `120`                            | requests per key per minute |
 * | `VJ_UPLOADS_PER_MINUTE`     | `10`                             | uploads per key per minute |
 * | `VJ_AUTH_FAILURES_PER_MINUTE` | `10`                           | failed authentications per client address |
 * | `VJ_TRUST_PROXY`            | `0`                              | reverse proxies in front that append to `X-Forwarded-For`; `0` ignores the header, `n` takes the client from the `n`-th entry from the right |
 * | `VJ_WATCH_DIR`              | — (no watch folder)              | recordings dropped here become entries of `VJ_WATCH_USER` (see `WatchFolder`) |
 * | `VJ_WATCH_USER`             | —                                | required with `VJ_WATCH_DIR`: the id of an existing user |
 * | `VJ_WATCH_MOVE_TO`          | — (files never touched)          | move each file here once it is in the journal |
 * | `VJ_WATCH_SETTLE_SECONDS`   | `2`                              | a file counts as complete once its size and mtime held this long |
 * | `VJ_TLS_CERT`               | — (plain HTTP)                   | PEM certificate (chain) file: serve HTTPS; needs `VJ_TLS_KEY` |
 * | `VJ_TLS_KEY`                | —                                | PEM private key file for `VJ_TLS_CERT` (secret) |
 * | `VJ_LOG_FORMAT`             | `pretty`                         | `json`: one JSON object per log line (for log collectors) |
 * | `VJ_METRICS_TOKEN`          | — (`/metrics` open)              | a scrape of `GET /metrics` must send `Authorization: Bearer <token>` (secret) |
 * | `OTEL_EXPORTER_OTLP_ENDPOINT` | — (no export)                  | OTLP/HTTP collector (e.g. `http://127.0.0.1:4318`): traces are sent to `<endpoint>/v1/traces` |
 * | `OTEL_SERVICE_NAME`         | `voice-journal`                  | the service name on exported spans |
 * | `VJ_SESSION_SECONDS`        | `2592000` (30 days)              | lifetime of a browser session (`POST /session`) |
 * | `VJ_EVENTS_POLL_SECONDS`    | `5`                              | `GET /events` re-reads the events table this often if no wake-up came (a lost NOTIFY costs this much latency) |
 * | `VJ_PUBLIC_ORIGIN`          | — (the request's own)            | `https://journal.example.org`: the origin browsers use, behind a reverse proxy (CSRF check; `Secure` cookie when https) |
 *
 * @since 0.1.0
 */
import * as S3Url from "@voice-journal/adapter-s3/S3Url"
import { SecretBox } from "@voice-journal/core"
import { Config, ConfigError, Effect, Either, Layer, Logger, Option, Redacted } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as tls from "node:tls"
import { defaultLifetimeSeconds, normalizeOrigin } from "./Session.js"
import * as Models from "./Models.js"

/** @since 0.1.0 */
export type Transcription =
  | {
    readonly kind: "command"
    readonly command: string
    readonly convert: "wav16k" | "none"
    /** The largest file to hand the command (`VJ_TRANSCRIBE_MAX_BYTES`); absent: no limit. */
    readonly maxBytes?: number | undefined
    /** Chosen by `auto` because this Whisper model is not there: said once at start-up. */
    readonly missingModel?: { readonly name: string; readonly path: string; readonly bytes: number } | undefined
  }
  | {
    readonly kind: "whisper"
    readonly modelPath: string
    readonly language: string
    readonly concurrency: number
    readonly threads: number | undefined
    readonly secondsPerAudioMinute: number
  }
  | {
    readonly kind: "openai"
    readonly url: string
    readonly apiKey: Option.Option<Redacted.Redacted<string>>
    readonly model: string
    /** The largest request the server takes (`VJ_TRANSCRIBE_MAX_BYTES`); absent: 25 MiB, OpenAI's. */
    readonly maxBytes?: number | undefined
    /** `VJ_LANGUAGE`; absent or `auto`: detected by the server. */
    readonly language?: string | undefined
  }

/** @since 0.1.0 */
export interface ServerConfig {
  readonly host: string
  readonly port: number
  readonly dataDir: string
  readonly database: { readonly kind: "sqlite"; readonly filename: string } | {
    readonly kind: "postgres"
    readonly url: Redacted.Redacted<string>
  }
  readonly audioDir: string
  /** Recordings in S3-compatible object storage (`VJ_BLOB_URL`); absent: files in `audioDir`. */
  readonly blobs?: S3Blobs | undefined
  readonly maxUploadBytes: number
  /** Seconds without a byte before an upload is cut off (`408`); default 30. */
  readonly uploadIdleSeconds?: number | undefined
  readonly transcription: Transcription
  /**
   * Long recordings (`VJ_CHUNK_SECONDS`, `VJ_PIECE_CONCURRENCY`,
   * `VJ_MAX_AUDIO_SECONDS`); absent: pieces of 600 s, 3 at a time, at most 4 h.
   */
  readonly longRecordings?: {
    readonly chunkSeconds: number
    readonly pieceConcurrency: number
    readonly maxAudioSeconds: number
  } | undefined
  readonly ollama: { readonly host: string; readonly model: string; readonly numCtx: number }
  readonly notion: Option.Option<{
    readonly token: Redacted.Redacted<string>
    readonly databaseId: string
    readonly baseUrl: string
    readonly maxRetries: number
    /** Requests per second (shared by all nodes on PostgreSQL). Default 3. */
    readonly requestsPerSecond?: number | undefined
  }>
  /** Users' destinations: the key sealing their secrets, where Markdown folders may live, private hosts webhooks may reach. */
  readonly destinations?: {
    readonly secretKey: Option.Option<Redacted.Redacted<string>>
    readonly markdownRoot?: string | undefined
    readonly webhookAllowHosts: ReadonlyArray<string>
    /** `VJ_NOTION_BASE_URL` and `VJ_NOTION_REQUESTS_PER_SECOND` apply to users' Notion destinations too. */
    readonly notionBaseUrl?: string | undefined
    readonly notionRequestsPerSecond?: number | undefined
  } | undefined
  readonly shutdownGraceSeconds: number
  /** Stage leases (default {@link defaultLeaseSeconds}, heartbeat a third of it). */
  readonly lease?: { readonly seconds: number; readonly heartbeatSeconds: number } | undefined
  /** Orphaned audio and stale partial uploads (default: older than 1 h, swept hourly). */
  readonly audioSweep?: { readonly minAgeSeconds: number; readonly intervalSeconds: number } | undefined
  readonly limits: { readonly perMinute: number; readonly uploadsPerMinute: number; readonly authFailuresPerMinute: number }
  /**
   * How many reverse proxies in front append to `X-Forwarded-For` (see
   * `RateLimit.Options.trustProxy`); absent or `0`: the header is ignored.
   */
  readonly trustProxy?: number | undefined
  /** A watch folder ingested for one user (`WatchFolder`); absent: none. */
  readonly watch?: {
    readonly directory: string
    readonly userId: string
    readonly moveTo?: string | undefined
    readonly settleSeconds?: number | undefined
  } | undefined
  /**
   * Serve HTTPS (HTTP/1.1) with this certificate and key, read at start-up
   * from `VJ_TLS_CERT` / `VJ_TLS_KEY`; absent: plain HTTP.
   */
  readonly tls?: {
    readonly certFile: string
    readonly cert: string
    readonly key: Redacted.Redacted<string>
  } | undefined
  /** Browser session lifetime in seconds (default `Session.defaultLifetimeSeconds`, 30 days). */
  readonly sessionSeconds?: number | undefined
  /** The origin browsers use (`scheme://host[:port]`) when a reverse proxy stands in front; absent: the request's own. */
  readonly publicOrigin?: string | undefined
  /** Seconds between SSE heartbeat comments on `GET /events` (default 15). */
  readonly eventsHeartbeatSeconds?: number | undefined
  /** Seconds between re-reads of the events table by an idle `GET /events` stream (default 5). */
  readonly eventsPollSeconds?: number | undefined
  /** The built web app to serve (default: the package's `web-dist/`, see `WebApp.defaultDirectory`). */
  readonly webDir?: string | undefined
  /** When set, `GET /metrics` needs `Authorization: Bearer <token>`. */
  readonly metricsToken?: Option.Option<Redacted.Redacted<string>> | undefined
  /** Export traces over OTLP/HTTP to `<endpoint>/v1/traces`; absent: spans stay in-process. */
  readonly otlp?: { readonly endpoint: string; readonly serviceName: string } | undefined
}

/**
 * Where recordings go when `VJ_BLOB_URL=s3://…`. Credentials are not here:
 * the AWS SDK reads them itself (`AWS_ACCESS_KEY_ID`, profiles, roles).
 * @since 0.1.0
 */
export interface S3Blobs {
  readonly kind: "s3"
  readonly bucket: string
  readonly prefix: string
  readonly region?: string | undefined
  readonly endpoint?: string | undefined
  readonly forcePathStyle: boolean
}

/** The default offline engine: pocketsphinx with its en-us model (Debian packages). @since 0.1.0 */
export const defaultTranscribeCommand = "pocketsphinx_continuous -infile {input} -logfn /dev/null"

/**
 * How long a stage's lease lasts unless renewed: the longest a killed node's
 * work waits before another node takes it over. Chosen with
 * `bench/src/lease.ts` (PostgreSQL, 20 running stages): 10 s with a 3 s
 * heartbeat took a SIGKILLed node's work over after 9.0 s (p50) instead of
 * 25.2 s for 30 s / 10 s, for 280 more heartbeat UPDATEs a minute (single-row,
 * by primary key: about 0.2 per running stage per second). Two beats may fail
 * (a database hiccup) before the lease lapses; after that another node runs
 * the stage again, which every stage tolerates (at-least-once, fenced writes).
 * @since 0.1.0
 */
export const defaultLeaseSeconds = 10

const positive = (name: string, fallback: number) =>
  Config.integer(name).pipe(
    Config.withDefault(fallback),
    Config.validate({ message: `${name} must be a positive integer`, validation: (n) => n > 0 })
  )

/** Like {@link positive}, for settings that may be fractional (rates, seconds). */
const positiveNumber = (name: string, fallback: number) =>
  Config.number(name).pipe(
    Config.withDefault(fallback),
    Config.validate({ message: `${name} must be a positive number`, validation: (n) => n > 0 && Number.isFinite(n) })
  )

/**
 * How every command logs (`VJ_LOG_FORMAT`): `pretty` for people, `json` for
 * log collectors (one object per line, annotations and spans as fields).
 * For `json`, run with `NodeRuntime.runMain({ disablePrettyLogger: true })`,
 * or runMain's pretty logger still prints beside it; for `pretty` this layer
 * adds nothing and runMain's pretty logger is the one.
 * @since 0.1.0
 * @category layers
 */
export const layerLogger: Layer.Layer<never, ConfigError.ConfigError> = Layer.unwrapEffect(
  Config.literal("pretty", "json")("VJ_LOG_FORMAT").pipe(
    Config.withDefault("pretty" as const),
    Effect.map((format) => (format === "json" ? Logger.json : Layer.empty))
  )
)

/**
 * The configuration, from the environment.
 * @since 0.1.0
 */
export const config: Config.Config<ServerConfig> = Config.all({
  host: Config.string("VJ_HOST").pipe(Config.withDefault("127.0.0.1")),
  port: Config.port("VJ_PORT").pipe(Config.withDefault(3000)),
  dataDir: Config.string("VJ_DATA_DIR").pipe(Config.withDefault("./data")),
  databaseUrl: Config.option(Config.redacted("VJ_DATABASE_URL")),
  audioDir: Config.option(Config.string("VJ_AUDIO_DIR")),
  blobUrl: Config.option(Config.string("VJ_BLOB_URL")),
  awsRegion: Config.option(Config.string("AWS_REGION").pipe(Config.orElse(() => Config.string("AWS_DEFAULT_REGION")))),
  s3Endpoint: Config.option(Config.url("AWS_ENDPOINT_URL_S3").pipe(Config.orElse(() => Config.url("AWS_ENDPOINT_URL")))),
  s3PathStyle: Config.option(Config.boolean("VJ_S3_PATH_STYLE")),
  maxUploadBytes: positive("VJ_MAX_UPLOAD_BYTES", 100 * 1024 * 1024),
  uploadIdleSeconds: positive("VJ_UPLOAD_IDLE_SECONDS", 30),
  transcriber: Config.literal("auto", "whisper", "command", "openai")("VJ_TRANSCRIBER").pipe(Config.withDefault("auto" as const)),
  whisperModel: Config.string("VJ_WHISPER_MODEL").pipe(Config.withDefault(Models.defaultModel)),
  language: Config.string("VJ_LANGUAGE").pipe(
    Config.withDefault("auto"),
    Config.validate({ message: "VJ_LANGUAGE must be auto or a two-letter language code (en, de, fr, …)", validation: (l) => /^(auto|[a-z]{2,3})$/.test(l) })
  ),
  whisperConcurrency: positive("VJ_WHISPER_CONCURRENCY", 1),
  whisperThreads: Config.option(
    Config.integer("VJ_WHISPER_THREADS").pipe(Config.validate({ message: "VJ_WHISPER_THREADS must be a positive integer", validation: (n) => n > 0 }))
  ),
  whisperSecondsPerAudioMinute: positiveNumber("VJ_WHISPER_SECONDS_PER_AUDIO_MINUTE", 60),
  transcribeCommand: Config.string("VJ_TRANSCRIBE_COMMAND").pipe(Config.withDefault(defaultTranscribeCommand)),
  transcribeConvert: Config.literal("wav16k", "none")("VJ_TRANSCRIBE_CONVERT").pipe(Config.withDefault("wav16k" as const)),
  transcribeUrl: Config.url("VJ_TRANSCRIBE_URL").pipe(Config.withDefault(new URL("http://127.0.0.1:8000"))),
  transcribeApiKey: Config.option(Config.redacted("VJ_TRANSCRIBE_API_KEY")),
  transcribeModel: Config.string("VJ_TRANSCRIBE_MODEL").pipe(Config.withDefault("whisper-1")),
  transcribeMaxBytes: Config.option(
    Config.integer("VJ_TRANSCRIBE_MAX_BYTES").pipe(
      Config.validate({ message: "VJ_TRANSCRIBE_MAX_BYTES must be a positive integer", validation: (n) => n > 0 })
    )
  ),
  chunkSeconds: positiveNumber("VJ_CHUNK_SECONDS", 600),
  pieceConcurrency: positive("VJ_PIECE_CONCURRENCY", 3),
  maxAudioSeconds: positiveNumber("VJ_MAX_AUDIO_SECONDS", 4 * 3600),
  ollamaHost: Config.url("OLLAMA_HOST").pipe(Config.withDefault(new URL("http://127.0.0.1:11434"))),
  ollamaModel: Config.string("VJ_OLLAMA_MODEL").pipe(Config.withDefault("llama3.2")),
  ollamaNumCtx: positive("VJ_OLLAMA_NUM_CTX", 8192),
  notionToken: Config.option(Config.redacted("NOTION_TOKEN")),
  notionDatabaseId: Config.option(Config.string("VJ_NOTION_DATABASE_ID")),
  notionBaseUrl: Config.url("VJ_NOTION_BASE_URL").pipe(Config.withDefault(new URL("https://api.notion.com"))),
  notionMaxRetries: positive("NOTION_MAX_RETRIES", 5),
  notionRequestsPerSecond: positiveNumber("VJ_NOTION_REQUESTS_PER_SECOND", 3),
  secretKey: Config.option(Config.redacted("VJ_SECRET_KEY")),
  markdownRoot: Config.option(Config.string("VJ_MARKDOWN_ROOT")),
  webhookAllowHosts: Config.string("VJ_WEBHOOK_ALLOW_HOSTS").pipe(Config.withDefault("")),
  shutdownGraceSeconds: Config.integer("VJ_SHUTDOWN_GRACE_SECONDS").pipe(
    Config.withDefault(30),
    Config.validate({ message: "VJ_SHUTDOWN_GRACE_SECONDS must be ≥ 0", validation: (n) => n >= 0 })
  ),
  leaseSeconds: positive("VJ_LEASE_SECONDS", defaultLeaseSeconds),
  heartbeatSeconds: Config.option(Config.number("VJ_HEARTBEAT_SECONDS")),
  audioSweepAgeSeconds: positive("VJ_AUDIO_SWEEP_AGE_SECONDS", 3600),
  audioSweepIntervalSeconds: positive("VJ_AUDIO_SWEEP_INTERVAL_SECONDS", 3600),
  perMinute: positive("VJ_RATE_LIMIT_PER_MINUTE", 120),
  uploadsPerMinute: positive("VJ_UPLOADS_PER_MINUTE", 10),
  authFailuresPerMinute: positive("VJ_AUTH_FAILURES_PER_MINUTE", 10),
  watchDir: Config.option(Config.string("VJ_WATCH_DIR")),
  watchUser: Config.option(Config.string("VJ_WATCH_USER")),
  watchMoveTo: Config.option(Config.string("VJ_WATCH_MOVE_TO")),
  watchSettleSeconds: positiveNumber("VJ_WATCH_SETTLE_SECONDS", 2),
  trustProxy: Config.integer("VJ_TRUST_PROXY").pipe(
    Config.withDefault(0),
    Config.validate({ message: "VJ_TRUST_PROXY must be the number of proxies in front (an integer ≥ 0)", validation: (n) => n >= 0 })
  ),
  tlsCert: Config.option(Config.string("VJ_TLS_CERT")),
  tlsKey: Config.option(Config.string("VJ_TLS_KEY")),
  metricsToken: Config.option(Config.redacted("VJ_METRICS_TOKEN")),
  otlpEndpoint: Config.option(Config.url("OTEL_EXPORTER_OTLP_ENDPOINT")),
  otelServiceName: Config.string("OTEL_SERVICE_NAME").pipe(Config.withDefault("voice-journal")),
  sessionSeconds: positive("VJ_SESSION_SECONDS", defaultLifetimeSeconds),
  publicOrigin: Config.option(Config.string("VJ_PUBLIC_ORIGIN")),
  eventsPollSeconds: positiveNumber("VJ_EVENTS_POLL_SECONDS", 5)
}).pipe(
  Config.mapOrFail((c): Either.Either<ServerConfig, ConfigError.ConfigError> => {
    // relative to where the command was typed (pnpm runs scripts inside the package)
    const base = process.env.INIT_CWD ?? process.cwd()
    const dataDir = path.resolve(base, c.dataDir)
    let database: ServerConfig["database"] = { kind: "sqlite", filename: path.join(dataDir, "journal.db") }
    if (Option.isSome(c.databaseUrl)) {
      const url = Redacted.value(c.databaseUrl.value)
      if (/^postgres(ql)?:\/\//.test(url)) database = { kind: "postgres", url: c.databaseUrl.value }
      else if (url.startsWith("sqlite:")) database = { kind: "sqlite", filename: path.resolve(base, url.slice("sqlite:".length)) }
      else {
        return Either.left(ConfigError.InvalidData(["VJ_DATABASE_URL"], "must start with postgres:// or sqlite:"))
      }
    }
    let notion: ServerConfig["notion"] = Option.none()
    if (Option.isSome(c.notionToken)) {
      if (Option.isNone(c.notionDatabaseId)) {
        return Either.left(ConfigError.MissingData(["VJ_NOTION_DATABASE_ID"], "required when NOTION_TOKEN is set"))
      }
      notion = Option.some({
        token: c.notionToken.value,
        databaseId: c.notionDatabaseId.value,
        baseUrl: c.notionBaseUrl.toString().replace(/\/$/, ""),
        maxRetries: c.notionMaxRetries,
        requestsPerSecond: c.notionRequestsPerSecond
      })
    }
    if (Option.isSome(c.secretKey) && Either.isLeft(Effect.runSync(Effect.either(SecretBox.decodeKey(c.secretKey.value))))) {
      return Either.left(ConfigError.InvalidData(["VJ_SECRET_KEY"], "must be 32 bytes: 64 hex digits or base64 (e.g. `openssl rand -hex 32`)"))
    }
    // a heartbeat at or past the lease lets the lease lapse under a live stage: another node would run it too
    const heartbeatSeconds = Option.getOrElse(c.heartbeatSeconds, () => c.leaseSeconds / 3)
    if (!(heartbeatSeconds > 0 && heartbeatSeconds < c.leaseSeconds)) {
      return Either.left(ConfigError.InvalidData(
        ["VJ_HEARTBEAT_SECONDS"],
        `must be more than 0 and less than VJ_LEASE_SECONDS (${c.leaseSeconds})`
      ))
    }
    let blobs: S3Blobs | undefined = undefined
    if (Option.isSome(c.blobUrl)) {
      const parsed = S3Url.parse(c.blobUrl.value)
      if (Either.isLeft(parsed)) return Either.left(ConfigError.InvalidData(["VJ_BLOB_URL"], parsed.left))
      const endpoint = Option.map(c.s3Endpoint, (u) => u.toString())
      blobs = {
        kind: "s3",
        ...parsed.right,
        // S3-compatible servers ignore the region but the SDK wants one
        region: Option.getOrUndefined(Option.orElse(c.awsRegion, () => Option.as(endpoint, "us-east-1"))),
        endpoint: Option.getOrUndefined(endpoint),
        // MinIO and Garage serve path-style by default; AWS prefers virtual-hosted buckets
        forcePathStyle: Option.getOrElse(c.s3PathStyle, () => Option.isSome(endpoint))
      }
    }
    let publicOrigin: string | undefined = undefined
    if (Option.isSome(c.publicOrigin)) {
      publicOrigin = normalizeOrigin(c.publicOrigin.value)
      if (publicOrigin === undefined || !/^https?:\/\/[^/]+\/?$/i.test(c.publicOrigin.value.trim())) {
        return Either.left(ConfigError.InvalidData(["VJ_PUBLIC_ORIGIN"], "must be an origin: http(s)://host[:port], no path"))
      }
    }
    const tlsFiles = readTls(base, c.tlsCert, c.tlsKey)
    if (Either.isLeft(tlsFiles)) return Either.left(tlsFiles.left)
    let watch: ServerConfig["watch"] = undefined
    if (Option.isSome(c.watchDir)) {
      if (Option.isNone(c.watchUser)) {
        return Either.left(ConfigError.MissingData(["VJ_WATCH_USER"], "required when VJ_WATCH_DIR is set (the id of an existing user)"))
      }
      watch = {
        directory: path.resolve(base, c.watchDir.value),
        userId: c.watchUser.value,
        moveTo: Option.match(c.watchMoveTo, { onNone: () => undefined, onSome: (d) => path.resolve(base, d) }),
        settleSeconds: c.watchSettleSeconds
      }
    } else if (Option.isSome(c.watchUser) || Option.isSome(c.watchMoveTo)) {
      return Either.left(ConfigError.MissingData(["VJ_WATCH_DIR"], "required when VJ_WATCH_USER or VJ_WATCH_MOVE_TO is set"))
    }
    const transcription = chooseTranscription(base, dataDir, c)
    if (Either.isLeft(transcription)) return Either.left(transcription.left)
    return Either.right({
      watch,
      host: c.host,
      port: c.port,
      dataDir,
      database,
      audioDir: Option.match(c.audioDir, { onNone: () => path.join(dataDir, "audio"), onSome: (d) => path.resolve(base, d) }),
      blobs,
      maxUploadBytes: c.maxUploadBytes,
      uploadIdleSeconds: c.uploadIdleSeconds,
      transcription: transcription.right,
      longRecordings: { chunkSeconds: c.chunkSeconds, pieceConcurrency: c.pieceConcurrency, maxAudioSeconds: c.maxAudioSeconds },
      ollama: { host: c.ollamaHost.toString().replace(/\/$/, ""), model: c.ollamaModel, numCtx: c.ollamaNumCtx },
      notion,
      destinations: {
        secretKey: c.secretKey,
        markdownRoot: Option.match(c.markdownRoot, { onNone: () => undefined, onSome: (d) => path.resolve(base, d) }),
        webhookAllowHosts: c.webhookAllowHosts.split(",").map((h) => h.trim()).filter((h) => h !== ""),
        notionBaseUrl: c.notionBaseUrl.toString().replace(/\/$/, ""),
        notionRequestsPerSecond: c.notionRequestsPerSecond
      },
      shutdownGraceSeconds: c.shutdownGraceSeconds,
      lease: { seconds: c.leaseSeconds, heartbeatSeconds },
      audioSweep: { minAgeSeconds: c.audioSweepAgeSeconds, intervalSeconds: c.audioSweepIntervalSeconds },
      limits: { perMinute: c.perMinute, uploadsPerMinute: c.uploadsPerMinute, authFailuresPerMinute: c.authFailuresPerMinute },
      trustProxy: c.trustProxy,
      tls: tlsFiles.right,
      metricsToken: c.metricsToken,
      otlp: Option.match(c.otlpEndpoint, {
        onNone: () => undefined,
        onSome: (url) => ({ endpoint: url.toString().replace(/\/$/, ""), serviceName: c.otelServiceName })
      }),
      sessionSeconds: c.sessionSeconds,
      publicOrigin,
      eventsPollSeconds: c.eventsPollSeconds
    })
  })
)

/**
 * `auto` takes local Whisper when its model file is there and pocketsphinx
 * (the `command` default) otherwise; `whisper` insists on the model.
 */
const chooseTranscription = (
  base: string,
  dataDir: string,
  c: {
    readonly transcriber: "auto" | "whisper" | "command" | "openai"
    readonly whisperModel: string
    readonly language: string
    readonly whisperConcurrency: number
    readonly whisperThreads: Option.Option<number>
    readonly whisperSecondsPerAudioMinute: number
    readonly transcribeCommand: string
    readonly transcribeConvert: "wav16k" | "none"
    readonly transcribeUrl: URL
    readonly transcribeApiKey: Option.Option<Redacted.Redacted<string>>
    readonly transcribeModel: string
    readonly transcribeMaxBytes: Option.Option<number>
  }
): Either.Either<Transcription, ConfigError.ConfigError> => {
  // absent unless set: the engine's own default applies
  const limit = Option.match(c.transcribeMaxBytes, { onNone: () => ({}), onSome: (maxBytes) => ({ maxBytes }) })
  const command: Transcription = { kind: "command", command: c.transcribeCommand, convert: c.transcribeConvert, ...limit }
  if (c.transcriber === "openai") {
    return Either.right({
      kind: "openai",
      url: c.transcribeUrl.toString(),
      apiKey: c.transcribeApiKey,
      model: c.transcribeModel,
      language: c.language,
      ...limit
    })
  }
  if (c.transcriber === "command") return Either.right(command)
  const named = Models.find(c.whisperModel)
  if (named === undefined && !c.whisperModel.endsWith(".bin")) {
    return Either.left(ConfigError.InvalidData(
      ["VJ_WHISPER_MODEL"],
      `unknown model ${JSON.stringify(c.whisperModel)}: one of ${Models.catalog.map((m) => m.name).join(", ")}, or the path of a ggml .bin file`
    ))
  }
  const modelPath = named !== undefined ? Models.pathOf(dataDir, named) : path.resolve(base, c.whisperModel)
  if (!fs.existsSync(modelPath)) {
    if (c.transcriber === "whisper") {
      return Either.left(ConfigError.InvalidData(
        ["VJ_WHISPER_MODEL"],
        `${modelPath} does not exist${named !== undefined ? `: run voice-journal models pull ${named.name}` : ""}`
      ))
    }
    return Either.right({
      ...command,
      missingModel: { name: named?.name ?? c.whisperModel, path: modelPath, bytes: named?.bytes ?? 0 }
    })
  }
  return Either.right({
    kind: "whisper",
    modelPath,
    language: c.language,
    concurrency: c.whisperConcurrency,
    threads: Option.getOrUndefined(c.whisperThreads),
    secondsPerAudioMinute: c.whisperSecondsPerAudioMinute
  })
}

/**
 * Both TLS variables or neither; the files are read here so that a missing,
 * unreadable or mismatched pair stops start-up naming the variable instead
 * of failing on the first connection. The key's contents never reach a
 * message.
 */
const readTls = (
  base: string,
  certVar: Option.Option<string>,
  keyVar: Option.Option<string>
): Either.Either<ServerConfig["tls"], ConfigError.ConfigError> => {
  if (Option.isNone(certVar) && Option.isNone(keyVar)) return Either.right(undefined)
  if (Option.isNone(keyVar)) return Either.left(ConfigError.MissingData(["VJ_TLS_KEY"], "required when VJ_TLS_CERT is set"))
  if (Option.isNone(certVar)) return Either.left(ConfigError.MissingData(["VJ_TLS_CERT"], "required when VJ_TLS_KEY is set"))
  const read = (name: string, file: string): Either.Either<string, ConfigError.ConfigError> => {
    try {
      return Either.right(fs.readFileSync(file, "utf8"))
    } catch (e) {
      return Either.left(ConfigError.InvalidData([name], `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`))
    }
  }
  const certFile = path.resolve(base, certVar.value)
  const keyFile = path.resolve(base, keyVar.value)
  const cert = read("VJ_TLS_CERT", certFile)
  if (Either.isLeft(cert)) return Either.left(cert.left)
  const key = read("VJ_TLS_KEY", keyFile)
  if (Either.isLeft(key)) return Either.left(key.left)
  try {
    // parses both and checks that the key belongs to the certificate
    tls.createSecureContext({ cert: cert.right, key: key.right })
  } catch (e) {
    return Either.left(ConfigError.InvalidData(
      ["VJ_TLS_CERT"],
      `${certFile} and the key in VJ_TLS_KEY (${keyFile}) are not a usable PEM certificate and its private key: ${(e as Error).message}`
    ))
  }
  return Either.right({ certFile, cert: cert.right, key: Redacted.make(key.right) })
}
