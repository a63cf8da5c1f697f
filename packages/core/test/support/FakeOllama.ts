/**
 * A loopback server that speaks Ollama's HTTP API, for tests and benches
 * that drive the official `ollama` client (or anything else) against it:
 *
 * - `POST /api/chat`, answering JSON (`stream: false`) or NDJSON (streamed),
 *   errors as `{"error": "…"}` bodies like Ollama's;
 * - `GET /api/tags`, `GET /api/version`, `GET /` ("Ollama is running").
 *
 * Its "model" cleans deterministically so tests can assert on the output
 * ({@link cleanLikeTheFake}): it drops "um"/"uh", collapses whitespace,
 * capitalises sentences, ends with a period, and titles the entry with its
 * first four words, answering `{"title", "text"}` JSON as structured output.
 * When the request's `format` is a JSON Schema it answers exactly the
 * properties the schema declares ({@link answerLikeTheFake}), and a merge
 * request (its user message a JSON array of parts) joins the parts' values.
 *
 * It imitates the behaviours that bite real clients:
 * - unknown models get 404 `model 'x' not found` (a name without a tag means
 *   `:latest`, as in Ollama);
 * - the context window is `options.num_ctx`, else 4096, with tokens counted
 *   as 4 characters; a longer prompt is **silently truncated** (its start is
 *   dropped, `prompt_eval_count` equals the window) and an answer that does
 *   not fit is cut off with `done_reason: "length"`.
 *
 * Usage: `const ollama = yield* FakeOllama.make()` inside a scope (the server
 * closes with it), then `host: ollama.url`. Script the next requests with
 * `failNext`, take it down and up with `down()` / `up()`, inspect
 * `requests` and `abandoned()`. Answers are instant unless `latencyMillis`
 * is given (benches simulating a model's pace).
 */
import { Effect, type Scope } from "effect"
import type * as http from "node:http"
import { type Fault, FaultQueue, readBody } from "./Faults.js"
import * as LoopbackServer from "./LoopbackServer.js"

/** What the fake saw of one `/api/chat` request. */
export interface ChatRequestRecord {
  readonly model: string
  readonly numCtx: number | undefined
  /** All `options` as sent (temperature, …). */
  readonly options: Readonly<Record<string, unknown>>
  readonly keepAlive: string | number | undefined
  /** The `Authorization` header, for clients configured with a proxy's credentials. */
  readonly authorization: string | undefined
  readonly systemPrompt: string
  readonly userContent: string
  readonly stream: boolean
  readonly format: unknown
}

/**
 * What the next request gets instead of a normal answer: one of the shared
 * {@link Fault}s (a status with headers and body, a refused/reset
 * connection, a hang, a body that is not JSON), or
 * - `stream-error`: status 200, then `{"error": message}` (as an NDJSON line
 *   when streaming) — how Ollama reports a failure after the headers;
 * - `answer`: status 200 and the model "says" exactly `content` (malformed
 *   JSON, an empty text, control characters, …), with `done_reason`
 *   `doneReason` (default "stop").
 */
export type OllamaFault =
  | Fault
  | { readonly kind: "stream-error"; readonly message: string }
  | { readonly kind: "answer"; readonly content: string; readonly doneReason?: string }
  /** A structured answer without these properties (a model that ignored part of the schema). */
  | { readonly kind: "partial"; readonly omit: ReadonlyArray<string> }

export interface FakeOllama {
  readonly url: string
  /** Every `/api/chat` request, in arrival order (including scripted ones). */
  readonly requests: ReadonlyArray<ChatRequestRecord>
  /** The next `times` `/api/chat` requests get `fault`, in the order queued. */
  readonly failNext: (fault: OllamaFault, times?: number) => void
  /** Ollama is down: the port refuses connections (open ones are reset) until `up()`. */
  readonly down: () => Promise<void>
  /** Listens again, on the same port. */
  readonly up: () => Promise<void>
  /** How many requests the client gave up on (timeout, interruption) before an answer. */
  readonly abandoned: () => number
}

const tokens = (s: string) => Math.ceil(s.length / 4)
const templateTokens = 8
const defaultNumCtx = 4096

