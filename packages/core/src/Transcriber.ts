/**
 * Speech to text. Two real adapters:
 *
 * - {@link layerOpenAi}: any OpenAI-compatible `POST /v1/audio/transcriptions`
 *   server — OpenAI, Groq, speaches/faster-whisper, whisper.cpp's server,
 *   LocalAI. The file is streamed from disk in a multipart body.
 * - {@link layerCommand}: a local program (whisper.cpp's CLI, pocketsphinx, …)
 *   run without a shell, optionally on a 16 kHz mono WAV made with ffmpeg,
 *   whose standard output is the transcript.
 *
 * Failure classification (both adapters):
 *
 * | Failure                                              | Class     |
 * |------------------------------------------------------|-----------|
 * | connection refused / reset, DNS, no response          | temporary |
 * | request timed out (`timeout`)                         | temporary |
 * | HTTP 408, 409, 425, 429 (+ Retry-After), 5xx          | temporary |
 * | HTTP 400 (bad/empty file), 413, 415 (undecodable)     | permanent |
 * | HTTP 401 / 403 (key)                                  | permanent |
 * | HTTP 404 (model not installed: says to install it)    | permanent |
 * | a 2xx body that is not a transcription                | permanent |
 * | command not found / exits non-zero                    | permanent |
 * | ffmpeg cannot decode the input                        | permanent |
 * | command prints nothing (no speech recognised)         | permanent |
 *
 * Messages say what happened and what to do; a program's stderr, a server's
 * raw answer and paths go in the error's `detail`, which is only logged.
 *
 * @since 0.1.0
 */
import { HttpClient, HttpClientRequest } from "@effect/platform"
import type { CommandExecutor } from "@effect/platform/CommandExecutor"
import { FetchHttpClient } from "@effect/platform"
import { Agent, FormData as UndiciFormData, fetch as undiciFetch } from "@effect/platform-node/Undici"
import { Context, Duration, Effect, Layer, Redacted, Schema } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { undecodable } from "./AudioProbe.js"
import type * as Domain from "./Domain.js"
import { fromHttpStatus, fromTransportError, parseRetryAfter, PermanentError, redactInternals, TemporaryError } from "./Errors.js"
import * as Command from "./internal/command.js"

/**
 * A recording on local disk.
 * @since 0.1.0
 */
export interface AudioInput {
  readonly path: string
  readonly mimeType: string
  /** The voice entry it belongs to, for engines that log or correlate. */
  readonly entryId?: string | undefined
}

/** A timestamped stretch of a transcript (seconds). @since 0.1.0 */
export type Segment = Domain.Segment

/**
 * What an engine heard, plus what it reports about it.
 * @since 0.1.0
 */
export interface Transcript {
  readonly text: string
  readonly engine: string
  readonly language: string | null
  readonly durationSeconds: number | null
  readonly segments: ReadonlyArray<Segment> | null
}

/**
 * @since 0.1.0
 * @category tags
 */
export class Transcriber extends Context.Tag("@voice-journal/core/Transcriber")<Transcriber, {
  readonly transcribe: (audio: AudioInput) => Effect.Effect<Transcript, TemporaryError | PermanentError>
  /**
   * The largest file the engine takes, if it has a limit: larger recordings
   * are sent in pieces that fit (`AudioPieces`, `Pipeline`).
   */
  readonly maxBytes?: number | undefined
}>() {}

/**
 * The request body OpenAI's endpoint accepts (larger ones get `413`).
 * @since 0.1.0
 */
export const openAiMaxBytes = 25 * 1024 * 1024

// --- OpenAI-compatible ------------------------------------------------------

/**
 * @since 0.1.0
 * @category models
 */
export interface OpenAiTranscriberConfig {
  /** e.g. `https://api.openai.com`, `http://127.0.0.1:8000` (the `/v1/...` path is appended). */
  readonly baseUrl: string
  readonly apiKey?: Redacted.Redacted<string> | undefined
  /** e.g. `whisper-1`, `Systran/faster-whisper-small`. */
  readonly model: string
  /** ISO-639-1 hint; detected by the engine when absent. */
  readonly language?: string | undefined
  /** Long by default: transcription takes a while on CPU engines. Default 10 minutes. */
  readonly timeout?: Duration.DurationInput | undefined
  /** The largest request the server takes; larger recordings go in pieces. Default {@link openAiMaxBytes}. */
  readonly maxBytes?: number | undefined
}

const VerboseTranscription = Schema.Struct({
  text: Schema.String,
  language: Schema.optional(Schema.NullOr(Schema.String)),
  duration: Schema.optional(Schema.NullOr(Schema.Number)),
  segments: Schema.optional(Schema.NullOr(Schema.Array(Schema.Struct({
    start: Schema.Number,
    end: Schema.Number,
    text: Schema.String
  }))))
})

