/**
 * Long recordings through the real server: progress and segments on
 * `GET /entries/{id}/transcriptions`, the CLI's "piece k of n" while it
 * follows an upload, and `VJ_MAX_AUDIO_SECONDS` at upload.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { promisify } from "node:util"
import { longRecording } from "../../core/test/support/Audio.js"
import * as FakeOpenAi from "../../core/test/support/FakeOpenAiTranscription.js"
import { call, filesIn, packageDir, start, waitFor } from "./support/TestServer.js"

/** Pieces of ≤ 40 s (a pause always lies in the last 10 s before a boundary), one at a time. */
const longRecordings = { chunkSeconds: 40, pieceConcurrency: 1, maxAudioSeconds: 4 * 3600 }

const uploadFile = (url: string, key: string, file: string) =>
  call(url, key, "/entries", { method: "POST", body: fs.readFileSync(file), headers: { "content-type": "audio/mpeg" } })

describe("Long recordings on the server", () => {
  it.scopedLive("GET /entries/{id}/transcriptions shows piecesDone of piecesTotal while it runs, then the segments", () =>
    Effect.gen(function*() {
      const recording = longRecording(180)
      const s = yield* start({ longRecordings }, { sentences: yield* Effect.promise(FakeOpenAi.longSentences), latencyMillis: 1500 })
      const key = yield* s.key("alice")
      const uploaded = yield* uploadFile(s.url, key, recording.file)
      expect(uploaded.status).toBe(201)
      const id = uploaded.body.id as string
      const list = () => call(s.url, key, `/entries/${id}/transcriptions`).pipe(Effect.map((r) => r.body[0]), Effect.runPromise)
      // part-way: some pieces stored, not all
      const during = yield* waitFor(async () => {
        const t = await list()
        return t.status === "processing" && t.piecesDone >= 1 ? t : undefined
      })
      expect(during.piecesTotal).toBeGreaterThanOrEqual(5)
      expect(during.piecesDone).toBeLessThan(during.piecesTotal)
      expect(during.segments).toBeNull()
      const done = yield* waitFor(async () => {
        const t = await list()
        return t.status === "completed" ? t : undefined
      }, 120_000)
      expect(done.piecesDone).toBe(done.piecesTotal)
      expect(done.text).toBe(recording.spoken.join(" "))
      expect(done.segments.map((x: { text: string }) => x.text)).toEqual(recording.spoken)
      expect(done.segments.at(-1).end).toBeGreaterThan(170) // offset into the whole recording
      // and the OpenAPI document says so
      const spec = (yield* call(s.url, undefined, "/openapi.json")).body
      expect(Object.keys(spec.components.schemas.Transcription.properties)).toEqual(
        expect.arrayContaining(["segments", "piecesTotal", "piecesDone"])
      )
    }), { timeout: 300_000 })

  it.scopedLive("the CLI following an upload says which piece is on its way ('piece 2 of 5')", () =>
    Effect.gen(function*() {
      const recording = longRecording(180)
      const s = yield* start({ longRecordings }, { sentences: yield* Effect.promise(FakeOpenAi.longSentences), latencyMillis: 2500 })
      const key = yield* s.key("alice")
      // asynchronously: the server runs in this process
      const { stdout } = yield* Effect.promise(() =>
        promisify(execFile)(process.execPath, ["--import", "tsx", "--conditions=source", "src/bin.ts", "upload", recording.file, "--url", s.url, "--key", key], {
          cwd: packageDir,
          encoding: "utf8",
          env: { ...process.env, VJ_LOG_FORMAT: "pretty" }
        })
      )
      const lines = stdout.split("\n").filter((l) => l.includes("piece"))
      expect(lines.length).toBeGreaterThan(0)
      expect(lines.every((l) => /transcription processing \(piece [1-9] of \d\)/.test(l))).toBe(true)
      expect(stdout).toMatch(/piece [2-9] of [5-9]/)
    }), { timeout: 300_000 })

  it.scopedLive("a recording longer than VJ_MAX_AUDIO_SECONDS is refused with 413 and the reason; nothing is kept", () =>
    Effect.gen(function*() {
      const recording = longRecording(180)
      const s = yield* start({ longRecordings: { ...longRecordings, maxAudioSeconds: 120 } })
      const key = yield* s.key("alice")
      const refused = yield* uploadFile(s.url, key, recording.file)
      expect(refused.status).toBe(413)
      expect(refused.body).toEqual({ error: "payload_too_large", message: "the recording is 3 min long; the longest accepted is 2 min" })
      expect(filesIn(path.join(s.dir, "audio"))).toEqual([])
      expect((yield* call(s.url, key, "/entries")).body.total).toBe(0)
      expect(s.transcription.requests.length).toBe(0)
    }), { timeout: 120_000 })
})
