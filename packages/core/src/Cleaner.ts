/**
 * Transcript → clean journal text and a short title, with a local LLM via
 * the official `ollama` client.
 *
 * Two Ollama behaviours shape this module:
 * - A model that is still loading has no status code: the request simply
 *   waits, and a client that disconnects aborts the load. So the timeout is
 *   long (default 10 minutes) — a short timeout plus retries never succeeds.
 * - A prompt longer than the context window is silently truncated. So every
 *   request sends `options.num_ctx`, and long transcripts are cleaned in
 *   pieces that fit (split at sentence ends), then joined: no part of a
 *   recording is dropped. The title comes from the first piece.
 *
 * Failure classification:
 *
 * | Failure                                                   | Class     |
 * |-----------------------------------------------------------|-----------|
 * | connection refused / reset, no response                    | temporary |
 * | no answer within `timeout`                                  | temporary |
 * | HTTP 429 (+ Retry-After), 500 (incl. "timed out waiting for |           |
 * |   llama runner to start"), 502, 503 (queue full), 5xx       | temporary |
 * | an `{"error": …}` instead of a message (200)                | temporary |
 * | an answer that is not `{title, text}` JSON, or empty text   | temporary (models are not deterministic; the retry budget bounds it) |
 * | HTTP 404 `model 'x' not found`                              | permanent: "run `ollama pull x`" |
 * | HTTP 400 (bad request or options), 401, 403                 | permanent |
 * | an empty transcript                                         | permanent |
 *
 * @since 0.1.0
 */
import { Context, Duration, Effect, Layer, Schema } from "effect"
import { Ollama } from "ollama"
import { fromHttpStatus, fromTransportError, parseRetryAfter, PermanentError, TemporaryError } from "./Errors.js"

/**
 * @since 0.1.0
 */
export interface CleanedText {
  readonly title: string
  readonly text: string
  readonly model: string
}

/**
 * @since 0.1.0
 * @category tags
 */
export class Cleaner extends Context.Tag("@voice-journal/core/Cleaner")<Cleaner, {
  readonly clean: (transcript: string) => Effect.Effect<CleanedText, TemporaryError | PermanentError>
}>() {}

/**
 * The default instructions. Configurable: pass `systemPrompt`.
 * @since 0.1.0
 */
export const defaultSystemPrompt =
  `You turn a raw speech-to-text transcript of a personal voice note into a clean journal entry.
Fix punctuation, capitalisation, paragraph breaks, filler words (um, uh, like) and obvious mis-recognitions.
Keep the speaker's own words, voice and meaning. Never summarise, never drop content, never add facts.
Answer as JSON: {"title": a short title of at most 8 words, "text": the cleaned entry}.`

/**
 * @since 0.1.0
 * @category models
 */
export interface OllamaCleanerConfig {
  /** Default `http://127.0.0.1:11434`. */
  readonly host?: string | undefined
  readonly model: string
  readonly systemPrompt?: string | undefined
  /** Context window sent as `options.num_ctx` with every request. Default 8192. */
  readonly numCtx?: number | undefined
  /** Other Ollama options (temperature, …), passed through. */
  readonly options?: Readonly<Record<string, unknown>> | undefined
  /** How long Ollama keeps the model loaded after a request (e.g. "30m"). */
  readonly keepAlive?: string | number | undefined
  /** Long on purpose (model loading). Default 10 minutes. */
  readonly timeout?: Duration.DurationInput | undefined
}

const Answer = Schema.parseJson(Schema.Struct({ title: Schema.optional(Schema.String), text: Schema.String }))

/** Conservative: about 3 characters per token for English text. */
const charsPerToken = 3

/**
 * Splits `text` into pieces of at most `maxChars`, at sentence ends where
 * possible, else at whitespace, else hard. Joining the pieces with single
 * spaces gives back every word.
 * @since 0.1.0
 */
export const splitForContext = (text: string, maxChars: number): ReadonlyArray<string> => {
  const pieces: Array<string> = []
  let rest = text.trim()
  while (rest.length > maxChars) {
    const window = rest.slice(0, maxChars + 1)
    const sentenceEnd = Math.max(window.lastIndexOf(". "), window.lastIndexOf("! "), window.lastIndexOf("? "))
    const space = window.lastIndexOf(" ")
    const cut = sentenceEnd > maxChars / 2 ? sentenceEnd + 1 : space > 0 ? space : maxChars
    pieces.push(rest.slice(0, cut).trim())
    rest = rest.slice(cut).trim()
  }
  if (rest.length > 0) pieces.push(rest)
  return pieces
}

/** Model output is untrusted input for Notion and our API: no control characters, bounded title. */
const sanitize = (s: string, max: number) =>
  // eslint-disable-next-line no-control-regex
  s.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/g, "").trim().slice(0, max)

