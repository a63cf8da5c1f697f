/**
 * Long recordings through the real pipeline: real speech (espeak-ng,
 * concatenated with ffmpeg), real ffmpeg cuts, the real OpenAI-compatible
 * adapter against the loopback server in its `sentences` mode, which names
 * each stretch of speech after the known sentence of that length — so a
 * piece dropped, cut mid-sentence, doubled or misplaced shows in the text.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import * as fs from "node:fs"
import * as AudioPieces from "../src/AudioPieces.js"
import type { Transcription } from "../src/Domain.js"
import { LONG_SENTENCES, longRecording } from "./support/Audio.js"
import * as FakeOpenAi from "./support/FakeOpenAiTranscription.js"
import { eventually, fastPipeline, type Harness, make } from "./support/PipelineHarness.js"

const fileBody = (file: string) => Stream.make(new Uint8Array(fs.readFileSync(file)))

/** Ingests `file` and waits for its transcription to end (completed, or failed: the test then says why). */
const transcribe = (h: Harness, file: string, timeout: string = "5 minutes") =>
  Effect.gen(function*() {
    const { user } = yield* h.journal.createUser("u")
    const { entry } = yield* h.journal.ingest(user.id, fileBody(file))
    const t = yield* eventually(
      h.journal.getEntry(user.id, entry.id).pipe(
        Effect.map((d) => ["completed", "failed"].includes(d.transcription?.status ?? "") ? d.transcription! : undefined)
      ),
      timeout as never
    )
    expect(t.lastError).toBeNull()
    expect(t.status).toBe("completed")
    return t
  })

/** The segments say every sentence once, in order, at times that step by one cycle of the recording. */
const expectSentencesInOrder = (t: Transcription, spoken: ReadonlyArray<string>) => {
  expect(t.text).toBe(spoken.join(" "))
  const segments = t.segments!
  expect(segments.map((s) => s.text)).toEqual(spoken)
  const cycle = segments[LONG_SENTENCES.length]!.start - segments[0]!.start
  segments.forEach((s, i) => {
    // offset into the whole recording: the same sentence one cycle later starts one cycle later
    if (i >= LONG_SENTENCES.length) expect(s.start - segments[i - LONG_SENTENCES.length]!.start).toBeCloseTo(cycle, 0)
    expect(s.end).toBeGreaterThan(s.start)
  })
}

describe("Long recordings", () => {
  it.scopedLive("a 30-minute recording becomes one transcript: every sentence once, in order, with timestamps", () =>
    Effect.gen(function*() {
      const recording = longRecording(30 * 60)
      const h = yield* make({ kind: "sqlite", notion: false, transcription: { sentences: yield* Effect.promise(FakeOpenAi.longSentences) } })
      yield* h.startPipeline(fastPipeline) // pieces of at most 600 s (the default), 3 at a time
      const t = yield* transcribe(h, recording.file)
      expectSentencesInOrder(t, recording.spoken)
      expect(recording.spoken.length).toBe(295)
      expect(t.piecesTotal).toBe(4) // 1,827 s in pieces of ≤ 600 s
      expect(t.piecesDone).toBe(4)
      expect(t.durationSeconds).toBeCloseTo(recording.durationSeconds, 0)
      expect(t.segments!.at(-1)!.end).toBeLessThanOrEqual(recording.durationSeconds)
      // one request per piece, each a compact MP3
      expect(h.transcription.requests.map((r) => r.fileName)).toEqual(["audio.mp3", "audio.mp3", "audio.mp3", "audio.mp3"])
      for (const r of h.transcription.requests) expect(r.fileSize).toBeLessThan(600 * AudioPieces.pieceBytesPerSecond * 1.1)
      expect(fs.existsSync(AudioPieces.piecesDirectory(t.id))).toBe(false) // temporary pieces removed
    }), { timeout: 600_000 })

  it.scopedLive("the loopback server refuses bodies over 25 MiB with 413 like OpenAI; a 40 MB recording still transcribes through it", () =>
    Effect.gen(function*() {
      const recording = longRecording(240, "wav-stereo")
      const size = fs.statSync(recording.file).size
      expect(size).toBeGreaterThan(40_000_000)
      const h = yield* make({ kind: "sqlite", notion: false, transcription: { sentences: yield* Effect.promise(FakeOpenAi.longSentences) } })
      // the whole file, sent as it is, is refused
      const form = new FormData()
      form.append("file", yield* Effect.promise(() => fs.openAsBlob(recording.file, { type: "audio/wav" })), "audio.wav")
      form.append("model", "whisper-1")
      const refused = yield* Effect.promise(() => fetch(`${h.transcription.url}/v1/audio/transcriptions`, { method: "POST", body: form }))
      expect(refused.status).toBe(413)
      expect(((yield* Effect.promise(() => refused.json())) as { error: { message: string } }).error.message).toContain("Maximum content size limit")
      // 247 s is shorter than a piece: only the byte limit sends it as a compact piece
      yield* h.startPipeline(fastPipeline)
      const t = yield* transcribe(h, recording.file)
      expectSentencesInOrder(t, recording.spoken)
      const sent = h.transcription.requests.slice(1)
      expect(sent.length).toBe(1)
      expect(sent[0]!.fileName).toBe("audio.mp3")
      expect(sent[0]!.fileSize).toBeLessThan(FakeOpenAi.maxBodyBytes)
    }), { timeout: 300_000 })

  it.scopedLive("a temporary error on one piece: only that piece is sent again", () =>
    Effect.gen(function*() {
      const recording = longRecording(180)
      const h = yield* make({ kind: "sqlite", notion: false, transcription: { sentences: yield* Effect.promise(FakeOpenAi.longSentences) } })
      h.transcription.failAfter(2, { kind: "status", status: 503, body: { error: { message: "overloaded", type: "server_error" } } })
      // pieces of ≤ 40 s: the last 10 s before each boundary always hold a pause (the longest sentence is 7.7 s)
      yield* h.startPipeline({ ...fastPipeline, chunkSeconds: 40, pieceConcurrency: 2 })
      const t = yield* transcribe(h, recording.file)
      expectSentencesInOrder(t, recording.spoken)
      const n = t.piecesTotal!
      expect(n).toBeGreaterThanOrEqual(5)
      const requests = h.transcription.requests
      expect(requests.length).toBe(n + 1) // the failed piece once more, nothing else
      expect(requests.filter((r) => r.answer !== undefined).length).toBe(n) // every piece answered exactly once
    }), { timeout: 300_000 })
})
