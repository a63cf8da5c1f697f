/**
 * A loopback server that speaks the OpenAI `POST /v1/audio/transcriptions`
 * wire format (multipart in, JSON out, `{"error": {...}}` errors) and really
 * transcribes: it runs pocketsphinx on the uploaded file. In `instantText`
 * mode it answers a fixed text at once (for benchmarks). In `sentences`
 * mode it recognises a long recording made of known sentences separated by
 * pauses ({@link Audio.longRecording}): it finds the speech between the
 * silences (ffmpeg `silencedetect`) and names each stretch after the
 * sentence of the nearest length, answering `verbose_json` segments with
 * their times — a dropped, cut or doubled piece shows in the transcript.
 * Like OpenAI's endpoint, it refuses bodies over 25 MiB with `413`.
 */
import { Effect, type Scope } from "effect"
import { execFile } from "node:child_process"
import { promisify } from "node:util"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { audioFile, LONG_SENTENCES } from "./Audio.js"
import { type Fault, FaultQueue, readBody } from "./Faults.js"
import * as LoopbackServer from "./LoopbackServer.js"

export interface TranscriptionRequest {
  readonly model: string | null
  readonly language: string | null
  readonly responseFormat: string | null
  readonly authorization: string | null
  readonly fileName: string | null
  readonly fileSize: number
  /** What it answered (the transcript's text), if it answered one. */
  answer?: string
}

export interface FakeOpenAiTranscription {
  readonly url: string
  readonly requests: ReadonlyArray<TranscriptionRequest>
  readonly failNext: (fault: Fault, times?: number) => void
  /** The request after the next `n` gets `fault` (e.g. the 4th piece of a recording). */
  readonly failAfter: (n: number, fault: Fault) => void
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

/** A sentence the `sentences` mode knows, and how long its speech lasts. */
export interface KnownSentence {
  readonly text: string
  readonly seconds: number
}

/** OpenAI's request limit: "Maximum content size limit (26214400) exceeded". */
export const maxBodyBytes = 25 * 1024 * 1024

/** Stretches of speech in a file: what lies between silences (the same thresholds as the pipeline's plan). */
export const speechStretches = async (file: string): Promise<Array<{ start: number; end: number }>> => {
  const { stderr } = await run("ffmpeg", ["-nostdin", "-hide_banner", "-nostats", "-i", file, "-af", "silencedetect=noise=-35dB:d=0.5", "-f", "null", "-"], {
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024
  })
  const d = /Duration: (\d+):(\d+):([\d.]+)/.exec(stderr)
  const duration = d ? Number(d[1]) * 3600 + Number(d[2]) * 60 + Number(d[3]) : 0
  const stretches: Array<{ start: number; end: number }> = []
  let speechFrom = 0
  for (const m of stderr.matchAll(/silence_(start|end): (-?[\d.]+)/g)) {
    const t = Math.max(0, Number(m[2]))
    if (m[1] === "start") {
      if (t - speechFrom > 0.2) stretches.push({ start: speechFrom, end: t })
      speechFrom = Infinity
    } else speechFrom = t
  }
  if (Number.isFinite(speechFrom) && duration - speechFrom > 0.2) stretches.push({ start: speechFrom, end: duration })
  return stretches
}

/** `Audio.LONG_SENTENCES` and how long each one's speech lasts, measured on its own recording. */
export const longSentences = (): Promise<Array<KnownSentence>> =>
  Promise.all(LONG_SENTENCES.map(async (text) => {
    const [speech] = await speechStretches(audioFile("wav", text))
    return { text, seconds: speech!.end - speech!.start }
  }))

export const make = (options: {
  readonly models?: ReadonlyArray<string>
  readonly apiKey?: string
  readonly instantText?: string
  readonly sentences?: ReadonlyArray<KnownSentence>
  /** Answers only after this long (a slow engine). */
  readonly latencyMillis?: number
  /** Answers only after this long per second of audio sent (an engine's real-time factor, for benchmarks). */
  readonly millisPerAudioSecond?: number
} = {}): Effect.Effect<FakeOpenAiTranscription, never, Scope.Scope> =>
  Effect.gen(function*() {
    const models = options.models ?? ["whisper-1"]
    const faults = new FaultQueue()
    const requests: Array<TranscriptionRequest> = []
    const error = (res: import("node:http").ServerResponse, status: number, message: string, type: string) =>
      res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify({ error: { message, type, code: null } }))

    const recognise = async (file: string) => {
      const segments = (await speechStretches(file)).map(({ end, start }) => {
        const nearest = [...options.sentences!].sort((a, b) => Math.abs(a.seconds - (end - start)) - Math.abs(b.seconds - (end - start)))[0]!
        // a stretch no known sentence explains (a piece cut mid-sentence) is heard as such
        const text = Math.abs(nearest.seconds - (end - start)) <= 0.4 ? nearest.text : `[unrecognised ${(end - start).toFixed(2)} s]`
        return { start, end, text }
      })
      return { text: segments.map((s) => s.text).join(" "), segments }
    }

    const server = yield* LoopbackServer.make(async (req, res) => {
      // like OpenAI: a body over the limit is refused (413), its bytes never parsed. The answer goes out once
      // the body is drained: answering while the client still sends reaches it as a reset (ECONNRESET)
      if (Number(req.headers["content-length"] ?? 0) > maxBodyBytes) {
        requests.push({ model: null, language: null, responseFormat: null, authorization: null, fileName: null, fileSize: Number(req.headers["content-length"]) })
        req.resume()
        await new Promise<void>((resolve) => req.once("end", resolve).once("close", resolve))
        res.writeHead(413, { "content-type": "application/json", connection: "close" }).end(JSON.stringify({
          error: { message: `Maximum content size limit (${maxBodyBytes}) exceeded (${req.headers["content-length"]} bytes read)`, type: "server_error", param: null, code: null }
        }))
        return
      }
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
      if (options.latencyMillis !== undefined) await new Promise((r) => setTimeout(r, options.latencyMillis))
      if (options.millisPerAudioSecond !== undefined) {
        const tmp = path.join(os.tmpdir(), `fake-openai-timed-${globalThis.crypto.randomUUID()}${path.extname(file.name)}`)
        fs.writeFileSync(tmp, Buffer.from(await file.arrayBuffer()))
        const probed = await run("ffprobe", ["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", tmp], { encoding: "utf8" })
          .finally(() => fs.rmSync(tmp, { force: true }))
        await new Promise((r) => setTimeout(r, Number(probed.stdout) * options.millisPerAudioSecond!))
      }
      if (options.instantText !== undefined) {
        record.answer = options.instantText
        return res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ text: options.instantText }))
      }
      const tmp = path.join(os.tmpdir(), `fake-openai-upload-${globalThis.crypto.randomUUID()}${path.extname(file.name)}`)
      try {
        fs.writeFileSync(tmp, Buffer.from(await file.arrayBuffer()))
        if (options.sentences !== undefined) {
          const heard = await recognise(tmp)
          record.answer = heard.text
          return res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ task: "transcribe", language: "english", ...heard }))
        }
        const text = await pocketsphinx(tmp)
        record.answer = text
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
      failAfter: (n, fault) => {
        let seen = 0
        faults.failNext(fault, 1, () => seen++ >= n)
      },
      down: server.down,
      up: server.up
    }
  })