/**
 * @since 0.1.0
 * @category constructors
 */
export const makeOllama = (config: OllamaCleanerConfig) => {
  const host = config.host ?? "http://127.0.0.1:11434"
  const numCtx = config.numCtx ?? 8192
  const systemPrompt = config.systemPrompt ?? defaultSystemPrompt
  const timeout = Duration.decode(config.timeout ?? "10 minutes")
  // room for the instructions and an answer about as long as the input
  const maxPieceChars = Math.max(500, Math.floor(((numCtx - Math.ceil(systemPrompt.length / charsPerToken) - 256) / 2) * charsPerToken))

  const ask = (piece: string, part: { readonly index: number; readonly of: number }) =>
    Effect.async<string, TemporaryError | PermanentError>((resume, signal) => {
      let retryAfter: string | null = null
      const client = new Ollama({
        host,
        // our fetch: interruption and the timeout abort the HTTP request; Retry-After is kept
        fetch: (input, init) =>
          fetch(input, { ...init, signal }).then((response) => {
            retryAfter = response.headers.get("retry-after")
            return response
          })
      })
      const note = part.of > 1 ? `\n\n(This is part ${part.index + 1} of ${part.of} of one recording; clean only this part.)` : ""
      client.chat({
        model: config.model,
        stream: false,
        format: { type: "object", properties: { title: { type: "string" }, text: { type: "string" } }, required: ["title", "text"] },
        messages: [{ role: "system", content: systemPrompt + note }, { role: "user", content: piece }],
        options: { ...config.options, num_ctx: numCtx },
        ...(config.keepAlive !== undefined ? { keep_alive: config.keepAlive } : {})
      }).then(
        (response) => {
          // an `{"error": …}` body with status 200 arrives here as the "response"
          const content = (response as { message?: { content?: unknown } }).message?.content
          const reported = (response as { error?: unknown }).error
          resume(
            typeof content === "string"
              ? Effect.succeed(content)
              : Effect.fail(new TemporaryError({ service: "ollama", message: `Ollama reported: ${String(reported ?? "an answer without a message")}` }))
          )
        },
        (error: unknown) => resume(Effect.fail(classify(error, retryAfter, config.model, host)))
      )
    }).pipe(
      Effect.timeoutFail({
        duration: timeout,
        onTimeout: () => new TemporaryError({ service: "ollama", message: `no answer from ${host} within ${Duration.format(timeout)}` })
      }),
      Effect.flatMap((content) =>
        Schema.decodeUnknown(Answer)(content).pipe(
          Effect.mapError((cause) =>
            new TemporaryError({ service: "ollama", message: `the model's answer is not {title, text} JSON: ${content.slice(0, 120)}`, cause })
          )
        )
      ),
      Effect.flatMap((answer) => {
        const text = sanitize(answer.text, Number.MAX_SAFE_INTEGER)
        return text === ""
          ? Effect.fail(new TemporaryError({ service: "ollama", message: "the model answered with an empty text" }))
          : Effect.succeed({ title: sanitize(answer.title ?? "", 200), text })
      })
    )

  const clean = (transcript: string) =>
    Effect.gen(function*() {
      if (transcript.trim() === "") {
        return yield* new PermanentError({ service: "ollama", message: "the transcript is empty: nothing to clean" })
      }
      const pieces = splitForContext(transcript, maxPieceChars)
      const cleaned = yield* Effect.forEach(pieces, (piece, index) => ask(piece, { index, of: pieces.length }))
      const title = cleaned[0]!.title !== "" ? cleaned[0]!.title : sanitize(cleaned[0]!.text.split(/\s+/).slice(0, 8).join(" "), 200)
      return { title, text: cleaned.map((c) => c.text).join("\n\n"), model: config.model } satisfies CleanedText
    })

  return Cleaner.of({ clean })
}

const classify = (error: unknown, retryAfter: string | null, model: string, host: string): TemporaryError | PermanentError => {
  const status = (error as { status_code?: unknown }).status_code
  const message = error instanceof Error ? error.message : String(error)
  if (typeof status === "number") {
    if (status === 404 && /not found/i.test(message)) {
      return new PermanentError({ service: "ollama", status, message: `model '${model}' not found on ${host}: run \`ollama pull ${model}\` there` })
    }
    return fromHttpStatus("ollama", status, `Ollama answered ${status}: ${message}`, { retryAfterMillis: parseRetryAfter(retryAfter) })
  }
  return fromTransportError("ollama", error)
}

/**
 * The Ollama cleaner.
 * @since 0.1.0
 * @category layers
 */
export const layerOllama = (config: OllamaCleanerConfig): Layer.Layer<Cleaner> => Layer.succeed(Cleaner, makeOllama(config))
