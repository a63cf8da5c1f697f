/**
 * Planning cut points and stitching pieces back together (pure), and the
 * ffmpeg side on real speech.
 */
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as AudioPieces from "../src/AudioPieces.js"
import { AudioTooLong } from "../src/Errors.js"
import { longRecording } from "./support/Audio.js"

describe("AudioPieces.plan", () => {
  it("cuts in the middle of the longest silence just before each boundary", () => {
    const pieces = AudioPieces.plan(250, [{ start: 40, end: 41 }, { start: 95, end: 97 }, { start: 98, end: 98.6 }, { start: 190, end: 192 }], {
      pieceSeconds: 100,
      search: 10
    })
    expect(pieces).toEqual([
      { index: 0, start: 0, end: 96, overlap: 0 }, // 95–97 is longer than 98–98.6
      { index: 1, start: 96, end: 191, overlap: 0 },
      { index: 2, start: 191, end: 250, overlap: 0 }
    ])
  })

  it("without a silence near the boundary: a hard cut, the next piece starting `overlap` seconds earlier", () => {
    const pieces = AudioPieces.plan(250, [{ start: 10, end: 12 }], { pieceSeconds: 100, search: 10, overlap: 2 })
    expect(pieces).toEqual([
      { index: 0, start: 0, end: 100, overlap: 0 },
      { index: 1, start: 98, end: 198, overlap: 2 },
      { index: 2, start: 196, end: 250, overlap: 2 }
    ])
  })

  it("a recording no longer than a piece is one piece", () => {
    expect(AudioPieces.plan(100, [], { pieceSeconds: 100 })).toEqual([{ index: 0, start: 0, end: 100, overlap: 0 }])
  })

  it("pieces fit the byte limit: their length is capped by what fits at 4 kB a second", () => {
    expect(AudioPieces.pieceSeconds(600, undefined)).toBe(600)
    expect(AudioPieces.pieceSeconds(600, 25 * 1024 * 1024)).toBe(600)
    expect(AudioPieces.pieceSeconds(600, 1_000_000)).toBe(225) // 900 kB / 4 kB/s
    expect(AudioPieces.needsPieces({ durationSeconds: 300, sizeBytes: 40e6 }, { chunkSeconds: 600, maxBytes: 25 * 1024 * 1024 })).toBe(true)
    expect(AudioPieces.needsPieces({ durationSeconds: 601, sizeBytes: 1e6 }, { chunkSeconds: 600, maxBytes: undefined })).toBe(true)
    expect(AudioPieces.needsPieces({ durationSeconds: 600, sizeBytes: 1e6 }, { chunkSeconds: 600, maxBytes: undefined })).toBe(false)
    expect(AudioPieces.needsPieces({ durationSeconds: null, sizeBytes: 40e6 }, { chunkSeconds: 600, maxBytes: 1e6 })).toBe(false)
  })
})

describe("AudioPieces.stitch", () => {
  it("at a hard cut, the words the overlap heard twice are kept once (segments trimmed)", () => {
    const stitched = AudioPieces.stitch([
      { overlap: 0, segments: [{ start: 0, end: 5, text: "we walked along" }, { start: 5, end: 10, text: "the river, today" }] },
      { overlap: 2, segments: [{ start: 8, end: 9, text: "River today." }, { start: 9, end: 14, text: "and then we went home" }] }
    ])
    expect(stitched.text).toBe("we walked along the river, today and then we went home")
    expect(stitched.segments).toEqual([
      { start: 0, end: 5, text: "we walked along" },
      { start: 5, end: 10, text: "the river, today" },
      { start: 9, end: 14, text: "and then we went home" }
    ])
  })

  it("at a cut in a silence nothing is dropped, even words that repeat across it", () => {
    const stitched = AudioPieces.stitch([
      { overlap: 0, segments: [{ start: 0, end: 2, text: "good morning" }] },
      { overlap: 0, segments: [{ start: 3, end: 5, text: "good morning" }] }
    ])
    expect(stitched.text).toBe("good morning good morning")
  })

  it("repeatedWords finds the longest run that ends one and starts the other", () => {
    expect(AudioPieces.repeatedWords(["a", "b", "c", "d"], ["c", "d", "e"])).toBe(2)
    expect(AudioPieces.repeatedWords(["a", "b"], ["x", "y"])).toBe(0)
    expect(AudioPieces.repeatedWords(["the", "end."], ["The", "End", "is", "near"])).toBe(2)
  })
})

describe("AudioTooLong", () => {
  it("says how long the recording is and how long it may be, as people say it", () => {
    expect(new AudioTooLong({ durationSeconds: 18_720, maxSeconds: 14_400 }).message).toBe("the recording is 5.2 h long; the longest accepted is 4 h")
    expect(new AudioTooLong({ durationSeconds: 186, maxSeconds: 90 }).message).toBe("the recording is 3 min long; the longest accepted is 90 s")
  })
})

describe("AudioPieces.layerFfmpeg on real speech", () => {
  it.scoped("finds the pauses between sentences and cuts compact 16 kHz mono MP3 pieces", () =>
    Effect.gen(function*() {
      const recording = longRecording(60)
      const pieces = yield* Effect.provide(AudioPieces.AudioPieces, AudioPieces.layerFfmpeg.pipe(Layer.provide(NodeContext.layer)))
      const silences = yield* pieces.silences(recording.file)
      // 1.5 s after each of the 10 sentences (the last runs to the end)
      expect(silences.length).toBe(recording.spoken.length)
      for (const s of silences) expect(s.end - s.start).toBeGreaterThan(1.2)
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vj-pieces-test-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const out = path.join(dir, "piece.mp3")
      yield* pieces.cut(recording.file, { start: 10, end: 40 }, out)
      const probe = JSON.parse(execFileSync("ffprobe", ["-v", "error", "-show_entries", "stream=codec_name,sample_rate,channels:format=duration", "-of", "json", out]).toString())
      expect(probe.streams[0]).toMatchObject({ codec_name: "mp3", sample_rate: "16000", channels: 1 })
      expect(Number(probe.format.duration)).toBeCloseTo(30, 0)
      expect(fs.statSync(out).size).toBeLessThan(30 * AudioPieces.pieceBytesPerSecond * 1.1)
    }))
})
