import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import { layerCommand, layerOpenAi, parseCommandLine, Transcriber } from "../src/Transcriber.js"
import { type AudioFormat, audioFile, pngBytes, RECOGNISED_WORDS } from "./support/Audio.js"
import * as FakeOpenAi from "./support/FakeOpenAiTranscription.js"
import type { Fault } from "./support/Faults.js"

const mimeOf: Partial<Record<AudioFormat, string>> = { mp3: "audio/mpeg", m4a: "audio/mp4", wav: "audio/wav" }

const transcribe = (layer: Layer.Layer<Transcriber>, format: AudioFormat) =>
  Effect.flatMap(Transcriber, (t) => t.transcribe({ path: audioFile(format), mimeType: mimeOf[format] ?? "audio/wav" })).pipe(
    Effect.provide(layer)
  )

const pocketsphinxCommand = layerCommand({
  command: parseCommandLine("pocketsphinx_continuous -infile {input} -logfn /dev/null"),
  convert: "wav16k"
}).pipe(Layer.provide(NodeContext.layer))

const expectRecognised = (text: string) => {
  const words = text.toLowerCase().split(/\s+/)
  for (const word of RECOGNISED_WORDS) expect(words).toContain(word)
}

const tempWavs = () => fs.readdirSync(os.tmpdir()).filter((f) => f.startsWith("voice-journal-") && f.endsWith(".wav"))

describe("Transcriber: local command (pocketsphinx)", () => {
  for (const format of ["mp3", "m4a", "wav"] as const) {
    it.live(`transcribes real ${format} speech`, () =>
      Effect.gen(function*() {
        const before = tempWavs().length
        const transcript = yield* transcribe(pocketsphinxCommand, format)
        expectRecognised(transcript.text)
        expect(transcript.engine).toBe("pocketsphinx_continuous")
        expect(tempWavs().length).toBeLessThanOrEqual(before) // the converted WAV is gone
      }))
  }

  it.live("a program that is not installed is a permanent error that says so", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(transcribe(
        layerCommand({ command: ["no-such-stt-program", "{input}"] }).pipe(Layer.provide(NodeContext.layer)),
        "wav"
      ))
      expect(error._tag).toBe("PermanentError")
      expect(error.message).toContain("no-such-stt-program")
    }))

  it.live("a non-zero exit is permanent; the program's stderr is in the detail (logged), not the message (shown)", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(transcribe(
        layerCommand({ command: ["sh", "-c", "echo model file missing >&2; exit 3", "{input}"] }).pipe(Layer.provide(NodeContext.layer)),
        "wav"
      ))
      expect(error._tag).toBe("PermanentError")
      expect(error.message).toContain("exit code 3")
      expect(error.message).not.toContain("model file missing")
      expect(error.detail).toContain("model file missing")
    }))

  it.live("no output is permanent: no speech recognised", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(transcribe(layerCommand({ command: ["true", "{input}"] }).pipe(Layer.provide(NodeContext.layer)), "wav"))
      expect(error._tag).toBe("PermanentError")
      expect(error.message).toContain("no speech")
    }))

  it.live("undecodable input for the ffmpeg conversion is permanent", () =>
    Effect.gen(function*() {
      const bogus = `${os.tmpdir()}/not-audio-${process.pid}.png`
      fs.writeFileSync(bogus, pngBytes())
      const error = yield* Effect.flip(Effect.flatMap(Transcriber, (t) => t.transcribe({ path: bogus, mimeType: "audio/mpeg" })).pipe(
        Effect.provide(pocketsphinxCommand)
      ))
      expect(error._tag).toBe("PermanentError")
      expect(error.message).toContain("could not be decoded")
      // ffmpeg's words (with the path) are for the log
      expect(error.message).not.toContain(bogus)
      expect(error.detail).toContain("ffmpeg")
    }))

  it.live("a program that runs past the timeout is temporary", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(transcribe(
        layerCommand({ command: ["sh", "-c", "sleep 30", "{input}"], timeout: "300 millis" }).pipe(Layer.provide(NodeContext.layer)),
        "wav"
      ))
      expect(error._tag).toBe("TemporaryError")
    }))

  it("parses command lines without a shell", () => {
    expect(parseCommandLine(`whisper-cli -m "/models/ggml base.bin" -f {input} --no-timestamps`)).toEqual([
      "whisper-cli", "-m", "/models/ggml base.bin", "-f", "{input}", "--no-timestamps"
    ])
  })
})

