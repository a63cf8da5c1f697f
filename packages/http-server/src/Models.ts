/**
 * Named Whisper models for the local transcriber, and their download:
 * `voice-journal models pull [name]` fetches one into `VJ_DATA_DIR/models`,
 * resumable (HTTP Range on a `.part` file), verified against a pinned
 * SHA-256 before it takes its final name — a file under the final name is
 * always a complete, verified model.
 *
 * The files are whisper.cpp's ggml conversions of OpenAI's Whisper weights
 * (MIT), pinned to one revision of the `ggerganov/whisper.cpp` model
 * repository on Hugging Face; sizes and checksums are that revision's.
 *
 * @since 0.1.0
 */
import { Effect, Schema } from "effect"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"

/** @since 0.1.0 */
export interface ModelSpec {
  readonly name: string
  readonly file: string
  readonly url: string
  readonly bytes: number
  readonly sha256: string
  /** What it is good for (published figures are cited in the README). */
  readonly summary: string
}

const revision = "5359861c739e955e79d9a303bcbc70fb988958b1"
const spec = (name: string, bytes: number, sha256: string, summary: string): ModelSpec => ({
  name,
  file: `ggml-${name}.bin`,
  url: `https://huggingface.co/ggerganov/whisper.cpp/resolve/${revision}/ggml-${name}.bin`,
  bytes,
  sha256,
  summary
})

/**
 * The models `models pull` knows.
 * @since 0.1.0
 */
export const catalog: ReadonlyArray<ModelSpec> = [
  spec("tiny", 77_691_713, "be07e048e1e599ad46341c8d2a135645097a538221678b7acdd1b1919c6e1b21", "fastest, multilingual, roughest"),
  spec("base.en", 147_964_211, "a03779c86df3323075f5e796cb2ce5029f00ec8869eee3fdfb897afe36c6d002", "English only, fast"),
  spec("base", 147_951_465, "60ed5bc3dd14eea856493d334349b405782ddcaf0028d4b5df4088345fba2efe", "multilingual with language detection"),
  spec("small.en", 487_614_201, "c6138d6d58ecc8322097e0f987c32f1be8bb0a18532a3f88f734d1bbf9c41e5d", "English only, better, ~3x slower than base"),
  spec("small", 487_601_967, "1be3a9b2063867b937e64e2ec7483364a79917e157fa98c5d94b5c1fffea987b", "multilingual, better, ~3x slower than base")
]

/** The model `serve` looks for and `models pull` fetches when none is named. @since 0.1.0 */
export const defaultModel = "base"

/** @since 0.1.0 */
export const find = (name: string): ModelSpec | undefined => catalog.find((m) => m.name === name)

/** Where models live: `VJ_DATA_DIR/models`. @since 0.1.0 */
export const directory = (dataDir: string): string => path.join(dataDir, "models")

/** @since 0.1.0 */
export const pathOf = (dataDir: string, model: ModelSpec): string => path.join(directory(dataDir), model.file)

/**
 * A download that did not produce a verified model. `message` says what to do.
 * @since 0.1.0
 */
export class ModelDownloadError extends Schema.TaggedError<ModelDownloadError>()("ModelDownloadError", {
  message: Schema.String
}) {}

/** @since 0.1.0 */
export interface PullProgress {
  /** Called once before any byte is fetched: total size, and how much a previous attempt already has. */
  readonly onStart?: (total: number, resumedFrom: number) => void
  readonly onProgress?: (received: number, total: number) => void
}

const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`

/** Feeds the bytes of an existing partial file into the hash (a resumed download is verified whole). */
const hashFile = async (file: string, hash: ReturnType<typeof createHash>) => {
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer)
}

/**
 * Downloads `model` into `dir` (created if needed) and returns the final
 * path. Already there: returns at once. A `.part` left by a cut-off attempt
 * is resumed with `Range`; a server that ignores the range sends the whole
 * file again and the part is restarted. A wrong size or checksum deletes
 * the part: nothing unverified is ever left under the final name.
 * @since 0.1.0
 */
export const pull = (model: ModelSpec, dir: string, progress: PullProgress = {}): Effect.Effect<string, ModelDownloadError> =>
  Effect.tryPromise({
    try: async (signal) => {
      const final = path.join(dir, model.file)
      if (fs.existsSync(final)) return final
      fs.mkdirSync(dir, { recursive: true })
      const part = `${final}.part`
      let have = fs.existsSync(part) ? fs.statSync(part).size : 0
      if (have > model.bytes) {
        fs.rmSync(part) // not a prefix of this model
        have = 0
      }
      progress.onStart?.(model.bytes, have)
      const hash = createHash("sha256")
      if (have < model.bytes) {
        const response = await fetch(model.url, { signal, headers: have > 0 ? { range: `bytes=${have}-` } : {} })
        if (response.status === 200 && have > 0) have = 0 // the server sent everything: start the part again
        else if (response.status !== 200 && response.status !== 206) {
          throw new ModelDownloadError({ message: `${model.url} answered ${response.status}: try again later` })
        }
        if (have > 0) await hashFile(part, hash)
        const out = fs.createWriteStream(part, { flags: have > 0 ? "a" : "w" })
        let received = have
        try {
          for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
            hash.update(chunk)
            received += chunk.length
            if (!out.write(chunk)) await new Promise<void>((resolve) => out.once("drain", () => resolve()))
            progress.onProgress?.(received, model.bytes)
          }
        } catch (e) {
          throw new ModelDownloadError({
            message: `the download of ${model.name} was cut off at ${mib(received)} of ${mib(model.bytes)} (${
              e instanceof Error ? e.message : String(e)
            }): run the same command again to resume`
          })
        } finally {
          await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())))
        }
      } else {
        await hashFile(part, hash)
      }
      const size = fs.statSync(part).size
      const digest = hash.digest("hex")
      if (size !== model.bytes || digest !== model.sha256) {
        fs.rmSync(part, { force: true })
        throw new ModelDownloadError({
          message: size !== model.bytes
            ? `the download of ${model.name} has ${size} bytes, expected ${model.bytes}: it was deleted; run the command again`
            : `the download of ${model.name} does not match its pinned SHA-256 (got ${digest}): it was deleted; run the command again`
        })
      }
      const fd = fs.openSync(part, "r")
      fs.fsyncSync(fd)
      fs.closeSync(fd)
      fs.renameSync(part, final)
      return final
    },
    catch: (e) =>
      e instanceof ModelDownloadError
        ? e
        : new ModelDownloadError({ message: `could not download ${model.name} from ${model.url}: ${e instanceof Error ? e.message : String(e)}` })
  })