/** The fake model's deterministic cleanup. */
export const cleanLikeTheFake = (transcript: string): { readonly title: string; readonly text: string } => {
  const words = transcript.replace(/\b(?:um+|uh+)\b,?/gi, " ").replace(/\s+/g, " ").trim()
  const sentences = words.replace(/(^|[.!?]\s+)([a-z])/g, (_, end: string, letter: string) => end + letter.toUpperCase())
  const text = sentences === "" || /[.!?]$/.test(sentences) ? sentences : `${sentences}.`
  const title = text.split(" ").slice(0, 4).join(" ").replace(/[.!?,;:]+$/, "")
  return { title, text }
}

const firstSentence = (text: string) => text.match(/^.*?[.!?](?=\s|$)/)?.[0] ?? text

/**
 * The fake model's answer to `format` (a JSON Schema object): each declared
 * property, derived from the transcript — `title`/`text` as
 * {@link cleanLikeTheFake}, `summary` its first sentence, `actionItems` the
 * sentences with "need to", "have to", "must" or "will", `tags` the words
 * of 7+ letters as written (first three, case kept: normalising is the
 * cleaner's job), any other string property `"<name>: <summary>"`. A user
 * message that is a JSON array of parts (the cleaner's merge step) gets each
 * property as the parts' values joined with a space. Without a schema:
 * `{title, text}`.
 */
export const answerLikeTheFake = (userContent: string, format: unknown): Record<string, unknown> => {
  const properties = (format as { properties?: Record<string, { type?: string }> } | undefined)?.properties
  if (typeof properties !== "object" || properties === null) return { ...cleanLikeTheFake(userContent) }
  let parts: Array<Record<string, unknown>> | undefined
  try {
    const parsed: unknown = JSON.parse(userContent)
    if (Array.isArray(parsed)) parts = parsed as Array<Record<string, unknown>>
  } catch {
    // not JSON: a transcript piece
  }
  const { text, title } = cleanLikeTheFake(userContent)
  const summary = firstSentence(text)
  const sentences = text.split(/(?<=[.!?])\s+/)
  return Object.fromEntries(Object.entries(properties).map(([name, schema]) => {
    if (parts !== undefined) {
      const values = parts.map((p) => p[name]).filter((v) => v !== undefined)
      return [name, schema.type === "array" ? values.flat() : values.join(" ")]
    }
    switch (name) {
      case "title":
        return [name, title]
      case "text":
        return [name, text]
      case "summary":
        return [name, summary]
      case "actionItems":
        return [name, sentences.filter((s) => /\b(need to|have to|must|will)\b/i.test(s))]
      case "tags":
        return [name, (text.match(/\p{L}{7,}/gu) ?? []).slice(0, 3)]
      default:
        return [name, schema.type === "array" ? [] : `${name}: ${summary}`]
    }
  }))
}

const withTag = (name: string) => name.includes(":") ? name : `${name}:latest`

