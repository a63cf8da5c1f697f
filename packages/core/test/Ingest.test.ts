import { CommandExecutor, FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Option, Stream } from "effect"
import { createHash } from "node:crypto"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import { AudioProbe, layerFfprobe, wavInfo } from "../src/AudioProbe.js"
import { BlobStore, layerFileSystem, makeKey, producerOf } from "../src/BlobStore.js"
import { ingest, sniffBytes } from "../src/Ingest.js"
import { AUDIO_FORMATS, type AudioFormat, audioBytes, audioFile, elfBytes, fixtureDir, pngBytes } from "./support/Audio.js"

const expectedMime: Record<AudioFormat, string> = {
  "wav": "audio/wav",
  "mp3": "audio/mpeg",
  "mp3-no-id3": "audio/mpeg",
  "m4a": "audio/mp4",
  "mp4-generic": "audio/mp4",
  "ogg-opus": "audio/ogg",
  "flac": "audio/flac",
  "webm-opus": "audio/webm",
  "aac": "audio/aac"
}

/** A blob store in a fresh temp directory, and a way to list what is on disk. */
const withBlobs = <A, E>(f: (dir: string) => Effect.Effect<A, E, BlobStore>) =>
  Effect.gen(function*() {
    const dir = yield* FileSystem.FileSystem.pipe(Effect.flatMap((fs) => fs.makeTempDirectoryScoped({ prefix: "vj-blobs-" })))
    return yield* f(dir).pipe(Effect.provide(layerFileSystem({ directory: dir })))
  }).pipe(Effect.provide(NodeContext.layer))

const filesIn = (dir: string) => fs.readdirSync(dir)

/** Splits bytes into chunks of `size` bytes, as a socket would deliver them. */
const chunked = (bytes: Uint8Array, size: number) =>
  Stream.fromIterable(Array.from({ length: Math.ceil(bytes.byteLength / size) }, (_, i) => bytes.subarray(i * size, (i + 1) * size)))

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex")

describe("Ingest", () => {
  for (const format of AUDIO_FORMATS) {
    it.scoped(`accepts a real ${format} recording, stores it byte for byte`, () =>
      withBlobs((dir) =>
        Effect.gen(function*() {
          const bytes = audioBytes(format)
          const stored = yield* ingest(chunked(bytes, 1000), { maxBytes: 10_000_000, originalFilename: `note.${format}` })
          expect(stored.mimeType).toBe(expectedMime[format])
          expect(stored.sizeBytes).toBe(bytes.byteLength)
          expect(stored.sha256).toBe(sha256(bytes))
          expect(new Uint8Array(fs.readFileSync(`${dir}/${stored.blobKey}`))).toEqual(bytes)
          expect(filesIn(dir)).toEqual([stored.blobKey])
        })
      ))
  }

  for (const [name, bytes, detected] of [
    ["a PNG", pngBytes(), "image/png"],
    ["an ELF binary", elfBytes(), "application/x-elf"]
  ] as const) {
    it.scoped(`rejects ${name} named .mp3 by its content, leaving no file`, () =>
      withBlobs((dir) =>
        Effect.gen(function*() {
          const error = yield* Effect.flip(ingest(chunked(bytes, 512), { maxBytes: 10_000_000, originalFilename: "song.mp3" }))
          expect(error._tag).toBe("UnsupportedMediaType")
          expect(error._tag === "UnsupportedMediaType" && error.detected).toBe(detected)
          expect(filesIn(dir)).toEqual([])
        })
      ))
  }

  it.scoped("rejects text that is not a known format at all", () =>
    withBlobs((dir) =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(ingest(Stream.make(new TextEncoder().encode("hello ".repeat(2000))), { maxBytes: 1e6 }))
        expect(error._tag).toBe("UnsupportedMediaType")
        expect(filesIn(dir)).toEqual([])
      })
    ))

  it.scoped("an empty body is InvalidUpload", () =>
    withBlobs((dir) =>
      Effect.gen(function*() {
        expect((yield* Effect.flip(ingest(Stream.empty, { maxBytes: 100 })))._tag).toBe("InvalidUpload")
        expect(filesIn(dir)).toEqual([])
      })
    ))

  const wav = audioBytes("wav")
  for (const [label, chunkSize, limit] of [
    ["one big chunk", wav.byteLength, wav.byteLength - 1],
    ["many small chunks", 100, 50_000],
    ["limit crossed inside the sniffed head", 64, 1000],
    ["limit one byte short, at a chunk boundary", 1000, wav.byteLength - 1]
  ] as const) {
    it.scoped(`over the limit (${label}): PayloadTooLarge, no file, no temp file`, () =>
      withBlobs((dir) =>
        Effect.gen(function*() {
          const error = yield* Effect.flip(ingest(chunked(wav, chunkSize), { maxBytes: limit }))
          expect(error._tag).toBe("PayloadTooLarge")
          expect(filesIn(dir)).toEqual([])
        })
      ))
  }

  it.scoped("exactly at the limit is accepted", () =>
    withBlobs(() =>
      Effect.gen(function*() {
        const stored = yield* ingest(chunked(wav, 4096), { maxBytes: wav.byteLength })
        expect(stored.sizeBytes).toBe(wav.byteLength)
      })
    ))

  it.scoped("a body that fails mid-stream (client gone) leaves nothing behind", () =>
    withBlobs((dir) =>
      Effect.gen(function*() {
        const broken = Stream.concat(chunked(wav, 8192), Stream.fail("connection reset" as const))
        expect(yield* Effect.flip(ingest(broken, { maxBytes: 1e9 }))).toBe("connection reset")
        expect(filesIn(dir)).toEqual([])
      })
    ))

  it.scopedLive("interruption mid-stream leaves nothing behind", () =>
    withBlobs((dir) =>
      Effect.gen(function*() {
        // first the real head, then a body that never ends
        const endless = Stream.concat(chunked(wav, 8192), Stream.never)
        const fiber = yield* Effect.fork(ingest(endless, { maxBytes: 1e9 }))
        // wait until the temp file exists, then interrupt
        while (filesIn(dir).length === 0) yield* Effect.sleep("5 millis")
        yield* Fiber.interrupt(fiber)
        expect(filesIn(dir)).toEqual([])
      })
    ), { timeout: 20_000 })

  it.scopedLive("streams a 50 MB body without holding it: chunks pass through at their own size", () =>
    withBlobs((dir) =>
      Effect.gen(function*() {
        const head = wav.subarray(0, 44) // a real WAV header, then 50 MB of samples
        const chunk = new Uint8Array(64 * 1024).fill(1)
        let largestSeen = 0
        const body = Stream.concat(Stream.make(head), Stream.repeatValue(chunk).pipe(Stream.take(800)))
        const stored = yield* ingest(body, { maxBytes: 100 * 1024 * 1024 }).pipe(
          Effect.provideServiceEffect(BlobStore, Effect.map(BlobStore, (blobs) => ({
            ...blobs,
            write: (key, body) =>
              blobs.write(key, (sink) =>
                producerOf(body)({
                  write: (bytes) => {
                    largestSeen = Math.max(largestSeen, bytes.byteLength)
                    return sink.write(bytes)
                  },
                  drained: sink.drained
                }))
          })))
        )
        expect(stored.sizeBytes).toBe(44 + 800 * 64 * 1024)
        // nothing bigger than the sniffed head plus one chunk is ever held in memory
        expect(largestSeen).toBeLessThanOrEqual(sniffBytes + chunk.byteLength)
        expect(fs.statSync(`${dir}/${stored.blobKey}`).size).toBe(stored.sizeBytes)
      })
    ))
})

