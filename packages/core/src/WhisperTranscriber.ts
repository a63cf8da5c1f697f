/**
 * Local Whisper (whisper.cpp through `@fugood/whisper.node`, CPU only): no
 * server to run, a ggml model file on disk (`voice-journal models pull`).
 *
 * Each transcription runs in its own child process (Node running a few lines
 * that load the native binding): the event loop never waits for model
 * loading or inference, and interrupting the effect — shutdown past its
 * grace, the time limit — SIGKILLs the child, so the native work really
 * stops and the server can exit. The interrupted stage's row is released by
 * the Pipeline and goes back to due.
 *
 * - At most `concurrency` runs at once per process (default 1): the model is
 *   CPU-bound and two runs on two cores are not faster than one after the other.
 * - A run may take `secondsPerAudioMinute` per minute of audio (at least
 *   `minimumTimeout`); past that it is killed and the attempt fails as a
 *   temporary error (retried by the stage's retry policy).
 * - `language`: an ISO-639-1 code, or `auto` (detected by multilingual
 *   models; `.en` models always transcribe English). The language reported
 *   by the engine is stored on the transcription; segments keep their
 *   timestamps (seconds).
 *
 * @since 0.1.0
 */
import type { CommandExecutor } from "@effect/platform/CommandExecutor"
import { Duration, Effect, Layer } from "effect"
import * as childProcess from "node:child_process"
import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as os from "node:os"
import * as path from "node:path"
import { undecodable } from "./AudioProbe.js"
import { PermanentError, TemporaryError } from "./Errors.js"
import * as Command from "./internal/command.js"
import { Transcriber, type Transcript } from "./Transcriber.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface WhisperConfig {
  /** A whisper.cpp ggml model file (e.g. `ggml-base.bin`). */
  readonly modelPath: string
  /** Name recorded with each transcription, e.g. `whisper.cpp:base`. Default: from the file name. */
  readonly engine?: string | undefined
  /** ISO-639-1 code or `auto` (default). */
  readonly language?: string | undefined
  /** Runs at once in this process. Default 1. */
  readonly concurrency?: number | undefined
  /** CPU threads per run. Default: the number of cores (at most 8). */
  readonly threads?: number | undefined
  /** Time allowed per minute of audio. Default 60 s (the goal is 30 s on 2 cores for `base`). */
  readonly secondsPerAudioMinute?: number | undefined
  /** Time allowed for any recording, however short (model loading included). Default 60 s. */
  readonly minimumTimeout?: Duration.DurationInput | undefined
}

/** Where the native binding lives: the child `require`s it by absolute path. */
const bindingPath = (): string => createRequire(import.meta.url).resolve("@fugood/whisper.node")

/**
 * The child: loads the model, transcribes 16 kHz mono s16le PCM, answers on
 * the IPC channel. Plain CommonJS passed with `-e`, so it runs the same from
 * sources, from dist and under test runners.
 */
const childSource = String.raw`
const [binding, model, pcmFile, language, threads] = process.argv.slice(1)
const send = (m) => new Promise((resolve) => process.send(m, resolve))
;(async () => {
  const whisper = require(binding)
  const ctx = await whisper.initWhisper({ filePath: model, useGpu: false })
  await send({ type: "loaded" })
  const pcm = require("node:fs").readFileSync(pcmFile)
  const data = pcm.buffer.slice(pcm.byteOffset, pcm.byteOffset + pcm.byteLength)
  const { promise } = ctx.transcribeData(data, { language, maxThreads: Number(threads) })
  const r = await promise
  await ctx.release()
  await send({
    type: "done",
    text: r.result,
    language: r.language ?? null,
    segments: (r.segments ?? []).map((s) => ({ start: s.t0 / 1000, end: s.t1 / 1000, text: s.text }))
  })
})().then(
  () => process.exit(0),
  // an error the binding reports; one it never reports ends the process with nothing sent (seen by the parent)
  (e) => send({ type: "failed", message: String((e && e.message) || e) }).then(() => process.exit(1))
)
`

type ChildMessage =
  | { readonly type: "loaded" }
  | { readonly type: "done"; readonly text: string; readonly language: string | null; readonly segments: Transcript["segments"] }
  | { readonly type: "failed"; readonly message: string }

/**
 * The process ids of running children, for tests that check a run really
 * stopped. Not part of the contract.
 * @internal
 */
export const runningChildren = new Set<number>()

/**
 * One child run; interruption SIGKILLs the child and waits until it is gone.
 */