describe("Transcriber: OpenAI-compatible server (loopback, pocketsphinx behind it)", () => {
  const apiKey = "sk-test-secret-key-123"
  const openAi = (url: string, model = "whisper-1") =>
    layerOpenAi({ baseUrl: url, apiKey: Redacted.make(apiKey), model, language: "en", timeout: "30 seconds" })

  for (const format of ["mp3", "m4a", "wav"] as const) {
    it.scopedLive(`transcribes real ${format} speech over the wire`, () =>
      Effect.gen(function*() {
        const server = yield* FakeOpenAi.make({ apiKey })
        const transcript = yield* transcribe(openAi(server.url), format)
        expectRecognised(transcript.text)
        expect(transcript.durationSeconds).toBeGreaterThan(1)
        expect(transcript.segments?.length).toBeGreaterThan(0)
        const [request] = server.requests
        expect(request!.authorization).toBe(`Bearer ${apiKey}`)
        expect(request!.model).toBe("whisper-1")
        expect(request!.language).toBe("en")
        expect(request!.fileSize).toBe(fs.statSync(audioFile(format)).size)
      }))
  }

  const cases: ReadonlyArray<readonly [string, Fault, "TemporaryError" | "PermanentError", number | undefined]> = [
    ["429 with Retry-After", { kind: "status", status: 429, headers: { "retry-after": "7" }, body: { error: { message: "slow down" } } }, "TemporaryError", 429],
    ["500", { kind: "status", status: 500, body: { error: { message: "boom" } } }, "TemporaryError", 500],
    ["503", { kind: "status", status: 503, body: "overloaded" }, "TemporaryError", 503],
    ["408", { kind: "status", status: 408, body: {} }, "TemporaryError", 408],
    ["connection reset", { kind: "refuse" }, "TemporaryError", undefined],
    ["400 empty file", { kind: "status", status: 400, body: { error: { message: "Empty file" } } }, "PermanentError", 400],
    ["401 bad key", { kind: "status", status: 401, body: { error: { message: "Incorrect API key" } } }, "PermanentError", 401],
    ["403", { kind: "status", status: 403, body: {} }, "PermanentError", 403],
    ["413", { kind: "status", status: 413, body: {} }, "PermanentError", 413],
    ["415 undecodable", { kind: "status", status: 415, body: { error: { message: "cannot decode" } } }, "PermanentError", 415],
    ["200 with a malformed body", { kind: "malformed" }, "PermanentError", undefined]
  ]
  for (const [label, fault, tag, status] of cases) {
    it.scopedLive(`${label} → ${tag}`, () =>
      Effect.gen(function*() {
        const server = yield* FakeOpenAi.make({ apiKey })
        server.failNext(fault)
        const error = yield* Effect.flip(transcribe(openAi(server.url), "wav"))
        expect(error._tag).toBe(tag)
        expect(error.status).toBe(status)
        expect(error.message).not.toContain(apiKey)
        expect(JSON.stringify(error)).not.toContain(apiKey)
        if (label.startsWith("429")) expect(error._tag === "TemporaryError" && error.retryAfterMillis).toBe(7000)
      }))
  }

  it.scopedLive("a model the server does not have is permanent and tells the operator what to do", () =>
    Effect.gen(function*() {
      const server = yield* FakeOpenAi.make({ apiKey })
      const error = yield* Effect.flip(transcribe(openAi(server.url, "large-v3"), "wav"))
      expect(error._tag).toBe("PermanentError")
      expect(error.status).toBe(404)
      expect(error.message).toContain("large-v3")
      expect(error.message).toMatch(/install|load/)
    }))

  it.scopedLive("a server that is down is temporary (connection refused)", () =>
    Effect.gen(function*() {
      const server = yield* FakeOpenAi.make({ apiKey })
      yield* Effect.promise(() => server.down())
      const error = yield* Effect.flip(transcribe(openAi(server.url), "wav"))
      expect(error._tag).toBe("TemporaryError")
      expect(error.message).toContain("ECONNREFUSED")
    }))

  it.scopedLive("a server that never answers hits the timeout: temporary", () =>
    Effect.gen(function*() {
      const server = yield* FakeOpenAi.make({ apiKey })
      server.failNext({ kind: "hang" })
      const error = yield* Effect.flip(transcribe(
        layerOpenAi({ baseUrl: server.url, apiKey: Redacted.make(apiKey), model: "whisper-1", timeout: "300 millis" }),
        "wav"
      ))
      expect(error._tag).toBe("TemporaryError")
    }))
})
