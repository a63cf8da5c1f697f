/**
 * Publishes a cleaned entry as a page in a Notion database with the official
 * `@notionhq/client`: title, date and an "Entry ID" property; the cleaned text
 * as paragraphs split to Notion's 2,000-character limit and sent in batches
 * of at most 100 blocks; the raw transcript inside a toggle.
 *
 * **Idempotent.** Before creating, it looks for the page this sync already
 * made: the stored page id, else a query of the database by the entry-id
 * property. The page id is recorded (`recordPageId`) right after creation,
 * before any appends. A page left half-written by an earlier attempt is
 * finished, not duplicated: the block list is a deterministic function of
 * the entry, so only the missing tail is appended.
 *
 * **One retry layer.** The client's own retries are off; every failure is
 * classified and handed to the pipeline's `RetryPolicy`, which records it:
 *
 * | Failure                                                         | Class     |
 * |-----------------------------------------------------------------|-----------|
 * | 429 `rate_limited`, 529 `service_overload` (+ Retry-After)      | temporary |
 * | 409 `conflict_error`, 500, 502, 503, 504                         | temporary |
 * | connection refused / reset, client timeout                      | temporary |
 * | 400 `validation_error` (incl. the free-workspace block cap)     | permanent |
 * | 401 `unauthorized` (token)                                      | permanent |
 * | 403 `restricted_resource` (database not shared)                 | permanent |
 * | 404 `object_not_found` (database missing or not shared)         | permanent |
 *
 * All Notion calls made through one layer share one rate limiter
 * (default 3 requests/second; `Retry-After` is honoured on top of it).
 *
 * @since 0.1.0
 */
import {
  APIErrorCode,
  type BlockObjectRequest,
  Client,
  collectPaginatedAPI,
  isHTTPResponseError,
  isNotionClientError,
  LogLevel
} from "@notionhq/client"
import { Context, Effect, Layer, RateLimiter, Redacted, type Scope } from "effect"
import { fromHttpStatus, fromTransportError, parseRetryAfter, PermanentError, TemporaryError } from "./Errors.js"

/**
 * What goes on the page.
 * @since 0.1.0
 */
export interface NotionPageInput {
  readonly syncId: string
  readonly entryId: string
  readonly title: string
  readonly text: string
  readonly transcript: string
  readonly createdAt: Date
  /** The page id already stored for this sync, if any. */
  readonly existingPageId: string | null
}

/**
 * @since 0.1.0
 * @category tags
 */
export class NotionPublisher extends Context.Tag("@voice-journal/core/NotionPublisher")<NotionPublisher, {
  readonly publish: (
    input: NotionPageInput,
    recordPageId: (pageId: string) => Effect.Effect<void, TemporaryError | PermanentError>
  ) => Effect.Effect<{ readonly pageId: string }, TemporaryError | PermanentError>
}>() {}

/**
 * @since 0.1.0
 * @category models
 */
export interface NotionConfig {
  readonly token: Redacted.Redacted<string>
  readonly databaseId: string
  /** Default `https://api.notion.com`; point it at a proxy or a test server. */
  readonly baseUrl?: string | undefined
  readonly titleProperty?: string | undefined
  readonly dateProperty?: string | undefined
  /** A rich_text property holding the voice-journal entry id (used to find pages again). */
  readonly entryIdProperty?: string | undefined
  readonly requestsPerSecond?: number | undefined
  /** Per-request timeout in milliseconds. Default 60,000. */
  readonly timeoutMs?: number | undefined
}

/** Notion's limits (https://developers.notion.com/reference/request-limits). @since 0.1.0 */
export const limits = { richTextChars: 2000, childrenPerRequest: 100 } as const

/**
 * Splits text into pieces of at most `max` characters, at paragraph breaks,
 * then whitespace, then hard. No character is lost (beyond the whitespace at
 * a split).
 * @since 0.1.0
 */
