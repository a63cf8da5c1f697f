/**
 * A loopback server that speaks the Notion REST API (version 2025-09-03) for
 * what voice-journal uses — databases retrieve, data source query, pages
 * create/retrieve, block children append/list — with Notion's error bodies
 * (`{"object":"error","status","code","message"}`) and its validation limits
 * (2,000 characters per text, 100 elements per array, two nesting levels,
 * 1,000 block elements and 500 KB per request), so tests prove the splitting
 * instead of trusting it. Pages and blocks live in memory; it answers at once
 * (no artificial latency, so benchmarks can use it too). Driven through the
 * official `@notionhq/client`.
 *
 * Usage: `const notion = yield* FakeNotion.make()` inside a scope (the server
 * closes with it), then point the publisher at `notion.url` with
 * `notion.token` and `notion.databaseId`. It checks the bearer token (401),
 * the `Notion-Version` header (400) and the database / data source id (404).
 * Property names are the publisher's defaults ("Name", "Date", "Entry ID");
 * `make({ properties })` gives the data source other columns (e.g.
 * `{ Summary: "rich_text", Tags: "multi_select" }`), which data source
 * retrieve reports and page creation accepts — a property the schema does
 * not have is a 400 `validation_error`, as Notion answers it.
 *
 * Scripting failures: `failNext(fault, times?, only?)` answers the next
 * `times` requests (only those starting with `only`, e.g. "PATCH /v1/blocks/")
 * with `fault` — a status with headers/body, a reset ("refuse"), no answer
 * ("hang") or a malformed 200. `applyThenHang(only)` performs the next
 * matching request but never answers it (the client sees a timeout after the
 * effect happened). `down()`/`up()` refuse connections for a while.
 * `trash(pageId)` moves a page to the trash as a person would.
 */
import { Effect, type Scope } from "effect"
import type * as http from "node:http"
import { type Fault, FaultQueue, readBody } from "./Faults.js"
import * as LoopbackServer from "./LoopbackServer.js"

interface Block {
  readonly id: string
  readonly type: string
  readonly text: string
  readonly children: Array<string>
}

export interface StoredPage {
  readonly id: string
  readonly title: string
  readonly entryId: string
  readonly date: string | null
  /** Further properties: rich text as its text, multi-selects as their option names. */
  readonly properties: Readonly<Record<string, string | ReadonlyArray<string>>>
  /** Top-level blocks with their text; toggles list their children's text. */
  readonly blocks: ReadonlyArray<{ readonly type: string; readonly text: string; readonly children: ReadonlyArray<string> }>
}

export interface NotionRequestRecord {
  readonly method: string
  readonly path: string
  /** Size of the request body in bytes. */
  readonly bytes: number
  /** Arrival time (ms since epoch). */
  readonly at: number
}

export interface FakeNotion {
  readonly url: string
  readonly token: string
  readonly databaseId: string
  readonly pages: () => ReadonlyArray<StoredPage>
  readonly requests: ReadonlyArray<NotionRequestRecord>
  /** The next `times` requests (optionally only `METHOD /path-prefix`) get `fault`. */
  readonly failNext: (fault: Fault, times?: number, only?: string) => void
  /** The next request starting with `only` (e.g. "POST /v1/pages") takes effect, but its answer never comes. */
  readonly applyThenHang: (only: string) => void
  readonly down: () => Promise<void>
  readonly up: () => Promise<void>
  /** Moves a page to the trash: retrieve says `in_trash`, queries no longer find it. */
  readonly trash: (pageId: string) => void
  /**
   * Enforces Notion's rate limit from now on, as Notion describes it: an
   * average of `perSecond` requests per second with bursts up to `burst`
   * (a token bucket, full at the start). A request over it gets 429
   * `rate_limited` with `Retry-After` in whole seconds, as Notion sends it.
   */
  readonly limitRate: (options: { readonly perSecond: number; readonly burst: number }) => void
  /** How many requests `limitRate` answered with 429. */
  readonly rateLimited: () => number
}

const uuid = () => globalThis.crypto.randomUUID()

class Invalid extends Error {}

