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
        new PermanentError({ service: "transcriber", message: "cannot run ffprobe: install ffmpeg (it provides ffprobe)", cause })
      ),
      Effect.flatMap((result) => {
        if (result.exitCode !== 0) {
          return Effect.fail(new PermanentError({ service: "transcriber", message: `undecodable audio: ${Command.tail(result.stderr)}` }))
        }
        const parsed = JSON.parse(result.stdout) as { streams?: Array<{ codec_name?: string }>; format?: { duration?: string } }
        const stream = parsed.streams?.[0]
        if (stream === undefined) {
          return Effect.fail(new PermanentError({ service: "transcriber", message: "no audio stream in the recording" }))
        }
        const duration = Number(parsed.format?.duration)
        return Effect.succeed({ codec: stream.codec_name ?? "unknown", durationSeconds: Number.isFinite(duration) ? duration : null })
      })
    )
  return AudioProbe.of({ probe })
})

/**
 * `AudioProbe` backed by ffprobe.
 * @since 0.1.0
 * @category layers
 */
export const layerFfprobe: Layer.Layer<AudioProbe, never, CommandExecutor> = Layer.effect(AudioProbe, makeFfprobe)
