/**
 * bench/long-audio — 60 minutes of speech (espeak-ng sentences with pauses,
 * concatenated with ffmpeg) through the real transcription stage on SQLite:
 * the real OpenAI-compatible adapter against a loopback engine that takes a
 * fixed time per second of audio it is sent (MS_PER_AUDIO_SECOND, default
 * 25 ms: 15 s for every 10-minute piece, 90 s for the hour), like a
 * whisper server with a fixed real-time factor.
 *
 * Three runs of the same recording, each from upload to completed transcript:
 * - one request: the whole file in one request (VJ_CHUNK_SECONDS above an hour): the baseline;
 * - pieces, one at a time: 10-minute pieces cut at pauses (VJ_PIECE_CONCURRENCY=1);
 * - pieces in parallel: the same pieces, 3 at a time (the default).
 * Prints wall times and the ratios to the baseline: what cutting costs
 * (silencedetect over the hour, re-encoding) and what parallel pieces win.
 *
 * Run: pnpm bench:long-audio   (MS_PER_AUDIO_SECOND=25, CONCURRENCY=3)
 */
import { NodeContext } from "@effect/platform-node"
import { AudioPieces, AudioProbe, BlobStore, Cleaner, Pipeline, Transcriber, VoiceJournal, WorkSignal } from "@voice-journal/core"
import { Effect, Layer, Logger, LogLevel, Schedule, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { longRecording } from "../../packages/core/test/support/Audio.js"
import * as FakeOpenAi from "../../packages/core/test/support/FakeOpenAiTranscription.js"
import { storeLayer } from "../../packages/core/test/support/PipelineHarness.js"

const MS_PER_AUDIO_SECOND = Number(process.env.MS_PER_AUDIO_SECOND ?? 25)
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 3)

const run = (label: string, recording: { readonly file: string }, options: { chunkSeconds: number; pieceConcurrency: number }) =>
  Effect.scoped(Effect.gen(function*() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vj-bench-long-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
    const engine = yield* FakeOpenAi.make({ instantText: "words", millisPerAudioSecond: MS_PER_AUDIO_SECOND })
    const services = Layer.mergeAll(
      storeLayer("sqlite", path.join(dir, "journal.db")),
      BlobStore.layerFileSystem({ directory: path.join(dir, "audio") }),
      WorkSignal.layer,
      Transcriber.layerOpenAi({ baseUrl: engine.url, model: "whisper-1" }),
      Layer.succeed(Cleaner.Cleaner, { clean: () => Effect.succeed({ title: "t", text: "t", model: "m", summary: null, actionItems: [], tags: [], sections: {} }) }),
      AudioProbe.layerFfprobe.pipe(Layer.provide(NodeContext.layer)),
      AudioPieces.layerFfmpeg.pipe(Layer.provide(NodeContext.layer))
    )
    const ctx = yield* Layer.build(services)
    const journal = yield* Effect.provide(VoiceJournal.make(), ctx)
    const { user } = yield* journal.createUser("bench")
    yield* Layer.build(Pipeline.layer({ pollInterval: "50 millis", ...options }).pipe(Layer.provide(Layer.succeedContext(ctx))))
    const bytes = new Uint8Array(fs.readFileSync(recording.file))
    const t0 = performance.now()
    const { entry } = yield* journal.ingest(user.id, Stream.make(bytes))
    const t = yield* journal.getEntry(user.id, entry.id).pipe(
      Effect.flatMap((d) => d.transcription?.status === "completed" ? Effect.succeed(d.transcription) : Effect.fail("not yet")),
      Effect.retry(Schedule.spaced("20 millis"))
    )
    const seconds = (performance.now() - t0) / 1000
    console.log(`${label.padEnd(28)} ${seconds.toFixed(2).padStart(7)} s   ${t.piecesTotal} request(s) to the engine (${engine.requests.length} sent)`)
    return seconds
  })).pipe(Logger.withMinimumLogLevel(LogLevel.Warning))

const main = Effect.gen(function*() {
  const recording = longRecording(60 * 60)
  console.log(
    `bench:long-audio — ${(recording.durationSeconds / 60).toFixed(1)} min of speech (${(fs.statSync(recording.file).size / 1e6).toFixed(1)} MB MP3), ` +
      `engine ${MS_PER_AUDIO_SECOND} ms per second of audio, SQLite, ${os.cpus().length} CPUs\n`
  )
  const whole = yield* run("one request (baseline)", recording, { chunkSeconds: 4 * 3600, pieceConcurrency: 1 })
  const serial = yield* run("10-min pieces, 1 at a time", recording, { chunkSeconds: 600, pieceConcurrency: 1 })
  const parallel = yield* run(`10-min pieces, ${CONCURRENCY} at a time`, recording, { chunkSeconds: 600, pieceConcurrency: CONCURRENCY })
  console.log(`\none request / pieces in parallel: ${(whole / parallel).toFixed(2)}× (above 1: faster in pieces)`)
  console.log(`pieces one at a time / one request: ${(serial / whole).toFixed(2)}× (above 1: what cutting costs)`)
})

Effect.runPromise(main).catch((e) => {
  console.error(e)
  process.exit(1)
})
