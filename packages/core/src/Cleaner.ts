/**
 * Transcript → clean journal text and a short title, with a local LLM via
 * the official `ollama` client.
 *
 * Three behaviours of Ollama (and Node) shape this module:
 * - **A loading model has no status.** The request simply waits, and a
 *   client that disconnects aborts the load, so a short timeout plus
 *   retries never succeeds. The timeout is long (default 10 minutes, per
 *   request) and it is the only deadline: Node's built-in `fetch` would cut
 *   every request whose headers take more than 5 minutes (undici's
 *   `headersTimeout`; with `stream: false` Ollama sends headers only when the
 *   answer is complete — ollama-js #72, #144), so requests go through an
 *   undici agent of our own with those transport timeouts turned off.
 * - **A prompt longer than the context is silently truncated.** So every
 *   request sends `options.num_ctx`, and a transcript is cleaned in pieces
 *   that fit with room for the answer (tokens estimated conservatively at one
 *   per 3 UTF-8 bytes; cuts at sentence ends, else whitespace), in order,
 *   joined with paragraph breaks: no part of a recording is dropped. If
 *   Ollama still reports that a piece did not fit (`done_reason: "length"`,
 *   or a prompt that filled the window) the piece is split again, up to
 *   three times. The title is the first piece's title.
 * - **What the model says is untrusted input** (OWASP API10): the answer
 *   must be `{title, text}` JSON (requested as structured output), control
 *   and bidi-override characters are stripped, the title is one line of at
 *   most 200 characters.
 *
 * Failure classification:
 *
 * | Failure                                                        | Class                                    |
 * |----------------------------------------------------------------|------------------------------------------|
 * | connection refused / reset, no response                        | temporary                                |
 * | no answer within `timeout`                                     | temporary                                |
 * | HTTP 429 (honouring Retry-After), 500, 502, 503 (queue full), other 5xx | temporary                       |
 * | HTTP 500 "timed out waiting for llama runner to start"         | temporary (the load may work next time)  |
 * | `{"error": …}` in a 200 answer (a failure after the headers)   | temporary                                |
 * | a 200 body that is not JSON at all                             | temporary (a proxy or a cut connection)  |
 * | HTTP 404 `model 'x' not found`                                 | permanent: "run `ollama pull x`"         |
 * | HTTP 404 otherwise (wrong host path)                           | permanent                                |
 * | HTTP 400 (bad request or options), 401, 403 (auth proxy)       | permanent                                |
 * | the model's answer is not `{title, text}`, has an empty text, or the first piece has no title | retried once at once, then permanent |
 * | the answer does not fit `numCtx` even after splitting          | permanent: "raise numCtx"                |
 * | an empty transcript, a `numCtx` too small for the prompt       | permanent                                |
 *
 * Why a bad answer is permanent after one immediate retry: with structured
 * output a model that supports it answers valid JSON, so a second bad answer
 * means the model (or an old Ollama that ignores `format`) cannot do this
 * job; marking it temporary would spend the whole durable retry budget on
 * the same failure. One retry covers a sampling accident.
 *
 * @since 0.1.0
 */
import { Agent, fetch as undiciFetch } from "@effect/platform-node/Undici"
import { Context, Data, Duration, Effect, Either, Layer, Schema, type Scope } from "effect"
import { type ChatResponse, type Message, Ollama, type Options } from "ollama"
import { fromHttpStatus, fromTransportError, parseRetryAfter, PermanentError, TemporaryError } from "./Errors.js"
import { estimateTokens, sanitizeText, sanitizeTitle, splitForContext } from "./internal/cleanerText.js"

/**
 * A cleaned transcript: what becomes a journal entry and a Notion page.
 * `model` records which model wrote it, so re-runs with another model can be
 * told apart.
 * @since 0.1.0
 * @category models
 */
export interface CleanedText {
  readonly title: string
  readonly text: string
  readonly model: string
  readonly summary: string | null
  readonly actionItems: ReadonlyArray<string>
  readonly tags: ReadonlyArray<string>
  readonly sections: Readonly<Record<string, string>>
}

/**
 * The cleanup port: any LLM that turns a transcript into a titled entry.
 * @since 0.1.0
 * @category tags
 */
export class Cleaner extends Context.Tag("@voice-journal/core/Cleaner")<Cleaner, {
  readonly clean: (transcript: string) => Effect.Effect<CleanedText, TemporaryError | PermanentError>
}>() {}

/**
 * The default instructions: clean up, keep everything, title it. Replace
 * them with `systemPrompt`; keep asking for `{"title", "text"}` JSON.
 * @since 0.1.0
 */
export const defaultSystemPrompt =
  `You turn a raw speech-to-text transcript of a personal voice note into a clean journal entry.
Fix punctuation, capitalisation, paragraph breaks, filler words (um, uh, you know) and obvious mis-recognitions.
Keep the speaker's own words, voice and meaning. Never summarise, never drop content, never add facts.
Answer as JSON: {"title": a short title of at most 8 words, "text": the cleaned entry}.`

/**
 * Settings of the Ollama cleaner. Only `model` is required.
 * @since 0.1.0
 * @category models
 */
