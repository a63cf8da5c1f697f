/**
 * A loopback server that speaks Ollama's HTTP API (`/api/chat` with JSON or
 * NDJSON streaming, `/api/tags`, `/api/version`, `{"error": "…"}` bodies),
 * driven in tests through the official `ollama` client.
 *
 * Its "model" cleans deterministically so tests can assert on the output:
 * it collapses whitespace, capitalises the first letter, ends with a period,
 * and titles the entry with its first four words. Unknown models get 404
 * `model 'x' not found`, as Ollama answers.
 */
import { Effect, type Scope } from "effect"
import type * as http from "node:http"
import { type Fault, FaultQueue, readBody } from "./Faults.js"
import * as LoopbackServer from "./LoopbackServer.js"

export interface ChatRequestRecord {
  readonly model: string
  readonly numCtx: number | undefined
  readonly systemPrompt: string
  readonly userContent: string
  readonly stream: boolean
  readonly format: unknown
}

export interface FakeOllama {
  readonly url: string
  readonly requests: ReadonlyArray<ChatRequestRecord>
  /** The next `times` /api/chat requests get `fault` (or an error line inside a 200 stream). */
  readonly failNext: (fault: Fault | { readonly kind: "stream-error"; readonly message: string }, times?: number) => void
  /** Simulate Ollama being down: connections are refused until `up()`. */
  readonly down: () => Promise<void>
  readonly up: () => Promise<void>
}

export const cleanLikeTheFake = (transcript: string) => {
  const collapsed = transcript.replace(/\s+/g, " ").trim()
  const text = collapsed.charAt(0).toUpperCase() + collapsed.slice(1) + (/[.!?]$/.test(collapsed) ? "" : ".")
  const title = collapsed.split(" ").slice(0, 4).join(" ")
  return { title: title.charAt(0).toUpperCase() + title.slice(1), text }
}

export const make = (options: { readonly models?: ReadonlyArray<string> } = {}): Effect.Effect<FakeOllama, never, Scope.Scope> =>
  Effect.gen(function*() {
    const models = options.models ?? ["llama3.2"]
    const faults = new FaultQueue()
    const streamErrors: Array<string> = []
    const requests: Array<ChatRequestRecord> = []
    const json = (res: http.ServerResponse, status: number, body: unknown) =>
      res.writeHead(status, { "content-type": "application/json; charset=utf-8" }).end(JSON.stringify(body))

    const server = yield* LoopbackServer.make(async (req, res) => {
      const raw = await readBody(req)
      if (req.method === "GET" && req.url === "/api/version") return json(res, 200, { version: "0.12.0" })
      if (req.method === "GET" && req.url === "/api/tags") {
        return json(res, 200, { models: models.map((name) => ({ name, model: name, size: 1, digest: "x", modified_at: new Date().toISOString() })) })
      }
      if (req.method !== "POST" || req.url !== "/api/chat") return json(res, 404, { error: "404 page not found" })
      const body = JSON.parse(raw.toString("utf8")) as {
        model: string
        stream?: boolean
        format?: unknown
        options?: { num_ctx?: number }
        messages: Array<{ role: string; content: string }>
      }
      const record: ChatRequestRecord = {
        model: body.model,
        numCtx: body.options?.num_ctx,
        systemPrompt: body.messages.find((m) => m.role === "system")?.content ?? "",
        userContent: body.messages.find((m) => m.role === "user")?.content ?? "",
        stream: body.stream !== false,
        format: body.format
      }
      requests.push(record)
      if (faults.apply(req, res)) return
      if (!models.includes(body.model)) return json(res, 404, { error: `model '${body.model}' not found` })
      const streamError = streamErrors.shift()
      const content = JSON.stringify(cleanLikeTheFake(record.userContent))
      const base = { model: body.model, created_at: new Date().toISOString() }
      if (streamError !== undefined) {
        // Ollama reports a failure that happens after the headers as an error line with status 200
        if (record.stream) {
          res.writeHead(200, { "content-type": "application/x-ndjson" })
          res.write(JSON.stringify({ ...base, message: { role: "assistant", content: "" }, done: false }) + "\n")
          return res.end(JSON.stringify({ error: streamError }) + "\n")
        }
        return json(res, 200, { error: streamError })
      }
      if (record.stream) {
        res.writeHead(200, { "content-type": "application/x-ndjson" })
        res.write(JSON.stringify({ ...base, message: { role: "assistant", content }, done: false }) + "\n")
        return res.end(JSON.stringify({ ...base, message: { role: "assistant", content: "" }, done: true, done_reason: "stop" }) + "\n")
      }
      json(res, 200, {
        ...base,
        message: { role: "assistant", content },
        done: true,
        done_reason: "stop",
        total_duration: 1,
        prompt_eval_count: Math.ceil(record.userContent.length / 4),
        eval_count: Math.ceil(content.length / 4)
      })
    }, () => faults.destroyHanging())

    return {
      url: server.url,
      requests,
      failNext: (fault, times = 1) => {
        if (fault.kind === "stream-error") for (let i = 0; i < times; i++) streamErrors.push(fault.message)
        else faults.failNext(fault, times)
      },
      down: server.down,
      up: server.up
    }
  })
