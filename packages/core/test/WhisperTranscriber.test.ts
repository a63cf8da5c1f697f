import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Layer, Schedule } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Transcriber } from "../src/Transcriber.js"
import * as WhisperTranscriber from "../src/WhisperTranscriber.js"
import { audioFile } from "./support/Audio.js"
import { tinyShape, writeRandomModel } from "./support/GgmlModel.js"

// the real native binding (@fugood/whisper.node, whisper.cpp) on a model with random weights made here:
// it proves loading, the child process, cancellation and limits; it cannot prove quality (bench:transcribe-quality does)
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vj-whisper-test-"))
const model = path.join(dir, "ggml-random.bin")
writeRandomModel(model, tinyShape)

/** Ten minutes of real speech (the fixture, looped): a run that cannot finish while the test watches it. */
const longRecording = (() => {
  const out = path.join(dir, "long.wav")
  execFileSync("ffmpeg", ["-loglevel", "error", "-y", "-stream_loop", "150", "-i", audioFile("wav"), "-c:a", "pcm_s16le", out])
  return out
})()

const layer = (config: Partial<WhisperTranscriber.WhisperConfig> = {}) =>
  WhisperTranscriber.layer({ modelPath: model, threads: 1, ...config }).pipe(Layer.provide(NodeContext.layer))

const transcribe = (file: string) => Effect.flatMap(Transcriber, (t) => t.transcribe({ path: file, mimeType: "audio/wav" }))

const isAlive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false // ESRCH: gone
  }
}

/** Waits until `n` whisper children run (the model loaded or loading). */
const childrenRunning = (n: number) =>
  Effect.sync(() => WhisperTranscriber.runningChildren.size).pipe(
    Effect.repeat({ until: (size) => size >= n, schedule: Schedule.spaced("50 millis") }),
    Effect.map(() => [...WhisperTranscriber.runningChildren])
  )

describe("WhisperTranscriber (real whisper.cpp binding, random-weight model)", () => {
  it.live("runs in a child process, and interrupting the transcription kills that process", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.fork(transcribe(longRecording))
      const [pid] = yield* childrenRunning(1)
      expect(isAlive(pid!)).toBe(true)
      yield* Fiber.interrupt(fiber)
      // the interruption returned only after the child had exited
      expect(isAlive(pid!)).toBe(false)
      expect(WhisperTranscriber.runningChildren.size).toBe(0)
    }).pipe(Effect.provide(layer())), 60_000)

  it.live("runs one transcription at a time by default; the second waits for the first", () =>
    Effect.gen(function*() {
      const first = yield* Effect.fork(transcribe(longRecording))
      const second = yield* Effect.fork(transcribe(longRecording))
      yield* childrenRunning(1)
      yield* Effect.sleep("1500 millis")
      expect(WhisperTranscriber.runningChildren.size).toBe(1)
      yield* Fiber.interrupt(first)
      // the second gets the slot once the first is gone
      const [pid] = yield* childrenRunning(1)
      expect(isAlive(pid!)).toBe(true)
      yield* Fiber.interrupt(second)
      expect(WhisperTranscriber.runningChildren.size).toBe(0)
    }).pipe(Effect.provide(layer())), 60_000)

  it.live("a run past its time per audio minute is killed and fails as a temporary error", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(transcribe(longRecording))
      expect(error._tag).toBe("TemporaryError")
      expect(error.message).toMatch(/did not finish a \d+ s recording within 2 s: .*VJ_WHISPER_SECONDS_PER_AUDIO_MINUTE/)
      expect(WhisperTranscriber.runningChildren.size).toBe(0)
    }).pipe(Effect.provide(layer({ secondsPerAudioMinute: 0.2, minimumTimeout: Duration.seconds(1) }))), 60_000)

  it.live("a file that is not a whisper model fails permanently (the real loader rejects it)", () =>
    Effect.gen(function*() {
      const bogus = path.join(dir, "ggml-bogus.bin")
      fs.writeFileSync(bogus, "not a model")
      const error = yield* Effect.flip(transcribe(audioFile("wav")).pipe(Effect.provide(layer({ modelPath: bogus }))))
      expect(error._tag).toBe("PermanentError")
      expect(error.message).toMatch(/whisper could not transcribe the recording \(Failed to initialize whisper context\)/)
      expect(error.message).toContain("voice-journal models pull")
    }), 60_000)

  it.live("a missing model names the command that gets it", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(transcribe(audioFile("wav")).pipe(Effect.provide(layer({ modelPath: path.join(dir, "ggml-base.en.bin") }))))
      expect(error._tag).toBe("PermanentError")
      expect(error.message).toBe("the Whisper model ggml-base.en.bin is missing: run voice-journal models pull base.en")
    }))

  it.live("audio that does not decode is a permanent error, before any child starts", () =>
    Effect.gen(function*() {
      const junk = path.join(dir, "junk.wav")
      fs.writeFileSync(junk, "RIFF but not really")
      const error = yield* Effect.flip(transcribe(junk))
      expect(error._tag).toBe("PermanentError")
      expect(error.message).toMatch(/could not be decoded/)
    }).pipe(Effect.provide(layer())))
})