export const splitText = (text: string, max: number = limits.richTextChars): ReadonlyArray<string> =>
  text.split(/\n\s*\n/).map((p) => p.trim()).filter((p) => p !== "").flatMap((paragraph) => {
    const pieces: Array<string> = []
    let rest = paragraph
    while (rest.length > max) {
      const space = rest.lastIndexOf(" ", max)
      const cut = space > max / 2 ? space : max
      pieces.push(rest.slice(0, cut))
      rest = rest.slice(cut).replace(/^ /, "")
    }
    pieces.push(rest)
    return pieces
  })

const paragraph = (content: string): BlockObjectRequest => ({
  object: "block",
  type: "paragraph",
  paragraph: { rich_text: [{ type: "text", text: { content } }] }
})

/** The page body, in order: the cleaned text, then the transcript toggle (children separate, ≤ 100 per request). */
const bodyOf = (input: NotionPageInput) => {
  const text = splitText(input.text).map(paragraph)
  const transcript = splitText(input.transcript).map(paragraph)
  const toggle = (children: ReadonlyArray<BlockObjectRequest>): BlockObjectRequest => ({
    object: "block",
    type: "toggle",
    toggle: { rich_text: [{ type: "text", text: { content: "Transcript" } }], children: children as Array<never> }
  })
  return { text, transcript, toggle }
}

const chunks = <A>(xs: ReadonlyArray<A>, size: number): ReadonlyArray<ReadonlyArray<A>> =>
  Array.from({ length: Math.ceil(xs.length / size) }, (_, i) => xs.slice(i * size, (i + 1) * size))

/**
 * @since 0.1.0
 * @category constructors
 */
