/**
 * A loopback server that speaks the OpenAI `POST /v1/audio/transcriptions`
 * wire format (multipart in, JSON out, `{"error": {...}}` errors) and really
 * transcribes: it runs pocketsphinx on the uploaded file. In `instantText`
 * mode it answers a fixed text at once (for benchmarks).
 */
import { Effect, type Scope } from "effect"
import { execFile } from "node:child_process"
import { promisify } from "node:util"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { type Fault, FaultQueue, readBody } from "./Faults.js"
import * as LoopbackServer from "./LoopbackServer.js"

export interface TranscriptionRequest {
  readonly model: string | null
  readonly language: string | null
  readonly responseFormat: string | null
  readonly authorization: string | null
  readonly fileName: string | null
  readonly fileSize: number
}

export interface FakeOpenAiTranscription {
  readonly url: string
  readonly requests: ReadonlyArray<TranscriptionRequest>
  readonly failNext: (fault: Fault, times?: number) => void
  readonly down: () => Promise<void>
  readonly up: () => Promise<void>
}

// asynchronous: the fake shares its process (and event loop) with the server under test, and a
// blocked loop makes the server's keep-alive timer close sockets the client is about to reuse
const run = promisify(execFile)

/** Runs pocketsphinx on any audio file (converted to 16 kHz mono WAV first). */
export const pocketsphinx = async (file: string): Promise<string> => {
  const wav = path.join(os.tmpdir(), `fake-openai-${globalThis.crypto.randomUUID()}.wav`)
  try {
    await run("ffmpeg", ["-nostdin", "-loglevel", "error", "-y", "-i", file, "-ar", "16000", "-ac", "1", "-c:a", "pcm_s16le", wav])
    return (await run("pocketsphinx_continuous", ["-infile", wav, "-logfn", "/dev/null"], { encoding: "utf8" })).stdout.trim()
  } finally {
    fs.rmSync(wav, { force: true })
  }
}

export const make = (options: {
  readonly models?: ReadonlyArray<string>
  readonly apiKey?: string
  readonly instantText?: string
} = {}): Effect.Effect<FakeOpenAiTranscription, never, Scope.Scope> =>
  Effect.gen(function*() {
    const models = options.models ?? ["whisper-1"]
    const faults = new FaultQueue()
    const requests: Array<TranscriptionRequest> = []
    const error = (res: import("node:http").ServerResponse, status: number, message: string, type: string) =>
      res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify({ error: { message, type, code: null } }))

    const server = yield* LoopbackServer.make(async (req, res) => {
      const body = await readBody(req)
      if (req.method !== "POST" || req.url !== "/v1/audio/transcriptions") return error(res, 404, "not found", "invalid_request_error")
      const form = await new Request("http://fake/", {
        method: "POST",
        headers: { "content-type": req.headers["content-type"] ?? "" },
        body
      }).formData().catch(() => undefined)
      const file = form?.get("file")
      const record: TranscriptionRequest = {
        model: (form?.get("model") as string | null) ?? null,
        language: (form?.get("language") as string | null) ?? null,
        responseFormat: (form?.get("response_format") as string | null) ?? null,
        authorization: req.headers.authorization ?? null,
        fileName: file instanceof File ? file.name : null,
        fileSize: file instanceof File ? file.size : 0
      }
      requests.push(record)
      if (faults.apply(req, res)) return
      if (options.apiKey !== undefined && req.headers.authorization !== `Bearer ${options.apiKey}`) {
        return error(res, 401, "Incorrect API key provided", "invalid_request_error")
      }
      if (!(file instanceof File) || file.size === 0) return error(res, 400, "Empty or missing file", "invalid_request_error")
      if (record.model === null || !models.includes(record.model)) {
        return error(res, 404, `Model '${record.model}' is not installed locally. You can install it with POST /v1/models`, "invalid_request_error")
      }
      if (options.instantText !== undefined) {
        return res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ text: options.instantText }))
      }
      const tmp = path.join(os.tmpdir(), `fake-openai-upload-${globalThis.crypto.randomUUID()}`)
      try {
        fs.writeFileSync(tmp, Buffer.from(await file.arrayBuffer()))
        const text = await pocketsphinx(tmp)
        const probed = await run("ffprobe", ["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", tmp], { encoding: "utf8" })
        const duration = Number(probed.stdout)
        const answer = record.responseFormat === "verbose_json"
          ? { task: "transcribe", language: "english", duration, text, segments: [{ id: 0, start: 0, end: duration, text }] }
          : { text }
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(answer))
      } catch (e) {
        error(res, 415, `Could not decode the audio file: ${String(e).slice(0, 200)}`, "invalid_request_error")
      } finally {
        fs.rmSync(tmp, { force: true })
      }
    }, () => faults.destroyHanging())

    return {
      url: server.url,
      requests,
      failNext: (fault, times) => faults.failNext(fault, times),
      down: server.down,
      up: server.up
    }
  })