export const make = (
  options: { readonly models?: ReadonlyArray<string>; readonly latencyMillis?: number } = {}
): Effect.Effect<FakeOllama, never, Scope.Scope> =>
  Effect.gen(function*() {
    const models = (options.models ?? ["llama3.2"]).map(withTag)
    const faults = new FaultQueue()
    const script: Array<{ readonly kind: "fault" } | Exclude<OllamaFault, Fault>> = []
    const requests: Array<ChatRequestRecord> = []
    let abandoned = 0
    let serverClosing = false
    const json = (res: http.ServerResponse, status: number, body: unknown) =>
      res.writeHead(status, { "content-type": "application/json; charset=utf-8" }).end(JSON.stringify(body))

    const chat = async (req: http.IncomingMessage, res: http.ServerResponse, raw: Buffer) => {
      let body: {
        model?: string
        stream?: boolean
        format?: unknown
        keep_alive?: string | number
        options?: Record<string, unknown>
        messages?: Array<{ role: string; content: string }>
      }
      try {
        body = JSON.parse(raw.toString("utf8"))
      } catch {
        return json(res, 400, { error: "invalid character in request body" })
      }
      if (typeof body.model !== "string" || body.model === "") return json(res, 400, { error: "model is required" })
      const messages = body.messages ?? []
      const numCtx = typeof body.options?.num_ctx === "number" ? body.options.num_ctx : undefined
      const record: ChatRequestRecord = {
        model: body.model,
        numCtx,
        options: body.options ?? {},
        keepAlive: body.keep_alive,
        authorization: req.headers.authorization,
        systemPrompt: messages.filter((m) => m.role === "system").map((m) => m.content).join("\n"),
        userContent: messages.filter((m) => m.role === "user").map((m) => m.content).join("\n"),
        stream: body.stream !== false,
        format: body.format
      }
      requests.push(record)
      let reset = false // by us: a "refuse" fault, not the client giving up
      res.on("close", () => {
        if (!res.writableFinished && !reset && !serverClosing) abandoned++
      })

      const scripted = script.shift()
      if (scripted?.kind === "fault") {
        faults.apply(req, res)
        reset = req.socket.destroyed
        return
      }
      if (!models.includes(withTag(body.model))) return json(res, 404, { error: `model '${body.model}' not found` })
      if (options.latencyMillis !== undefined && options.latencyMillis > 0) {
        await new Promise((resolve) => setTimeout(resolve, options.latencyMillis))
        if (res.destroyed) return
      }
      const base = { model: body.model, created_at: new Date().toISOString() }
      if (scripted?.kind === "stream-error") {
        if (!record.stream) return json(res, 200, { error: scripted.message })
        res.writeHead(200, { "content-type": "application/x-ndjson" })
        res.write(JSON.stringify({ ...base, message: { role: "assistant", content: "" }, done: false }) + "\n")
        return res.end(JSON.stringify({ error: scripted.message }) + "\n")
      }

      // the context window: a prompt that does not fit loses its start, an answer that does not fit is cut off
      const window = numCtx ?? defaultNumCtx
      const room = window - tokens(record.systemPrompt) - templateTokens
      const user = tokens(record.userContent) > room
        ? record.userContent.slice(Math.max(0, record.userContent.length - Math.max(0, room) * 4))
        : record.userContent
      const promptEvalCount = Math.min(window, tokens(record.systemPrompt) + tokens(user) + templateTokens)
      const structured = answerLikeTheFake(user, body.format)
      if (scripted?.kind === "partial") for (const name of scripted.omit) delete structured[name]
      let content = scripted?.kind === "answer" ? scripted.content : JSON.stringify(structured)
      let doneReason = scripted?.kind === "answer" ? scripted.doneReason ?? "stop" : "stop"
      if (promptEvalCount + tokens(content) > window) {
        content = content.slice(0, Math.max(0, (window - promptEvalCount) * 4))
        doneReason = "length"
      }
      const final = {
        ...base,
        done: true,
        done_reason: doneReason,
        total_duration: 1,
        load_duration: 1,
        prompt_eval_count: promptEvalCount,
        prompt_eval_duration: 1,
        eval_count: tokens(content),
        eval_duration: 1
      }
      if (!record.stream) return json(res, 200, { ...final, message: { role: "assistant", content } })
      res.writeHead(200, { "content-type": "application/x-ndjson" })
      const chunk = Math.max(1, Math.ceil(content.length / 3))
      for (let i = 0; i < content.length; i += chunk) {
        res.write(JSON.stringify({ ...base, message: { role: "assistant", content: content.slice(i, i + chunk) }, done: false }) + "\n")
      }
      res.end(JSON.stringify({ ...final, message: { role: "assistant", content: "" } }) + "\n")
    }

    const server = yield* LoopbackServer.make((req, res) => {
      readBody(req).then((raw) => {
        if (req.method === "GET" && req.url === "/") return void res.writeHead(200).end("Ollama is running")
        if (req.method === "GET" && req.url === "/api/version") return json(res, 200, { version: "0.12.0" })
        if (req.method === "GET" && req.url === "/api/tags") {
          return json(res, 200, {
            models: models.map((name) => ({
              name,
              model: name,
              size: 1,
              digest: "0",
              modified_at: new Date().toISOString(),
              details: { format: "gguf", family: "llama", parameter_size: "3B", quantization_level: "Q4_K_M" }
            }))
          })
        }
        if (req.method === "POST" && req.url === "/api/chat") return chat(req, res, raw)
        res.writeHead(404, { "content-type": "text/plain" }).end("404 page not found")
      }).catch(() => res.destroy())
    }, () => {
      serverClosing = true
      faults.destroyHanging()
    })

    return {
      url: server.url,
      requests,
      failNext: (fault, times = 1) => {
        for (let i = 0; i < times; i++) {
          if (fault.kind === "stream-error" || fault.kind === "answer" || fault.kind === "partial") script.push(fault)
          else {
            faults.failNext(fault)
            script.push({ kind: "fault" })
          }
        }
      },
      down: async () => {
        serverClosing = true
        await server.down()
        serverClosing = false
      },
      up: server.up,
      abandoned: () => abandoned
    }
  })
