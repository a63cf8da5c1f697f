/**
 * Confirms a recording really holds decodable audio before it is
 * transcribed. Content sniffing only checks the container: a WebM or MP4
 * may be video-only, or garbage after a valid header.
 *
 * @since 0.1.0
 */
import type { CommandExecutor } from "@effect/platform/CommandExecutor"
import { Context, Effect, Layer, Option } from "effect"
import * as fs from "node:fs/promises"
import { PermanentError, TemporaryError } from "./Errors.js"
import * as Command from "./internal/command.js"

/**
 * What the probe found.
 * @since 0.1.0
 */
export interface ProbeResult {
  readonly codec: string
  readonly durationSeconds: number | null
}

/**
 * @since 0.1.0
 * @category tags
 */
export class AudioProbe extends Context.Tag("@voice-journal/core/AudioProbe")<AudioProbe, {
  readonly probe: (path: string) => Effect.Effect<ProbeResult, PermanentError | TemporaryError>
}>() {}

/** ffprobe's names for the PCM WAV encodings, by format code (1 integer, 3 float) and bits per sample. */
const pcmCodecs: Readonly<Record<string, string>> = {
  "1:8": "pcm_u8",
  "1:16": "pcm_s16le",
  "1:24": "pcm_s24le",
  "1:32": "pcm_s32le",
  "3:32": "pcm_f32le",
  "3:64": "pcm_f64le"
}

/** How far into a WAV the `data` chunk is looked for (metadata chunks may come first). */
const wavHeadBytes = 64 * 1024

/**
 * What a PCM WAV's header says (RIFF `fmt ` and `data` chunks), read from
 * its first bytes; None for anything else, or a header that does not add
 * up (ffprobe then decides). Every byte after a PCM header is a valid
 * sample, so the header proves the audio decodes. The duration counts the
 * data chunk's declared size, or the bytes the file really has when that
 * is unknown (a streamed WAV says 0 or 0xFFFFFFFF) or larger than the file.
 * @internal
 */
export const wavInfo = (head: Uint8Array, fileSize: number): Option.Option<ProbeResult> => {
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength)
  const tag = (at: number) => String.fromCharCode(...head.subarray(at, at + 4))
  if (head.byteLength < 12 || tag(0) !== "RIFF" || tag(8) !== "WAVE") return Option.none()
  let format: { code: number; bits: number; byteRate: number; blockAlign: number } | undefined
  for (let at = 12; at + 8 <= head.byteLength;) {
    const id = tag(at)
    const size = view.getUint32(at + 4, true)
    const body = at + 8
    if (id === "fmt ") {
      if (size < 16 || body + size > head.byteLength) return Option.none()
      const channels = view.getUint16(body + 2, true)
      const sampleRate = view.getUint32(body + 4, true)
      const byteRate = view.getUint32(body + 8, true)
      const blockAlign = view.getUint16(body + 12, true)
      const bits = view.getUint16(body + 14, true)
      let code = view.getUint16(body, true)
      // WAVE_FORMAT_EXTENSIBLE: the real format code opens the sub-format GUID
      if (code === 0xfffe) code = size >= 40 ? view.getUint16(body + 24, true) : 0
      if (channels === 0 || sampleRate === 0 || blockAlign !== channels * (bits / 8) || byteRate !== sampleRate * blockAlign) {
        return Option.none()
      }
      format = { code, bits, byteRate, blockAlign }
    } else if (id === "data") {
      const codec = format === undefined ? undefined : pcmCodecs[`${format.code}:${format.bits}`]
      if (format === undefined || codec === undefined) return Option.none()
      const present = Math.max(0, fileSize - body)
      const bytes = size === 0 || size === 0xffffffff || size > present ? present : size
      return Option.some({ codec, durationSeconds: (bytes - (bytes % format.blockAlign)) / format.byteRate })
    }
    at = body + size + (size % 2)
  }
  return Option.none()
}

/** {@link wavInfo} of the file at `path`; None when it cannot be read (ffprobe then says why). */
const readWavInfo = (path: string): Effect.Effect<Option.Option<ProbeResult>> =>
  Effect.tryPromise(async () => {
    const file = await fs.open(path, "r")
    try {
      const { size } = await file.stat()
      const head = new Uint8Array(Math.min(size, wavHeadBytes))
      const { bytesRead } = await file.read(head, 0, head.byteLength, 0)
      return wavInfo(head.subarray(0, bytesRead), size)
    } finally {
      await file.close()
    }
  }).pipe(
    // unreadable here is unreadable for ffprobe too, which reports it in its own words
    Effect.orElseSucceed(() => Option.none())
  )

/**
 * Probes with `ffprobe` (from ffmpeg). No audio stream, or a file ffprobe
 * cannot decode, is a `PermanentError`; so is a missing ffprobe (install ffmpeg).
 * A PCM WAV is answered from its header ({@link wavInfo}) without starting
 * ffprobe: a process forked from a large server costs ~7 ms of CPU
 * (`pnpm bench:upload`), and uploads are probed once at ingest and again
 * before transcription.
 * @since 0.1.0
 * @category constructors
 */
export const makeFfprobe = Effect.gen(function*() {
  const executor = yield* Effect.context<CommandExecutor>()
  const ffprobe = (path: string) =>
    Command.run(["ffprobe", "-v", "error", "-select_streams", "a", "-show_entries", "stream=codec_name:format=duration", "-of", "json", path]).pipe(
      Effect.provide(executor),
      Effect.mapError((cause) =>
        new PermanentError({
          service: "transcriber",
          message: "the server cannot run ffprobe: install ffmpeg (it provides ffprobe)",
          detail: String(cause),
          cause
        })
      ),
      Effect.flatMap((result) =>
        result.exitCode !== 0
          // ffprobe's stderr names the blob's path and memory addresses: log it, don't show it
          ? Effect.fail(undecodable(`ffprobe exited with ${result.exitCode}: ${Command.tail(result.stderr)}`))
          : Effect.try({
            try: () => JSON.parse(result.stdout) as { streams?: Array<{ codec_name?: string }>; format?: { duration?: string } },
            catch: (cause) => undecodable(`ffprobe printed no JSON: ${Command.tail(result.stdout)}`, cause)
          })
      ),
      Effect.flatMap((parsed) => {
        const stream = parsed.streams?.[0]
        if (stream === undefined) {
          return Effect.fail(
            new PermanentError({
              service: "transcriber",
              message: "the recording has no audio stream: upload a recording with sound (not a video-only file)"
            })
          )
        }
        const duration = Number(parsed.format?.duration)
        return Effect.succeed({ codec: stream.codec_name ?? "unknown", durationSeconds: Number.isFinite(duration) ? duration : null })
      })
    )
  const probe = (path: string) =>
    Effect.flatMap(readWavInfo(path), Option.match({ onNone: () => ffprobe(path), onSome: Effect.succeed }))
  return AudioProbe.of({ probe })
})

/**
 * What a user is told when a recording cannot be decoded; `detail` (the
 * decoder's own words, with paths and addresses) is only logged.
 * @since 0.1.0
 */
export const undecodable = (detail: string, cause?: unknown): PermanentError =>
  new PermanentError({
    service: "transcriber",
    message: "the recording could not be decoded (damaged, incomplete or not really audio): upload it again or convert it to another format",
    detail,
    ...(cause !== undefined ? { cause } : {})
  })

/**
 * `AudioProbe` backed by ffprobe.
 * @since 0.1.0
 * @category layers
 */
export const layerFfprobe: Layer.Layer<AudioProbe, never, CommandExecutor> = Layer.effect(AudioProbe, makeFfprobe)
