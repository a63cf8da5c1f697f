/**
 * Publishes a cleaned entry as a page in a Notion database with the official
 * `@notionhq/client`: title, date and an entry-id property; the cleaned text
 * as paragraphs split to Notion's limits (2,000 characters per text, 100
 * blocks per request, 1,000 elements and 500 KB per request); the raw
 * transcript inside a toggle.
 *
 * **Idempotent.** Before creating, it looks for the page this sync already
 * made: the stored page id (a trashed or missing page counts as absent), else
 * a query of the database by the entry-id property. The page id is handed to
 * `recordPageId` right after creation, before any appends, so a crash between
 * "page created" and "row updated" never leads to a second page. A page left
 * half-written by an earlier attempt is finished, not duplicated: the block
 * list is a deterministic function of the entry, so only the missing tail
 * (top-level blocks, then the toggle's children) is appended. The query is
 * only the fallback: Notion's query index can trail a create by a moment,
 * which is why the id is recorded at once rather than rediscovered.
 *
 * **One retry layer.** The client's own retries are off (`retry: false`);
 * every failure is classified and returned to the pipeline's `RetryPolicy`,
 * which retries and records it:
 *
 * | Failure                                                        | Class     | Note                                   |
 * |----------------------------------------------------------------|-----------|----------------------------------------|
 * | 429 `rate_limited`, 529 `service_overload`                     | temporary | `retryAfterMillis` from `Retry-After`  |
 * | 409 `conflict_error`, 500, 502, 503, 504                        | temporary | `Retry-After` kept when sent           |
 * | connection refused / reset, no answer within `timeout`         | temporary |                                        |
 * | a 200 whose body is not JSON                                   | temporary | a proxy hiccup; the retry re-checks    |
 * | 400 `validation_error` (and every other 4xx not listed)        | permanent | our request is wrong                   |
 * | 401 `unauthorized`                                             | permanent | check the integration token            |
 * | 403 `restricted_resource`                                      | permanent | share the database with the integration|
 * | 404 `object_not_found` (database)                              | permanent | database missing or not shared         |
 * | Free-workspace block cap (any status, message or               | permanent | upgrade the plan; Notion does not retry|
 * | `additional_data` mentioning the block limit)                  |           | it either                              |
 *
 * **Structured sections.** The data source's schema is read once per
 * publisher: a `Summary` rich-text property gets the summary and a `Tags`
 * multi-select the tags when the database has them (any other type or no
 * such column: left out, never a failure); action items are to-do blocks
 * after the text on every page.
 *
 * The token is never logged and never part of an error: the client's logger
 * is silenced and any echo of the token in a message is masked.
 *
 * **Rate budget.** Every HTTP request — each page of a paginated listing
 * included — first takes one token from a `RequestBudget` (default 3
 * requests per second). When a `RequestBudget` is in the context (the
 * server on PostgreSQL provides the shared one), all nodes using the same
 * integration token take from one budget, as Notion counts them; otherwise
 * the layer keeps an in-process budget of its own. An answer carrying
 * `Retry-After` (a 429, a 529, a 503 …) holds the whole budget off until
 * then — on every node — on top of the retry policy's own wait.
 *
 * @since 0.1.0
 */
import {
  APIErrorCode,
  type BlockObjectRequest,
  Client,
  ClientErrorCode,
  isHTTPResponseError,
  isNotionClientError
} from "@notionhq/client"
import { Chunk, Context, Duration, Effect, Layer, Option, Redacted, type Scope, Stream } from "effect"
import { createHash } from "node:crypto"
import { fromHttpStatus, fromTransportError, parseRetryAfter, PermanentError, TemporaryError } from "./Errors.js"
import type { Destination } from "./Destination.js"
import { batches, limits, pageBody, requestBudget, splitText } from "./internal/notionBlocks.js"
import * as RequestBudget from "./RequestBudget.js"

/**
 * What goes on the page, plus the page id this sync already stored (if any),
 * which is the first place the publisher looks before creating a page.
 * @since 0.1.0
 * @category models
 */
export interface NotionPageInput {
  readonly syncId: string
  readonly entryId: string
  readonly title: string
  /** The cleaned text: the page body. */
  readonly text: string
  /** The raw transcript: inside a toggle block. */
  readonly transcript: string
  readonly createdAt: Date
  readonly summary?: string | null | undefined
  readonly tags?: ReadonlyArray<string> | undefined
  /** To-do blocks after the text. */
  readonly actionItems?: ReadonlyArray<string> | undefined
  /** The page id already stored for this sync, if any. */
  readonly existingPageId: string | null
}