const runChild = (args: ReadonlyArray<string>, stderrTail: { text: string }) =>
  Effect.async<Extract<ChildMessage, { type: "done" }>, PermanentError>((resume) => {
    const child = childProcess.spawn(process.execPath, ["-e", childSource, ...args], {
      stdio: ["ignore", "ignore", "pipe", "ipc"],
      env: { ...process.env, NODE_OPTIONS: "" }
    })
    if (child.pid !== undefined) runningChildren.add(child.pid)
    let settled = false
    const finish = (effect: Parameters<typeof resume>[0]) => {
      if (settled) return
      settled = true
      resume(effect)
    }
    child.stderr?.on("data", (chunk: Buffer) => {
      // whisper.cpp logs model details here; the tail explains a failure
      stderrTail.text = (stderrTail.text + chunk.toString("utf8")).slice(-4000)
    })
    child.on("message", (m: ChildMessage) => {
      if (m.type === "done") finish(Effect.succeed(m))
      else if (m.type === "failed") {
        finish(Effect.fail(
          new PermanentError({
            service: "transcriber",
            message: `whisper could not transcribe the recording (${m.message}): check the model file (voice-journal models pull) — the server log has the details`,
            detail: `${m.message}\n${Command.tail(stderrTail.text)}`
          })
        ))
      }
    })
    child.on("error", (cause) =>
      finish(Effect.fail(new PermanentError({ service: "transcriber", message: "the whisper worker process could not start", detail: String(cause), cause })))
    )
    const exited = new Promise<void>((resolve) =>
      child.on("exit", (code, signal) => {
        if (child.pid !== undefined) runningChildren.delete(child.pid)
        finish(Effect.fail(
          new PermanentError({
            service: "transcriber",
            message: `the whisper worker process ended without a transcript (${signal ?? `exit code ${code}`}): the server log has the details`,
            detail: Command.tail(stderrTail.text)
          })
        ))
        resolve()
      })
    )
    // interrupted: kill it and wait until it has exited (a killed child frees its CPU and memory at once)
    return Effect.promise(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
      return exited
    })
  })

/** A temp 16 kHz mono s16le PCM file of the input, removed when the scope closes. */
const pcm16k = (input: string) =>
  Effect.acquireRelease(
    Effect.sync(() => path.join(os.tmpdir(), `voice-journal-${globalThis.crypto.randomUUID()}.pcm`)),
    (out) => Effect.sync(() => fs.rmSync(out, { force: true }))
  ).pipe(
    Effect.tap((out) =>
      Command.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", input, "-ar", "16000", "-ac", "1", "-f", "s16le", out]).pipe(
        Effect.mapError((cause) =>
          new PermanentError({ service: "transcriber", message: "the server cannot run ffmpeg: is it installed and on PATH?", detail: String(cause), cause })
        ),
        Effect.filterOrFail((r) => r.exitCode === 0, (r) => undecodable(`ffmpeg exited with ${r.exitCode}: ${Command.tail(r.stderr)}`))
      )
    )
  )

/** Model name from a file name: `ggml-base.en.bin` → `base.en`. */
const modelName = (file: string) => path.basename(file).replace(/^ggml-/, "").replace(/\.bin$/, "")

/**
 * @since 0.1.0
 * @category constructors
 */
export const make = (config: WhisperConfig) =>
  Effect.gen(function*() {
    const executor = yield* Effect.context<CommandExecutor>()
    const binding = yield* Effect.try({
      try: bindingPath,
      catch: (cause) => new PermanentError({ service: "transcriber", message: "@fugood/whisper.node is not installed", detail: String(cause), cause })
    }).pipe(Effect.orDie)
    const engine = config.engine ?? `whisper.cpp:${modelName(config.modelPath)}`
    const language = config.language ?? "auto"
    const threads = config.threads ?? Math.max(1, Math.min(8, os.availableParallelism()))
    const perMinute = config.secondsPerAudioMinute ?? 60
    const minimum = Duration.decode(config.minimumTimeout ?? "60 seconds")
    const slots = yield* Effect.makeSemaphore(config.concurrency ?? 1)

    const transcribe = (audio: { readonly path: string }) =>
      Effect.scoped(
        Effect.gen(function*() {
          if (!fs.existsSync(config.modelPath)) {
            return yield* new PermanentError({
              service: "transcriber",
              message: `the Whisper model ${path.basename(config.modelPath)} is missing: run voice-journal models pull ${modelName(config.modelPath)}`
            })
          }
          const pcm = yield* pcm16k(audio.path)
          const durationSeconds = fs.statSync(pcm).size / 32000
          const limit = Duration.max(minimum, Duration.seconds(Math.ceil((durationSeconds / 60) * perMinute)))
          const stderr = { text: "" }
          const result = yield* runChild([binding, config.modelPath, pcm, language, String(threads)], stderr).pipe(
            Effect.timeoutFail({
              duration: limit,
              onTimeout: () =>
                new TemporaryError({
                  service: "transcriber",
                  message: `whisper did not finish a ${Math.round(durationSeconds)} s recording within ${
                    Math.ceil(Duration.toSeconds(limit))
                  } s: use a smaller model or raise VJ_WHISPER_SECONDS_PER_AUDIO_MINUTE`
                })
            })
          )
          const text = result.text.replace(/\s+/g, " ").trim()
          if (text === "") return yield* new PermanentError({ service: "transcriber", message: `${engine} recognised no speech` })
          return {
            text,
            engine,
            language: result.language ?? (language === "auto" ? null : language),
            durationSeconds,
            segments: (result.segments ?? []).map((s) => ({ start: s.start, end: s.end, text: s.text.trim() }))
          } satisfies Transcript
        })
      ).pipe(slots.withPermits(1), Effect.provide(executor))

    return Transcriber.of({ transcribe })
  })

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (config: WhisperConfig): Layer.Layer<Transcriber, never, CommandExecutor> => Layer.effect(Transcriber, make(config))