export interface OllamaCleanerConfig {
  /** Where Ollama (or a proxy in front of it) listens. Default `http://127.0.0.1:11434`. */
  readonly host?: string | undefined
  readonly model: string
  /** Default {@link defaultSystemPrompt}. */
  readonly systemPrompt?: string | undefined
  /**
   * The context window, sent as `options.num_ctx` with every request
   * (Ollama's own default depends on the GPU and truncates silently).
   * Transcripts are split to fit it. Default 8192.
   */
  readonly numCtx?: number | undefined
  /** Other Ollama options (temperature, seed, …), passed through; `num_ctx` comes from `numCtx`. */
  readonly options?: Partial<Options> | undefined
  /** How long Ollama keeps the model loaded after a request (e.g. "30m"); Ollama's default is 5 minutes. */
  readonly keepAlive?: string | number | undefined
  /**
   * How long one request may take, model loading included. Long on purpose:
   * a disconnect aborts a load in progress. Default 10 minutes.
   */
  readonly timeout?: Duration.DurationInput | undefined
  /** Extra request headers, e.g. credentials for an authenticating proxy. Never logged. */
  readonly headers?: Readonly<Record<string, string>> | undefined
}

const Answer = Schema.parseJson(Schema.Struct({ title: Schema.optional(Schema.String), text: Schema.String }))

/** The JSON schema Ollama constrains the model's output to. */
const answerFormat = {
  type: "object",
  properties: { title: { type: "string" }, text: { type: "string" } },
  required: ["title", "text"]
} as const

const partNote =
  "\n\nThis message is one part of a longer recording, cut at a sentence boundary. Clean only this part, and keep all of it."

const maxTitleLength = 200
const maxResplits = 3
/** A piece budget below this means the instructions leave no room to work. */
const minPieceTokens = 64

/**
 * How many transcript tokens one request may carry: the window holds the
 * instructions, the piece, and the answer — the piece again, cleaned, as
 * JSON (25% reserved on top), plus the chat template, the JSON keys and the
 * title (a fixed 160).
 */
const pieceBudget = (numCtx: number, systemPrompt: string) =>
  Math.floor((numCtx - estimateTokens(systemPrompt + partNote) - 160) / 2.25)

/** An answer that does not fit the window: Ollama stopped at the limit or cut the prompt. */
class Overflow extends Data.TaggedClass("Overflow")<{}> {}

/** The model answered, but not something usable. */
class MalformedAnswer extends Data.TaggedError("MalformedAnswer")<{ readonly reason: string }> {}

/** A short, one-line, control-free excerpt of something the server said, for error messages. */
const preview = (s: string, max = 200) => Array.from(s).length > max ? `${sanitizeTitle(s, max)}…` : sanitizeTitle(s, max)

/**
 * Builds the Ollama cleaner. The scope owns the HTTP connection pool.
 * @since 0.1.0
 * @category constructors
 */