/**
 * The port the pipeline's Notion stage uses. `recordPageId` is called with
 * the page id as soon as the page exists (before its body is complete), so
 * the caller can persist it; a failure there fails the publish, and the next
 * attempt finds the page again by its entry id.
 * @since 0.1.0
 * @category tags
 */
export class NotionPublisher extends Context.Tag("@voice-journal/core/NotionPublisher")<NotionPublisher, {
  readonly publish: (
    input: NotionPageInput,
    recordPageId: (pageId: string) => Effect.Effect<void, TemporaryError | PermanentError>
  ) => Effect.Effect<{ readonly pageId: string }, TemporaryError | PermanentError>
  /** Reads the database (and its schema): the token works and the database is shared with it. */
  readonly check: Effect.Effect<void, TemporaryError | PermanentError>
}>() {}

/**
 * The publisher as a `Destination`: the external reference is the page id.
 * @since 0.2.0
 * @category constructors
 */
export const toDestination = (publisher: typeof NotionPublisher.Service): Destination => ({
  deliver: (document, previous) =>
    publisher.publish(
      {
        syncId: document.deliveryId,
        entryId: document.entryId,
        title: document.title,
        text: document.text,
        transcript: document.transcript,
        createdAt: document.createdAt,
        summary: document.summary,
        tags: document.tags,
        actionItems: document.actionItems,
        existingPageId: previous.externalRef
      },
      previous.record
    ).pipe(Effect.map(({ pageId }) => ({ externalRef: pageId }))),
  test: publisher.check
})

/**
 * Where and how to publish. Property names must match the database's
 * columns: a title property, a date property and a rich_text property for
 * the entry id (used to find pages again after a crash).
 * @since 0.1.0
 * @category models
 */
export interface NotionConfig {
  /** The integration token. Never logged nor put into errors. */
  readonly token: Redacted.Redacted<string>
  readonly databaseId: string
  /** The database's data source to write to; default: its first one. */
  readonly dataSourceId?: string | undefined
  /** Default `https://api.notion.com`; point it at a proxy or a test server. */
  readonly baseUrl?: string | undefined
  /** Default "Name". */
  readonly titleProperty?: string | undefined
  /** Default "Date". */
  readonly dateProperty?: string | undefined
  /** A rich_text property holding the voice-journal entry id. Default "Entry ID". */
  readonly entryIdProperty?: string | undefined
  /** Filled with the summary when the database has it as rich text. Default "Summary". */
  readonly summaryProperty?: string | undefined
  /** Filled with the tags when the database has it as a multi-select. Default "Tags". */
  readonly tagsProperty?: string | undefined
  /** Average requests per second, for every call through one layer (or every node, with a shared `RequestBudget`). Default 3. */
  readonly requestsPerSecond?: number | undefined
  /** Per HTTP request (the wait for the rate budget not included). Default 60 seconds. */
  readonly timeout?: Duration.DurationInput | undefined
}

type Failure = TemporaryError | PermanentError

/** What a call was for: decides the hint a 404 gets. */
type Operation = "database" | "page" | "blocks"

/**
 * The budget a Notion integration's requests take from. Notion limits each
 * integration (token), so the name is derived from the token — a digest,
 * never the token itself: nodes with the same token share it, others don't.
 * @since 0.1.0
 */
export const budgetFor = (config: Pick<NotionConfig, "token" | "requestsPerSecond">): RequestBudget.Limit => ({
  name: `notion:${createHash("sha256").update(Redacted.value(config.token)).digest("hex").slice(0, 16)}`,
  perSecond: config.requestsPerSecond ?? 3
})

/**
 * Builds the publisher. It takes from the `RequestBudget` in the context if
 * there is one (the shared budget on PostgreSQL), else from a budget of its
 * own for this publisher.
 * @since 0.1.0
 * @category constructors
 */
