/**
 * Confirms a recording really holds decodable audio before it is
 * transcribed. Content sniffing only checks the container: a WebM or MP4
 * may be video-only, or garbage after a valid header.
 *
 * @since 0.1.0
 */
import type { CommandExecutor } from "@effect/platform/CommandExecutor"
import { Context, Effect, Layer } from "effect"
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

/**
 * Probes with `ffprobe` (from ffmpeg). No audio stream, or a file ffprobe
 * cannot decode, is a `PermanentError`; so is a missing ffprobe (install ffmpeg).
 * @since 0.1.0
 * @category constructors
 */
export const makeFfprobe = Effect.gen(function*() {
  const executor = yield* Effect.context<CommandExecutor>()
  const probe = (path: string) =>
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
