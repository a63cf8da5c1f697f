import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Either } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Config from "../src/Config.js"

const read = (env: Record<string, string>) =>
  Effect.either(Effect.withConfigProvider(Config.config, ConfigProvider.fromMap(new Map(Object.entries(env)))))

describe("engine choice (VJ_TRANSCRIBER, VJ_WHISPER_MODEL, VJ_LANGUAGE)", () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "vj-config-"))
  const modelFile = path.join(dataDir, "models", "ggml-base.bin")

  it.effect("auto without the model: pocketsphinx, remembering which model is missing", () =>
    Effect.gen(function*() {
      const c = Either.getOrThrow(yield* read({ VJ_DATA_DIR: dataDir }))
      expect(c.transcription).toStrictEqual({
        kind: "command",
        command: Config.defaultTranscribeCommand,
        convert: "wav16k",
        missingModel: { name: "base", path: modelFile, bytes: 147_951_465 }
      })
    }))

  it.effect("auto with the model in VJ_DATA_DIR/models: local Whisper with the language and limits", () =>
    Effect.gen(function*() {
      fs.mkdirSync(path.dirname(modelFile), { recursive: true })
      fs.writeFileSync(modelFile, "")
      const c = Either.getOrThrow(yield* read({ VJ_DATA_DIR: dataDir, VJ_LANGUAGE: "de", VJ_WHISPER_CONCURRENCY: "2" }))
      expect(c.transcription).toEqual({
        kind: "whisper",
        modelPath: modelFile,
        language: "de",
        concurrency: 2,
        threads: undefined,
        secondsPerAudioMinute: 60
      })
      fs.rmSync(modelFile)
    }))

  it.effect("whisper without the model stops start-up naming the pull command; bad names and languages too", () =>
    Effect.gen(function*() {
      const missing = yield* read({ VJ_DATA_DIR: dataDir, VJ_TRANSCRIBER: "whisper", VJ_WHISPER_MODEL: "small.en" })
      expect(String(Either.getLeft(missing).pipe((o) => o._tag === "Some" ? o.value : ""))).toContain(
        `${path.join(dataDir, "models", "ggml-small.en.bin")} does not exist: run voice-journal models pull small.en`
      )
      const unknown = yield* read({ VJ_DATA_DIR: dataDir, VJ_WHISPER_MODEL: "huge" })
      expect(String(Either.getLeft(unknown).pipe((o) => o._tag === "Some" ? o.value : ""))).toContain('unknown model "huge": one of tiny, base.en, base, small.en, small')
      const language = yield* read({ VJ_DATA_DIR: dataDir, VJ_LANGUAGE: "English" })
      expect(String(Either.getLeft(language).pipe((o) => o._tag === "Some" ? o.value : ""))).toContain("VJ_LANGUAGE must be auto or a two-letter language code")
    }))

  it.effect("command and openai are taken as asked, whatever models are there", () =>
    Effect.gen(function*() {
      const c = Either.getOrThrow(yield* read({ VJ_DATA_DIR: dataDir, VJ_TRANSCRIBER: "command" }))
      expect(c.transcription.kind).toBe("command")
      expect(c.transcription.kind === "command" && c.transcription.missingModel).toBe(undefined)
      const o = Either.getOrThrow(yield* read({ VJ_DATA_DIR: dataDir, VJ_TRANSCRIBER: "openai", VJ_LANGUAGE: "fr" }))
      expect(o.transcription).toMatchObject({ kind: "openai", language: "fr" })
    }))
})