export const make = (config: NotionConfig): Effect.Effect<typeof NotionPublisher.Service, never, Scope.Scope> =>
  Effect.gen(function*() {
    const provided = yield* Effect.serviceOption(RequestBudget.RequestBudget)
    const budget = Option.isSome(provided) ? provided.value : yield* RequestBudget.makeInProcess
    const limit = budgetFor(config)
    const titleProperty = config.titleProperty ?? "Name"
    const dateProperty = config.dateProperty ?? "Date"
    const entryIdProperty = config.entryIdProperty ?? "Entry ID"
    const summaryProperty = config.summaryProperty ?? "Summary"
    const tagsProperty = config.tagsProperty ?? "Tags"
    const timeout = Duration.decode(config.timeout ?? "60 seconds")
    const token = Redacted.value(config.token)
    let dataSourceId = config.dataSourceId

    /**
     * One HTTP request: takes a token from the budget, times out on Effect's
     * clock, aborts the request when interrupted, and is classified; an
     * answer's `Retry-After` holds the budget off for everyone. A client per
     * request because that is how its `fetch` gets this request's abort
     * signal; constructing one is cheap (no connection state of its own).
     */
    const call = <A>(what: string, operation: Operation, f: (client: Client) => Promise<A>): Effect.Effect<A, Failure> =>
      budget.take(limit).pipe(Effect.zipRight(
        Effect.tryPromise({
          try: (signal) =>
            f(
              new Client({
                auth: token,
                ...(config.baseUrl !== undefined ? { baseUrl: config.baseUrl } : {}),
                // our timeout below is the one that counts; the client's is a backstop
                timeoutMs: Duration.toMillis(timeout) + 1_000,
                retry: false,
                logger: () => {},
                fetch: (url, init) => fetch(url, { ...init, signal })
              })
            ),
          catch: (error) => classify(what, operation, error, token)
        }).pipe(
          Effect.timeoutFail({
            duration: timeout,
            onTimeout: () => new TemporaryError({ service: "notion", message: `Notion ${what}: no answer within ${Duration.format(timeout)}` })
          }),
          Effect.tapError((error) =>
            error._tag === "TemporaryError" && error.status !== undefined && error.retryAfterMillis !== undefined
              ? budget.holdOff(limit, error.retryAfterMillis).pipe(
                // the failure itself still goes to the retry policy, which waits the Retry-After too
                Effect.catchAll((e) => Effect.logWarning("Notion: could not hold the request budget off for Retry-After", e))
              )
              : Effect.void
          )
        )
      ))

    const resolveDataSource = Effect.suspend(() =>
      dataSourceId !== undefined
        ? Effect.succeed(dataSourceId)
        : call("retrieving the database", "database", (c) => c.databases.retrieve({ database_id: config.databaseId })).pipe(
          Effect.flatMap((db) => {
            const first = "data_sources" in db ? db.data_sources[0]?.id : undefined
            return first === undefined
              ? Effect.fail(new PermanentError({ service: "notion", message: `Notion database ${config.databaseId} has no data source` }))
              : Effect.sync(() => (dataSourceId = first))
          })
        )
    )

    /** The data source's property types by name, read once (the first call that succeeds is kept). */
    let schema: Record<string, string> | undefined
    const resolveSchema = Effect.suspend(() =>
      schema !== undefined ? Effect.succeed(schema) : resolveDataSource.pipe(
        Effect.flatMap((source) => call("reading the database schema", "database", (c) => c.dataSources.retrieve({ data_source_id: source }))),
        Effect.map((ds) => {
          const properties = "properties" in ds ? ds.properties as Record<string, { readonly type: string }> : {}
          return (schema = Object.fromEntries(Object.entries(properties).map(([name, p]) => [name, p.type])))
        })
      )
    )

    /** The stored page if it still exists (not trashed), else the page carrying this entry id, if any. */
    const findPage = (input: NotionPageInput) =>
      Effect.gen(function*() {
        if (input.existingPageId !== null) {
          const stored = yield* call("retrieving the page", "page", (c) => c.pages.retrieve({ page_id: input.existingPageId! })).pipe(
            Effect.map((p) => ("in_trash" in p && p.in_trash) || ("archived" in p && p.archived) ? undefined : p.id),
            Effect.catchIf((e) => e.status === 404, () => Effect.succeed(undefined))
          )
          if (stored !== undefined) return stored
        }
        const source = yield* resolveDataSource
        const found = yield* call("finding the page by entry id", "database", (c) =>
          c.dataSources.query({
            data_source_id: source,
            filter: { property: entryIdProperty, rich_text: { equals: input.entryId } },
            page_size: 1
          }))
        return found.results[0]?.id
      })

    /** Every child of a block, one rate-limited request per page of results. */
    const listChildren = (blockId: string) =>
      Stream.paginateChunkEffect(undefined as string | undefined, (cursor) =>
        call("listing blocks", "blocks", (c) =>
          c.blocks.children.list({ block_id: blockId, page_size: 100, ...(cursor !== undefined ? { start_cursor: cursor } : {}) })).pipe(
            Effect.map((r) =>
              [
                Chunk.fromIterable(r.results),
                r.has_more && r.next_cursor !== null ? Option.some<string | undefined>(r.next_cursor) : Option.none()
              ] as const
            )
          )).pipe(Stream.runCollect, Effect.map(Chunk.toReadonlyArray))

    const append = (blockId: string, blocks: ReadonlyArray<BlockObjectRequest>) =>
      call("appending blocks", "blocks", (c) => c.blocks.children.append({ block_id: blockId, children: blocks as Array<BlockObjectRequest> }))

    /**
     * Appends what is missing, given what the page already has: `top`
     * top-level blocks, and (once the toggle exists) `toggleChildren` of the
     * transcript's paragraphs. `toggleId` may be unknown (it is then looked up).
     */
    const complete = (
      pageId: string,
      input: NotionPageInput,
      have: { readonly top: number; readonly toggleId: string | undefined; readonly toggleChildren: number }
    ) =>
      Effect.gen(function*() {
        const body = pageBody(input)
        let { toggleChildren, toggleId } = have
        const toggleIndex = body.text.length
        for (const batch of batches(body.top.slice(have.top))) {
          const added = yield* append(pageId, batch)
          if (batch.includes(body.top[toggleIndex]!)) {
            toggleId = [...added.results].reverse().find((b) => "type" in b && b.type === "toggle")?.id
            toggleChildren = body.toggleInitial
          }
        }
        if (toggleChildren >= body.transcript.length) return
        if (toggleId === undefined) {
          const top = yield* listChildren(pageId)
          const block = top[toggleIndex]
          if (block === undefined || !("type" in block) || block.type !== "toggle") return // not our layout: leave the page alone
          toggleId = block.id
        }
        for (const batch of batches(body.transcript.slice(toggleChildren))) yield* append(toggleId, batch)
      })

    /** Finishes a page an earlier attempt made: counts what exists, appends the rest. */
    const finish = (pageId: string, input: NotionPageInput) =>
      Effect.gen(function*() {
        const body = pageBody(input)
        const top = yield* listChildren(pageId)
        const toggle = top.length > body.text.length ? top[body.text.length] : undefined
        if (toggle === undefined) return yield* complete(pageId, input, { top: top.length, toggleId: undefined, toggleChildren: 0 })
        if (!("type" in toggle) || toggle.type !== "toggle") return // not our layout (edited by hand?): leave it alone
        const inToggle = "has_children" in toggle && toggle.has_children && body.transcript.length > 0 ? (yield* listChildren(toggle.id)).length : 0
        yield* complete(pageId, input, { top: top.length, toggleId: toggle.id, toggleChildren: inToggle })
      })

    const create = (input: NotionPageInput) =>
      Effect.gen(function*() {
        const source = yield* resolveDataSource
        const types = yield* resolveSchema
        const body = pageBody(input)
        const tags = [...new Set((input.tags ?? []).map((t) => t.replace(/,/g, " ").trim().slice(0, 100)).filter((t) => t !== ""))]
        const properties = {
          [titleProperty]: { title: [{ type: "text" as const, text: { content: truncate(input.title, limits.richTextChars) } }] },
          [dateProperty]: { date: { start: input.createdAt.toISOString() } },
          [entryIdProperty]: { rich_text: [{ type: "text" as const, text: { content: input.entryId } }] },
          // only columns the database has, with the type we write: a missing or other-typed column is left alone
          ...(types[summaryProperty] === "rich_text" && input.summary != null && input.summary !== ""
            ? { [summaryProperty]: { rich_text: splitText(input.summary).slice(0, 100).map((content) => ({ type: "text" as const, text: { content } })) } }
            : {}),
          ...(types[tagsProperty] === "multi_select" && tags.length > 0
            ? { [tagsProperty]: { multi_select: tags.slice(0, 100).map((name) => ({ name })) } }
            : {})
        }
        // the first request carries what fits beside the properties; the rest is appended
        const first = batches(body.top, { ...requestBudget, bytes: requestBudget.bytes - Buffer.byteLength(JSON.stringify(properties)) })[0] ?? []
        const page = yield* call("creating the page", "database", (c) =>
          c.pages.create({
            parent: { type: "data_source_id", data_source_id: source },
            properties,
            children: first as Array<BlockObjectRequest>
          }))
        return { pageId: page.id, top: first.length, toggleChildren: first.length === body.top.length ? body.toggleInitial : 0 }
      })

    const publish = (
      input: NotionPageInput,
      recordPageId: (pageId: string) => Effect.Effect<void, Failure>
    ) =>
      Effect.gen(function*() {
        const existing = yield* findPage(input)
        if (existing !== undefined) {
          if (existing !== input.existingPageId) yield* recordPageId(existing)
          yield* finish(existing, input)
          return { pageId: existing }
        }
        const made = yield* create(input)
        // recorded before anything else, so a crash from here on never makes a second page
        yield* recordPageId(made.pageId)
        yield* complete(made.pageId, input, { top: made.top, toggleId: undefined, toggleChildren: made.toggleChildren })
        return { pageId: made.pageId }
      })

    const check = resolveSchema.pipe(Effect.asVoid)

    return NotionPublisher.of({ publish, check })
  })