/** The error text an OpenAI-style server put in its body, if any. */
const errorMessage = (body: string): string => {
  try {
    const parsed = JSON.parse(body) as { error?: { message?: unknown } | string; detail?: unknown; message?: unknown }
    const e = parsed.error
    const text = typeof e === "string" ? e : typeof e?.message === "string" ? e.message : parsed.detail ?? parsed.message
    if (typeof text === "string") return text
  } catch {
    // not JSON
  }
  return body.slice(0, 300)
}

/**
 * @since 0.1.0
 * @category constructors
 */
export const makeOpenAi = (config: OpenAiTranscriberConfig) =>
  Effect.gen(function*() {
    const client = (yield* HttpClient.HttpClient).pipe(HttpClient.filterStatusOk)
    const url = new URL("v1/audio/transcriptions", config.baseUrl.endsWith("/") ? config.baseUrl : `${config.baseUrl}/`)
    const timeout = Duration.decode(config.timeout ?? "10 minutes")

    const transcribe = (audio: AudioInput) =>
      Effect.gen(function*() {
        // a file-backed Blob: the body streams from disk
        const file = yield* Effect.tryPromise({
          try: () => fs.openAsBlob(audio.path, { type: audio.mimeType }),
          catch: (cause) =>
            new PermanentError({ service: "transcriber", message: "the recording could not be read from storage", detail: String(cause), cause })
        })
        // undici's own FormData: the fetch below is undici's, not Node's bundled one
        const form = new UndiciFormData()
        form.append("file", file, `audio${extensionOf(audio.mimeType)}`)
        form.append("model", config.model)
        form.append("response_format", "verbose_json")
        if (config.language !== undefined) form.append("language", config.language)
        let request = HttpClientRequest.post(url).pipe(HttpClientRequest.bodyFormData(form as unknown as FormData))
        if (config.apiKey !== undefined) request = HttpClientRequest.bearerToken(request, Redacted.value(config.apiKey))
        const response = yield* client.execute(request).pipe(
          Effect.timeoutFail({
            duration: timeout,
            onTimeout: () => new TemporaryError({ service: "transcriber", message: `no answer within ${Duration.format(timeout)}` })
          }),
          Effect.catchTags({
            RequestError: (e) => Effect.fail(fromTransportError("transcriber", e.cause ?? e)),
            ResponseError: (e) =>
              e.response.text.pipe(
                Effect.orElseSucceed(() => ""),
                Effect.flatMap((body) => {
                  const status = e.response.status
                  // the server's own words help (e.g. "Incorrect API key"), but may echo its paths
                  const said = redactInternals(errorMessage(body)).slice(0, 200)
                  const message = status === 404
                    ? `model '${config.model}' is not available on the transcription server: install or load it there (${said})`
                    : status === 401 || status === 403
                    ? `the transcription server refused the API key (${said}): check the configured key`
                    : status === 400 || status === 413 || status === 415 || status === 422
                    ? `the transcription server could not use the recording (${said}): upload it again or convert it to another format`
                    : `the transcription server answered ${status}: ${said}`
                  return Effect.fail(fromHttpStatus("transcriber", status, message, {
                    retryAfterMillis: parseRetryAfter(e.response.headers["retry-after"]),
                    detail: `${url.href} answered ${status}: ${body.slice(0, 2000)}`
                  }))
                })
              )
          })
        )
        const body = yield* response.text.pipe(Effect.mapError((e) => fromTransportError("transcriber", e)))
        const parsed = yield* Effect.try(() => JSON.parse(body) as unknown).pipe(
          Effect.flatMap(Schema.decodeUnknown(VerboseTranscription)),
          Effect.mapError((cause) =>
            new PermanentError({
              service: "transcriber",
              message: "the transcription server's answer is not a transcription: is it an OpenAI-compatible server?",
              detail: `${url.href} answered: ${body.slice(0, 2000)}`,
              cause
            })
          )
        )
        return {
          text: parsed.text.trim(),
          engine: `openai-compatible:${config.model}`,
          language: parsed.language ?? config.language ?? null,
          durationSeconds: parsed.duration ?? null,
          segments: parsed.segments ?? null
        } satisfies Transcript
      })

    return Transcriber.of({ transcribe, maxBytes: config.maxBytes ?? openAiMaxBytes })
  })

const extensionOf = (mimeType: string): string =>
  ({
    "audio/mpeg": ".mp3",
    "audio/mp4": ".m4a",
    "audio/wav": ".wav",
    "audio/ogg": ".ogg",
    "audio/flac": ".flac",
    "audio/webm": ".webm",
    "audio/aac": ".aac",
    "audio/3gpp": ".3gp"
  } as Record<string, string>)[mimeType] ?? ""

/**
 * An HTTP client without undici's 5-minute header and body timeouts: a CPU
 * whisper server answers a long recording only when it is done, and the
 * configured `timeout` must be the one deadline.
 */