// the store contract itself (keys, read/write/remove, …) is BlobStoreSuite, run in BlobStore.test.ts
describe("BlobStore (filesystem) start-up", () => {
  it.scopedLive("removes temp files a crashed process left behind, at start-up; keeps fresh ones (another node's live uploads)", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(`${fixtureDir}-blobs-`)
      const stale = `.partial-${makeKey()}-deadbeef`
      const live = `.partial-${makeKey()}-cafebabe`
      fs.writeFileSync(`${dir}/${stale}`, "half a file")
      const twoHoursAgo = new Date(Date.now() - 2 * 3600_000)
      fs.utimesSync(`${dir}/${stale}`, twoHoursAgo, twoHoursAgo)
      fs.writeFileSync(`${dir}/${live}`, "being written")
      yield* Layer.build(layerFileSystem({ directory: dir }))
      expect(filesIn(dir)).toEqual([live])
      fs.rmSync(dir, { recursive: true })
    }))
})

describe("AudioProbe (ffprobe)", () => {
  const probe = (path: string) =>
    Effect.flatMap(AudioProbe, (p) => p.probe(path)).pipe(Effect.provide(layerFfprobe), Effect.provide(NodeContext.layer))

  it.effect("finds the audio stream and duration of a real recording", () =>
    Effect.gen(function*() {
      const result = yield* probe(audioFile("webm-opus"))
      expect(result.codec).toBe("opus")
      expect(result.durationSeconds).toBeGreaterThan(1)
    }))

  it.effect("a WebM with video and no audio is a permanent 'no audio stream' error", () =>
    Effect.gen(function*() {
      const path = `${fixtureDir}/video-only.webm`
      if (!fs.existsSync(path)) {
        execFileSync("ffmpeg", ["-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=duration=1:size=64x64:rate=5", "-an", "-c:v", "libvpx", "-f", "webm", path])
      }
      const error = yield* Effect.flip(probe(path))
      expect(error._tag).toBe("PermanentError")
      expect(error.message).toContain("no audio stream")
    }))

  it.effect("random bytes are undecodable audio (permanent)", () =>
    Effect.gen(function*() {
      const path = `${fixtureDir}/garbage.bin`
      fs.writeFileSync(path, new Uint8Array(5000).map((_, i) => (i * 7919) % 251))
      const error = yield* Effect.flip(probe(path))
      expect(error._tag).toBe("PermanentError")
    }))

  // WAVs of several encodings, as ffmpeg writes them: the header answer must be ffprobe's answer
  const wavs: ReadonlyArray<{ name: string; args: ReadonlyArray<string> }> = [
    { name: "s16-mono-16k", args: ["-ar", "16000", "-ac", "1", "-c:a", "pcm_s16le"] },
    { name: "u8-mono-8k", args: ["-ar", "8000", "-ac", "1", "-c:a", "pcm_u8"] },
    { name: "s24-stereo-44k", args: ["-ar", "44100", "-ac", "2", "-c:a", "pcm_s24le"] },
    { name: "f32-stereo-48k", args: ["-ar", "48000", "-ac", "2", "-c:a", "pcm_f32le"] },
    // six channels: WAVE_FORMAT_EXTENSIBLE
    { name: "s16-6ch-extensible", args: ["-ar", "16000", "-ac", "6", "-c:a", "pcm_s16le"] },
    // a LIST chunk before the data
    { name: "s16-with-metadata", args: ["-ar", "16000", "-ac", "1", "-c:a", "pcm_s16le", "-metadata", "title=journal", "-metadata", "artist=me"] }
  ]
  const wavFixture = (name: string, args: ReadonlyArray<string>, streamed = false) => {
    const out = `${fixtureDir}/probe-${name}${streamed ? "-streamed" : ""}.wav`
    if (!fs.existsSync(out)) {
      const input = ["-loglevel", "error", "-y", "-i", audioFile("wav"), ...args, "-f", "wav"]
      // to a pipe ffmpeg cannot go back to write the sizes: the header says 0xFFFFFFFF, as a streamed WAV does
      if (streamed) fs.writeFileSync(`${out}.tmp`, execFileSync("ffmpeg", [...input, "pipe:1"], { maxBuffer: 64 * 1024 * 1024 }))
      else execFileSync("ffmpeg", [...input, `${out}.tmp`])
      fs.renameSync(`${out}.tmp`, out)
    }
    return out
  }
  const ffprobeSays = (path: string) => {
    const out = JSON.parse(execFileSync("ffprobe", ["-v", "error", "-select_streams", "a", "-show_entries", "stream=codec_name:format=duration", "-of", "json", path], { encoding: "utf8" })) as {
      streams: Array<{ codec_name: string }>
      format: { duration: string }
    }
    return { codec: out.streams[0]!.codec_name, durationSeconds: Number(out.format.duration) }
  }
  /** The probe with an executor that refuses every command: it passes only if no process was started. */
  const probeWithoutCommands = (path: string) =>
    Effect.flatMap(AudioProbe, (p) => p.probe(path)).pipe(
      Effect.provide(layerFfprobe),
      Effect.provide(Layer.succeed(CommandExecutor.CommandExecutor, CommandExecutor.makeExecutor((command) => Effect.die(`a command was started: ${JSON.stringify(command)}`))))
    )

  for (const { args, name } of wavs) {
    for (const streamed of [false, true]) {
      it.effect(`a PCM WAV (${name}${streamed ? ", streamed: sizes unknown" : ""}) is answered from its header, as ffprobe answers, with no process started`, () =>
        Effect.gen(function*() {
          const path = wavFixture(name, args, streamed)
          const expected = ffprobeSays(path)
          const result = yield* probeWithoutCommands(path)
          expect(result.codec).toBe(expected.codec)
          expect(result.durationSeconds).toBeCloseTo(expected.durationSeconds, 2)
        }))
    }
  }

  it.effect("a WAV that is not PCM (µ-law) goes to ffprobe", () =>
    Effect.gen(function*() {
      const path = wavFixture("mulaw", ["-ar", "8000", "-ac", "1", "-c:a", "pcm_mulaw"])
      expect(Option.isNone(wavInfo(new Uint8Array(fs.readFileSync(path)), fs.statSync(path).size))).toBe(true)
      const result = yield* probe(path)
      expect(result.codec).toBe("pcm_mulaw")
      expect(result.durationSeconds).toBeCloseTo(ffprobeSays(path).durationSeconds, 2)
    }))

  it("a WAV header that does not add up, or a cut-off one, is left to ffprobe; a data size beyond the file counts the bytes there", () => {
    const bytes = new Uint8Array(fs.readFileSync(wavFixture("s16-mono-16k", wavs[0]!.args)))
    const view = new DataView(bytes.buffer, bytes.byteOffset)
    const good = wavInfo(bytes, bytes.byteLength)
    expect(Option.isSome(good)).toBe(true)
    // a byte rate that is not sample rate × block align
    const lying = bytes.slice()
    new DataView(lying.buffer).setUint32(28, view.getUint32(28, true) * 2, true)
    expect(Option.isNone(wavInfo(lying, lying.byteLength))).toBe(true)
    // the header cut before its data chunk
    expect(Option.isNone(wavInfo(bytes.subarray(0, 30), 30))).toBe(true)
    // a truncated upload: the header declares the whole recording, the file holds half of its samples
    const dataAt = 44
    const half = dataAt + Math.floor((bytes.byteLength - dataAt) / 4) * 2
    const truncated = wavInfo(bytes.subarray(0, half), half)
    expect(Option.getOrThrow(truncated).durationSeconds!).toBeCloseTo(Option.getOrThrow(good).durationSeconds! / 2, 2)
  })
})