export const makeOllama = (config: OllamaCleanerConfig): Effect.Effect<Cleaner["Type"], never, Scope.Scope> =>
  Effect.gen(function*() {
    const host = config.host ?? "http://127.0.0.1:11434"
    const numCtx = config.numCtx ?? 8192
    const systemPrompt = config.systemPrompt ?? defaultSystemPrompt
    const timeout = Duration.decode(config.timeout ?? "10 minutes")
    const budget = pieceBudget(numCtx, systemPrompt)
    // 0 turns undici's 5-minute header/body timeouts off: `timeout` is the one deadline
    const dispatcher = yield* Effect.acquireRelease(
      Effect.sync(() => new Agent({ headersTimeout: 0, bodyTimeout: 0 })),
      (agent) => Effect.promise(() => agent.destroy())
    )

    /** One `/api/chat` request; interruption (and the timeout) aborts it. */
    const chat = (messages: Array<Message>) =>
      Effect.async<ChatResponse, TemporaryError | PermanentError>((resume, signal) => {
        let retryAfter: string | null = null
        const fetch = (input: unknown, init: Record<string, unknown> | undefined) =>
          undiciFetch(input as string, { ...init, signal, dispatcher }).then((response) => {
            retryAfter = response.headers.get("retry-after")
            return response
          })
        const client = new Ollama({
          host,
          fetch: fetch as unknown as typeof globalThis.fetch,
          ...(config.headers !== undefined ? { headers: { ...config.headers } } : {})
        })
        client.chat({
          model: config.model,
          stream: false,
          format: answerFormat,
          messages,
          options: { ...config.options, num_ctx: numCtx },
          ...(config.keepAlive !== undefined ? { keep_alive: config.keepAlive } : {})
        }).then(
          (response) => resume(Effect.succeed(response)),
          (error: unknown) => resume(Effect.fail(classify(error, retryAfter, config.model, host)))
        )
      }).pipe(
        Effect.timeoutFail({
          duration: timeout,
          onTimeout: () => new TemporaryError({ service: "ollama", message: `no answer from ${host} within ${Duration.format(timeout)}` })
        })
      )

    /** Asks for one piece and checks the answer. */
    const ask = (piece: string, options: { readonly split: boolean; readonly needsTitle: boolean }) =>
      chat([{ role: "system", content: systemPrompt + (options.split ? partNote : "") }, { role: "user", content: piece }]).pipe(
        Effect.flatMap((response): Effect.Effect<{ title: string; text: string } | Overflow, TemporaryError | MalformedAnswer> => {
          // a failure after the headers arrives as `{"error": …}` with status 200
          const reported = (response as { error?: unknown }).error
          if (typeof reported === "string") {
            return Effect.fail(new TemporaryError({ service: "ollama", message: `Ollama reported: ${preview(reported)}` }))
          }
          const content = (response as { message?: { content?: unknown } }).message?.content
          if (typeof content !== "string") return Effect.fail(new MalformedAnswer({ reason: "the answer has no message" }))
          if (response.done_reason === "length" || response.prompt_eval_count >= numCtx) return Effect.succeed(new Overflow())
          const decoded = Schema.decodeUnknownEither(Answer)(content)
          if (Either.isLeft(decoded)) {
            return Effect.fail(new MalformedAnswer({ reason: `the answer is not {"title", "text"} JSON: ${preview(content)}` }))
          }
          const text = sanitizeText(decoded.right.text)
          const title = sanitizeTitle(decoded.right.title ?? "", maxTitleLength)
          if (text === "") return Effect.fail(new MalformedAnswer({ reason: "the answer's text is empty" }))
          if (options.needsTitle && title === "") return Effect.fail(new MalformedAnswer({ reason: "the answer has no title" }))
          return Effect.succeed({ title, text })
        }),
        Effect.retry({ times: 1, while: (e) => e._tag === "MalformedAnswer" }),
        Effect.catchTag("MalformedAnswer", (e) =>
          Effect.fail(new PermanentError({ service: "ollama", message: `model '${config.model}' gave an unusable answer twice: ${e.reason}` })))
      )

    /** Cleans one piece; a piece Ollama reports as too long is halved and cleaned in parts. */
    const cleanPiece = (
      piece: string,
      options: { readonly split: boolean; readonly needsTitle: boolean; readonly depth: number }
    ): Effect.Effect<Array<{ title: string; text: string }>, TemporaryError | PermanentError> =>
      Effect.flatMap(ask(piece, options), (answer) => {
        if (!(answer instanceof Overflow)) return Effect.succeed([answer])
        const half = Math.ceil(estimateTokens(piece) / 2)
        const parts = splitForContext(piece, half)
        if (options.depth >= maxResplits || half < minPieceTokens || parts.length < 2) {
          return Effect.fail(new PermanentError({
            service: "ollama",
            message: `the answer of model '${config.model}' does not fit num_ctx=${numCtx}: raise numCtx (or num_predict)`
          }))
        }
        return Effect.map(
          Effect.forEach(parts, (part, i) =>
            cleanPiece(part, { split: true, needsTitle: options.needsTitle && i === 0, depth: options.depth + 1 })),
          (answers) => answers.flat()
        )
      })

    const clean = (transcript: string) =>
      Effect.gen(function*() {
        if (transcript.trim() === "") {
          return yield* new PermanentError({ service: "ollama", message: "the transcript is empty: nothing to clean" })
        }
        if (budget < minPieceTokens) {
          return yield* new PermanentError({
            service: "ollama",
            message: `num_ctx=${numCtx} leaves no room for a transcript after the system prompt: raise numCtx`
          })
        }
        const pieces = splitForContext(transcript, budget)
        yield* Effect.annotateCurrentSpan("pieces", pieces.length)
        const answers = yield* Effect.forEach(pieces, (piece, i) =>
          cleanPiece(piece, { split: pieces.length > 1, needsTitle: i === 0, depth: 0 }))
        const cleaned = answers.flat()
        return { title: cleaned[0]!.title, text: cleaned.map((c) => c.text).join("\n\n"), model: config.model, summary: null, actionItems: [], tags: [], sections: {} } satisfies CleanedText
      }).pipe(Effect.withSpan("Cleaner.clean", { attributes: { model: config.model, numCtx } }))

    return Cleaner.of({ clean })
  })

const classify = (error: unknown, retryAfter: string | null, model: string, host: string): TemporaryError | PermanentError => {
  const status = (error as { status_code?: unknown }).status_code
  if (typeof status !== "number") return fromTransportError("ollama", error)
  const said = preview(error instanceof Error ? error.message : String(error))
  if (status === 404 && /model\b.*\bnot found/i.test(said)) {
    return new PermanentError({ service: "ollama", status, message: `model '${model}' not found on ${host}: run \`ollama pull ${model}\` there` })
  }
  return fromHttpStatus("ollama", status, `Ollama answered ${status}: ${said}`, { retryAfterMillis: parseRetryAfter(retryAfter) })
}

/**
 * The cleaner on Ollama, e.g. `layerOllama({ model: "llama3.2" })`.
 * @since 0.1.0
 * @category layers
 */
export const layerOllama = (config: OllamaCleanerConfig): Layer.Layer<Cleaner> => Layer.scoped(Cleaner, makeOllama(config))