export const make = (
  options: { readonly token?: string; readonly properties?: Readonly<Record<string, string>> } = {}
): Effect.Effect<FakeNotion, never, Scope.Scope> =>
  Effect.gen(function*() {
    const token = options.token ?? "secret_test_notion_token"
    const databaseId = uuid()
    const dataSourceId = uuid()
    const faults = new FaultQueue()
    const swallowAnswer: Array<string> = []
    const requests: Array<NotionRequestRecord> = []
    const blocks = new Map<string, Block>()
    const pages = new Map<string, { id: string; title: string; entryId: string; date: string | null; properties: Record<string, string | ReadonlyArray<string>> }>()
    const schema: Record<string, string> = { Name: "title", Date: "date", "Entry ID": "rich_text", ...options.properties }
    const trashed = new Set<string>()

    const send = (res: http.ServerResponse, status: number, body: unknown) =>
      res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body))
    const error = (res: http.ServerResponse, status: number, code: string, message: string) =>
      send(res, status, { object: "error", status, code, message, request_id: uuid() })

    const textOf = (richText: unknown): string => {
      if (!Array.isArray(richText)) throw new Invalid("rich_text should be an array")
      if (richText.length > 100) throw new Invalid("rich_text.length should be ≤ 100")
      return richText.map((r: { text?: { content?: string } }) => {
        const content = r.text?.content ?? ""
        if (content.length > 2000) throw new Invalid(`body.children.rich_text.text.content.length should be ≤ \`2000\`, instead was \`${content.length}\`.`)
        return content
      }).join("")
    }

    const addChildren = (parent: Block, children: unknown, depth: number) => {
      if (!Array.isArray(children)) throw new Invalid("children should be an array")
      if (children.length > 100) throw new Invalid(`body.children.length should be ≤ \`100\`, instead was \`${children.length}\`.`)
      if (depth > 2) throw new Invalid("Too many levels of nesting: at most two levels are allowed")
      // validate everything before storing anything: a request is all or nothing
      const made: Array<[Block, unknown]> = children.map((c: Record<string, { rich_text?: unknown; children?: unknown }> & { type: string }) => {
        const body = c[c.type]
        return [{ id: uuid(), type: c.type, text: textOf(body?.rich_text ?? []), children: [] }, body?.children]
      })
      for (const [, nested] of made) if (nested !== undefined) validateOnly(nested, depth + 1)
      for (const [block, nested] of made) {
        blocks.set(block.id, block)
        parent.children.push(block.id)
        if (nested !== undefined) addChildren(block, nested, depth + 1)
      }
      return made.map(([b]) => b)
    }
    const validateOnly = (children: unknown, depth: number) => {
      if (!Array.isArray(children)) throw new Invalid("children should be an array")
      if (children.length > 100) throw new Invalid(`body.children.length should be ≤ \`100\`, instead was \`${children.length}\`.`)
      if (depth > 2) throw new Invalid("Too many levels of nesting: at most two levels are allowed")
      for (const c of children as Array<Record<string, { rich_text?: unknown; children?: unknown }> & { type: string }>) {
        textOf(c[c.type]?.rich_text ?? [])
        if (c[c.type]?.children !== undefined) validateOnly(c[c.type]!.children, depth + 1)
      }
    }

    /** At most 1,000 block elements per request, nested ones included. */
    const checkElements = (children: unknown) => {
      const count = (cs: unknown): number =>
        Array.isArray(cs) ? cs.reduce((n: number, c: Record<string, { children?: unknown }> & { type: string }) => n + 1 + count(c[c.type]?.children), 0) : 0
      const n = count(children)
      if (n > 1000) throw new Invalid(`The request contains ${n} block elements; the limit is 1000.`)
    }

    const blockJson = (b: Block) => ({
      object: "block",
      id: b.id,
      type: b.type,
      has_children: b.children.length > 0,
      in_trash: false,
      archived: false,
      [b.type]: { rich_text: [{ type: "text", text: { content: b.text, link: null }, plain_text: b.text, annotations: {}, href: null }] }
    })
    const pageJson = (id: string) => {
      const p = pages.get(id)!
      return {
        object: "page",
        id,
        in_trash: trashed.has(id),
        archived: trashed.has(id),
        url: `https://www.notion.so/${id.replace(/-/g, "")}`,
        parent: { type: "data_source_id", data_source_id: dataSourceId, database_id: databaseId },
        properties: {
          Name: { id: "title", type: "title", title: [{ type: "text", text: { content: p.title }, plain_text: p.title }] },
          "Entry ID": { id: "e", type: "rich_text", rich_text: [{ type: "text", text: { content: p.entryId }, plain_text: p.entryId }] }
        }
      }
    }

    const rate = new RateLimit()

    const server = yield* LoopbackServer.make(async (req, res) => {
      const raw = await readBody(req)
      const url = new URL(req.url ?? "/", "http://fake")
      requests.push({ method: req.method ?? "", path: url.pathname, bytes: raw.length, at: Date.now() })
      if (faults.apply(req, res)) return
      if (rate.reject(res)) return
      const swallow = swallowAnswer.findIndex((prefix) => `${req.method} ${url.pathname}`.startsWith(prefix))
      if (swallow >= 0) {
        swallowAnswer.splice(swallow, 1)
        faults.hanging.add(res)
        res.writeHead = (() => res) as never
        res.end = (() => res) as never
      }
      if (req.headers.authorization !== `Bearer ${token}`) return error(res, 401, "unauthorized", "API token is invalid.")
      if (req.headers["notion-version"] === undefined) return error(res, 400, "missing_version", "Notion-Version header failed validation")
      if (raw.length > 500_000) return error(res, 400, "validation_error", `Request body too large: ${raw.length} bytes, the limit is 500KB.`)
      const body = raw.length > 0 ? JSON.parse(raw.toString("utf8")) : {}
      const parts = url.pathname.split("/").filter(Boolean) // ["v1", resource, id, sub]
      try {
        if (req.method === "GET" && parts[1] === "databases") {
          if (parts[2] !== databaseId) return error(res, 404, "object_not_found", `Could not find database with ID: ${parts[2]}. Make sure the relevant pages and databases are shared with your integration.`)
          return send(res, 200, { object: "database", id: databaseId, title: [], data_sources: [{ id: dataSourceId, name: "Journal" }] })
        }
        if (req.method === "GET" && parts[1] === "data_sources" && parts.length === 3) {
          if (parts[2] !== dataSourceId) return error(res, 404, "object_not_found", "Could not find data source")
          const properties = Object.fromEntries(Object.entries(schema).map(([name, type]) => [name, { id: name, name, type, [type]: {} }]))
          return send(res, 200, { object: "data_source", id: dataSourceId, title: [], properties })
        }
        if (req.method === "POST" && parts[1] === "data_sources" && parts[3] === "query") {
          if (parts[2] !== dataSourceId) return error(res, 404, "object_not_found", "Could not find data source")
          const wanted = body.filter?.rich_text?.equals
          const results = [...pages.values()].filter((p) => !trashed.has(p.id) && (wanted === undefined || p.entryId === wanted)).map((p) => pageJson(p.id))
          return send(res, 200, { object: "list", results, has_more: false, next_cursor: null, type: "page_or_data_source", page_or_data_source: {} })
        }
        if (req.method === "POST" && parts[1] === "pages") {
          if (body.parent?.data_source_id !== dataSourceId && body.parent?.database_id !== databaseId) {
            return error(res, 404, "object_not_found", "Could not find data source")
          }
          const title = textOf(body.properties?.Name?.title ?? [])
          const entryId = textOf(body.properties?.["Entry ID"]?.rich_text ?? [])
          const extra: Record<string, string | ReadonlyArray<string>> = {}
          for (const [name, value] of Object.entries((body.properties ?? {}) as Record<string, Record<string, unknown>>)) {
            const type = schema[name]
            if (type === undefined) return error(res, 400, "validation_error", `${name} is not a property that exists.`)
            if (!(type in value)) return error(res, 400, "validation_error", `${name} is expected to be ${type}.`)
            if (type === "rich_text" && name !== "Entry ID") extra[name] = textOf(value.rich_text)
            if (type === "multi_select") extra[name] = (value.multi_select as Array<{ name: string }>).map((o) => o.name)
          }
          validateOnly(body.children ?? [], 1)
          checkElements(body.children ?? [])
          const page: Block = { id: uuid(), type: "page", text: title, children: [] }
          blocks.set(page.id, page)
          addChildren(page, body.children ?? [], 1)
          pages.set(page.id, { id: page.id, title, entryId, date: body.properties?.Date?.date?.start ?? null, properties: extra })
          return send(res, 200, pageJson(page.id))
        }
        if (req.method === "GET" && parts[1] === "pages") {
          if (!pages.has(parts[2]!)) return error(res, 404, "object_not_found", `Could not find page with ID: ${parts[2]}.`)
          return send(res, 200, pageJson(parts[2]!))
        }
        if (parts[1] === "blocks" && parts[3] === "children") {
          const parent = blocks.get(parts[2]!)
          if (parent === undefined) return error(res, 404, "object_not_found", `Could not find block with ID: ${parts[2]}.`)
          if (req.method === "PATCH") {
            const depth = parent.type === "page" ? 1 : 2
            validateOnly(body.children, depth)
            checkElements(body.children)
            const added = addChildren(parent, body.children, depth)
            return send(res, 200, { object: "list", results: added.map(blockJson), has_more: false, next_cursor: null })
          }
          if (req.method === "GET") {
            const size = Math.min(100, Number(url.searchParams.get("page_size") ?? 100))
            const start = Number(url.searchParams.get("start_cursor") ?? 0)
            const slice = parent.children.slice(start, start + size)
            const next = start + size < parent.children.length ? String(start + size) : null
            return send(res, 200, { object: "list", results: slice.map((id) => blockJson(blocks.get(id)!)), has_more: next !== null, next_cursor: next, type: "block", block: {} })
          }
        }
        return error(res, 400, "invalid_request_url", "Invalid request URL.")
      } catch (e) {
        if (e instanceof Invalid) return error(res, 400, "validation_error", e.message)
        throw e
      }
    }, () => faults.destroyHanging())

    return {
      url: server.url,
      token,
      databaseId,
      requests,
      pages: () =>
        [...pages.values()].map((p) => ({
          ...p,
          blocks: blocks.get(p.id)!.children.map((id) => {
            const b = blocks.get(id)!
            return { type: b.type, text: b.text, children: b.children.map((c) => blocks.get(c)!.text) }
          })
        })),
      failNext: (fault, times, only) =>
        faults.failNext(fault, times, only === undefined ? undefined : (req) => `${req.method} ${req.url ?? ""}`.startsWith(only)),
      applyThenHang: (only) => void swallowAnswer.push(only),
      trash: (pageId) => void trashed.add(pageId),
      down: server.down,
      up: server.up,
      limitRate: (options) => rate.set(options),
      rateLimited: () => rate.rejected
    }
  })

/** The token bucket behind `limitRate` (off until set). */
class RateLimit {
  private options: { readonly perSecond: number; readonly burst: number } | undefined
  private tokens = 0
  private at = 0
  rejected = 0

  set(options: { readonly perSecond: number; readonly burst: number }) {
    this.options = options
    this.tokens = options.burst
    this.at = performance.now()
  }

  /** Takes a token, or answers 429 and returns true when there is none. */
  reject(res: http.ServerResponse): boolean {
    if (this.options === undefined) return false
    const now = performance.now()
    this.tokens = Math.min(this.options.burst, this.tokens + ((now - this.at) / 1000) * this.options.perSecond)
    this.at = now
    if (this.tokens >= 1) {
      this.tokens -= 1
      return false
    }
    this.rejected++
    const seconds = Math.max(1, Math.ceil((1 - this.tokens) / this.options.perSecond))
    res.writeHead(429, { "content-type": "application/json", "retry-after": String(seconds) }).end(JSON.stringify({
      object: "error",
      status: 429,
      code: "rate_limited",
      message: "You have been rate limited. Please try again in a few minutes.",
      request_id: globalThis.crypto.randomUUID()
    }))
    return true
  }
}