export const make = (config: NotionConfig): Effect.Effect<typeof NotionPublisher.Service, never, Scope.Scope> =>
  Effect.gen(function*() {
    const limiter = yield* RateLimiter.make({ limit: config.requestsPerSecond ?? 3, interval: "1 second" })
    const titleProperty = config.titleProperty ?? "Name"
    const dateProperty = config.dateProperty ?? "Date"
    const entryIdProperty = config.entryIdProperty ?? "Entry ID"
    const token = Redacted.value(config.token)
    let dataSourceId: string | undefined

    /** One Notion call: rate-limited, interruptible (aborts the HTTP request), classified. */
    const call = <A>(what: string, f: (client: Client) => Promise<A>): Effect.Effect<A, TemporaryError | PermanentError> =>
      limiter(Effect.tryPromise({
        try: (signal) =>
          f(
            new Client({
              auth: token,
              ...(config.baseUrl !== undefined ? { baseUrl: config.baseUrl } : {}),
              timeoutMs: config.timeoutMs ?? 60_000,
              retry: false,
              logLevel: LogLevel.ERROR,
              fetch: (url, init) => fetch(url, { ...init, signal })
            })
          ),
        catch: (error) => classify(what, error)
      }))

    const resolveDataSource = Effect.suspend(() =>
      dataSourceId !== undefined
        ? Effect.succeed(dataSourceId)
        : call("retrieving the database", (c) => c.databases.retrieve({ database_id: config.databaseId })).pipe(
          Effect.flatMap((db) => {
            const first = "data_sources" in db ? db.data_sources[0]?.id : undefined
            return first === undefined
              ? Effect.fail(new PermanentError({ service: "notion", message: `Notion database ${config.databaseId} has no data source` }))
              : Effect.sync(() => (dataSourceId = first))
          })
        )
    )

    const findPage = (input: NotionPageInput) =>
      Effect.gen(function*() {
        if (input.existingPageId !== null) {
          const page = yield* call("retrieving the page", (c) => c.pages.retrieve({ page_id: input.existingPageId! })).pipe(
            Effect.map((p) => ("in_trash" in p && p.in_trash) || ("archived" in p && p.archived) ? undefined : p.id),
            Effect.catchIf((e) => e.status === 404, () => Effect.succeed(undefined))
          )
          if (page !== undefined) return page
        }
        const source = yield* resolveDataSource
        const found = yield* call("finding the page", (c) =>
          c.dataSources.query({
            data_source_id: source,
            filter: { property: entryIdProperty, rich_text: { equals: input.entryId } },
            page_size: 1
          }))
        return found.results[0]?.id
      })

    const listChildren = (blockId: string) =>
      call("listing blocks", (c) => collectPaginatedAPI(c.blocks.children.list, { block_id: blockId }))

    const append = (blockId: string, blocks: ReadonlyArray<BlockObjectRequest>) =>
      Effect.forEach(chunks(blocks, limits.childrenPerRequest), (batch) =>
        call("appending blocks", (c) => c.blocks.children.append({ block_id: blockId, children: batch as Array<BlockObjectRequest> })), { discard: true })

    /** Appends whatever an earlier attempt did not (the body is deterministic). */
    const finish = (pageId: string, input: NotionPageInput) =>
      Effect.gen(function*() {
        const { text, toggle, transcript } = bodyOf(input)
        const existing = yield* listChildren(pageId)
        const missingText = text.slice(Math.min(existing.length, text.length))
        yield* append(pageId, missingText)
        let toggleBlock = existing[text.length]
        if (toggleBlock === undefined) {
          yield* append(pageId, [toggle(transcript.slice(0, limits.childrenPerRequest))])
          toggleBlock = (yield* listChildren(pageId))[text.length]
        }
        if (toggleBlock === undefined) return
        const inToggle = yield* listChildren(toggleBlock.id)
        yield* append(toggleBlock.id, transcript.slice(inToggle.length))
      })

    const publish = (
      input: NotionPageInput,
      recordPageId: (pageId: string) => Effect.Effect<void, TemporaryError | PermanentError>
    ) =>
      Effect.gen(function*() {
        const existing = yield* findPage(input)
        if (existing !== undefined) {
          if (existing !== input.existingPageId) yield* recordPageId(existing)
          yield* finish(existing, input)
          return { pageId: existing }
        }
        const source = yield* resolveDataSource
        const { text, toggle, transcript } = bodyOf(input)
        // the first request carries what fits; everything else is appended by `finish`
        const firstBlocks = text.length < limits.childrenPerRequest
          ? [...text, toggle(transcript.slice(0, limits.childrenPerRequest))]
          : text.slice(0, limits.childrenPerRequest)
        const page = yield* call("creating the page", (c) =>
          c.pages.create({
            parent: { type: "data_source_id", data_source_id: source },
            properties: {
              [titleProperty]: { title: [{ type: "text", text: { content: input.title.slice(0, limits.richTextChars) } }] },
              [dateProperty]: { date: { start: input.createdAt.toISOString() } },
              [entryIdProperty]: { rich_text: [{ type: "text", text: { content: input.entryId } }] }
            },
            children: firstBlocks as Array<BlockObjectRequest>
          }))
        yield* recordPageId(page.id)
        yield* finish(page.id, input)
        return { pageId: page.id }
      })

    return NotionPublisher.of({ publish })
  })

const classify = (what: string, error: unknown): TemporaryError | PermanentError => {
  if (isHTTPResponseError(error)) {
    const headers = error.headers as { get?: (name: string) => string | null } | Record<string, string> | undefined
    const retryAfter = typeof headers?.get === "function" ? headers.get("retry-after") : (headers as Record<string, string> | undefined)?.["retry-after"]
    const retryAfterMillis = parseRetryAfter(retryAfter)
    const base = `Notion ${what}: ${error.status} ${error.code}: ${error.message}`
    const hint = error.code === APIErrorCode.Unauthorized
      ? " (check NOTION_TOKEN)"
      : error.code === APIErrorCode.RestrictedResource || error.code === APIErrorCode.ObjectNotFound
      ? " (does the database exist, and is it shared with the integration?)"
      : ""
    // 529 service_overload is Notion's "slow down", like 429
    return fromHttpStatus("notion", error.status, base + hint, { retryAfterMillis })
  }
  if (isNotionClientError(error)) return new TemporaryError({ service: "notion", message: `Notion ${what}: ${error.message}` })
  return fromTransportError("notion", error)
}

/**
 * The Notion publisher (one rate limiter per layer instance).
 * @since 0.1.0
 * @category layers
 */
export const layer = (config: NotionConfig): Layer.Layer<NotionPublisher> => Layer.scoped(NotionPublisher, make(config))