const patientHttpClient = FetchHttpClient.layer.pipe(
  Layer.provide(Layer.scoped(
    FetchHttpClient.Fetch,
    Effect.acquireRelease(
      Effect.sync(() => new Agent({ headersTimeout: 0, bodyTimeout: 0 })),
      (agent) => Effect.promise(() => agent.destroy())
    ).pipe(Effect.map((dispatcher) =>
      ((input: any, init: any) => undiciFetch(input, { ...init, dispatcher })) as unknown as typeof globalThis.fetch
    ))
  ))
)

/**
 * An OpenAI-compatible transcription server.
 * @since 0.1.0
 * @category layers
 */
export const layerOpenAi = (config: OpenAiTranscriberConfig): Layer.Layer<Transcriber> =>
  Layer.effect(Transcriber, makeOpenAi(config)).pipe(Layer.provide(patientHttpClient))

// --- local command ----------------------------------------------------------

/**
 * @since 0.1.0
 * @category models
 */
export interface CommandTranscriberConfig {
  /** argv; `{input}` is replaced by the audio file's path. No shell is involved. */
  readonly command: ReadonlyArray<string>
  /** Convert to 16 kHz mono 16-bit WAV first (what whisper.cpp and pocketsphinx want). */
  readonly convert?: "wav16k" | undefined
  /** Name recorded with each transcription. Default: the program's name. */
  readonly engine?: string | undefined
  readonly timeout?: Duration.DurationInput | undefined
  /** The largest file to hand the program; larger recordings go in pieces. Default: no limit. */
  readonly maxBytes?: number | undefined
}

/**
 * Splits a command line into argv (whitespace-separated, with "double" or
 * 'single' quotes for arguments containing spaces). Never runs a shell.
 * @since 0.1.0
 */
export const parseCommandLine = (line: string): ReadonlyArray<string> =>
  Array.from(line.matchAll(/"([^"]*)"|'([^']*)'|(\S+)/g), (m) => m[1] ?? m[2] ?? m[3] ?? "")

/**
 * @since 0.1.0
 * @category constructors
 */
export const makeCommand = (config: CommandTranscriberConfig) =>
  Effect.gen(function*() {
    const executor = yield* Effect.context<CommandExecutor>()
    if (config.command.length === 0) return yield* Effect.dieMessage("Transcriber command is empty")
    const engine = config.engine ?? path.basename(config.command[0]!)
    const timeout = Duration.decode(config.timeout ?? "10 minutes")
    const notRunnable = (program: string) => (cause: unknown) =>
      new PermanentError({
        service: "transcriber",
        message: `the server cannot run ${path.basename(program)}: is it installed and on PATH?`,
        detail: `${program}: ${String(cause)}`,
        cause
      })

    /** A temp 16 kHz WAV of the input, removed when the scope closes. */
    const wav16k = (input: string) =>
      Effect.acquireRelease(
        Effect.sync(() => path.join(os.tmpdir(), `voice-journal-${globalThis.crypto.randomUUID()}.wav`)),
        (out) => Effect.sync(() => fs.rmSync(out, { force: true }))
      ).pipe(
        Effect.tap((out) =>
          Command.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", input, "-ar", "16000", "-ac", "1", "-c:a", "pcm_s16le", out])
            .pipe(
              Effect.mapError(notRunnable("ffmpeg")),
              Effect.filterOrFail(
                (r) => r.exitCode === 0,
                // ffmpeg's stderr names paths and memory addresses: log it, don't show it
                (r) => undecodable(`ffmpeg exited with ${r.exitCode}: ${Command.tail(r.stderr)}`)
              )
            )
        )
      )

    const transcribe = (audio: AudioInput) =>
      Effect.scoped(
        Effect.gen(function*() {
          const input = config.convert === "wav16k" ? yield* wav16k(audio.path) : audio.path
          const argv = config.command.map((arg) => arg.replaceAll("{input}", input))
          const result = yield* Command.run(argv).pipe(Effect.mapError(notRunnable(argv[0]!)))
          if (result.exitCode !== 0) {
            return yield* new PermanentError({
              service: "transcriber",
              message: `${engine} failed (exit code ${result.exitCode}): the transcription engine could not process the recording; the server log has the details`,
              detail: `${argv.join(" ")}: ${Command.tail(result.stderr)}`
            })
          }
          const text = result.stdout.replace(/\s+/g, " ").trim()
          if (text === "") {
            return yield* new PermanentError({ service: "transcriber", message: `${engine} recognised no speech` })
          }
          return { text, engine, language: null, durationSeconds: null, segments: null } satisfies Transcript
        })
      ).pipe(
        Effect.provide(executor),
        Effect.timeoutFail({
          duration: timeout,
          onTimeout: () => new TemporaryError({ service: "transcriber", message: `${engine} did not finish within ${Duration.format(timeout)}` })
        })
      )

    return Transcriber.of({ transcribe, maxBytes: config.maxBytes })
  })

/**
 * A local speech-to-text program.
 * @since 0.1.0
 * @category layers
 */
export const layerCommand = (config: CommandTranscriberConfig): Layer.Layer<Transcriber, never, CommandExecutor> =>
  Layer.effect(Transcriber, makeCommand(config))