/** Cuts a string to `max` UTF-16 units without splitting a surrogate pair. */
const truncate = (s: string, max: number) => {
  if (s.length <= max) return s
  const code = s.charCodeAt(max - 1)
  return s.slice(0, code >= 0xd800 && code <= 0xdbff ? max - 1 : max)
}

const blockLimitPattern = /block[\s_-]?limit/i

/**
 * Maps anything the client throws to a typed failure (the table in the
 * module doc). The token is masked wherever a message could echo it.
 */
const classify = (what: string, operation: Operation, error: unknown, token: string): Failure => {
  const mask = (s: string) => (token === "" ? s : s.split(token).join("[redacted]"))
  if (isHTTPResponseError(error)) {
    const retryAfterMillis = parseRetryAfter(headerOf(error.headers, "retry-after"))
    const base = `Notion ${what}: ${error.status} ${error.code}: ${mask(error.message)}`
    const details = `${error.code} ${error.message} ${JSON.stringify(error.additional_data ?? {})}`
    // Notion stops block-creating writes once a Free workspace passes its lifetime
    // block cap; retrying cannot help, whatever status it arrives with
    if (blockLimitPattern.test(details)) {
      return new PermanentError({
        service: "notion",
        status: error.status,
        message: `${base} (the Notion workspace reached the Free plan's block limit: upgrade the workspace or use one where the integration may create blocks)`
      })
    }
    const hint = error.code === APIErrorCode.Unauthorized
      ? " (check the integration token, e.g. NOTION_TOKEN)"
      : error.code === APIErrorCode.RestrictedResource
      ? " (share the database with the integration and give it the insert-content capability)"
      : error.code === APIErrorCode.ObjectNotFound && operation === "database"
      ? " (does the database exist, and is it shared with the integration?)"
      : ""
    return fromHttpStatus("notion", error.status, base + hint, { retryAfterMillis })
  }
  if (isNotionClientError(error)) {
    return error.code === ClientErrorCode.InvalidPathParameter
      ? new PermanentError({ service: "notion", message: `Notion ${what}: ${mask(error.message)} (check the configured database id)` })
      : new TemporaryError({ service: "notion", message: `Notion ${what}: ${mask(error.message)}` })
  }
  const transport = fromTransportError("notion", error)
  return new TemporaryError({ service: "notion", message: `Notion ${what}: ${mask(transport.message)}`, cause: transport.cause })
}

/** Reads a response header whether the fetch in use gave a `Headers` or a plain record. */
const headerOf = (headers: unknown, name: string): string | undefined => {
  if (headers === null || typeof headers !== "object") return undefined
  if (typeof (headers as Headers).get === "function") return (headers as Headers).get(name) ?? undefined
  const hit = Object.entries(headers as Record<string, unknown>).find(([k]) => k.toLowerCase() === name)
  return typeof hit?.[1] === "string" ? hit[1] : undefined
}

/**
 * The Notion publisher (its own request budget per layer instance, unless a
 * `RequestBudget` is provided).
 * @since 0.1.0
 * @category layers
 */
export const layer = (config: NotionConfig): Layer.Layer<NotionPublisher> => Layer.scoped(NotionPublisher, make(config))
