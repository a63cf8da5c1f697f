import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Option, Redacted, TestClock } from "effect"
import { PermanentError, TemporaryError } from "../src/Errors.js"
import { splitText } from "../src/internal/notionBlocks.js"
import { layer, type NotionConfig, type NotionPageInput, NotionPublisher } from "../src/NotionPublisher.js"
import * as FakeNotion from "./support/FakeNotion.js"
import type { Fault } from "./support/Faults.js"

const input = (overrides: Partial<NotionPageInput> = {}): NotionPageInput => ({
  syncId: "sync-1",
  entryId: globalThis.crypto.randomUUID(),
  title: "Market day",
  text: "Today I went to the market.\n\nThe weather was nice.",
  transcript: "today i went to the market the weather was nice",
  createdAt: new Date("2026-11-24T08:00:00Z"),
  existingPageId: null,
  ...overrides
})

const configFor = (notion: FakeNotion.FakeNotion, overrides: Partial<NotionConfig> = {}): NotionConfig => ({
  token: Redacted.make(notion.token),
  databaseId: notion.databaseId,
  baseUrl: notion.url,
  requestsPerSecond: 1000,
  ...overrides
})

type Record = (id: string) => Effect.Effect<void, TemporaryError | PermanentError>

const publish = (notion: FakeNotion.FakeNotion, page: NotionPageInput, record: Record = () => Effect.void, overrides: Partial<NotionConfig> = {}) =>
  Effect.flatMap(NotionPublisher, (p) => p.publish(page, record)).pipe(Effect.provide(layer(configFor(notion, overrides))))

/** The paragraphs a text should end up as: split at blank lines, ends trimmed. */
const paragraphsOf = (text: string) => text.split(/\n\s*\n/).map((p) => p.trim()).filter((p) => p !== "")

/** No lone surrogate: a cut never split a character. */
const wellFormed = (s: string) => !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s)

const topText = (page: FakeNotion.StoredPage) => page.blocks.filter((b) => b.type === "paragraph").map((b) => b.text)
const toggleOf = (page: FakeNotion.StoredPage) => page.blocks.filter((b) => b.type === "toggle")

/** Waits (real time, bounded) until the fake has seen `n` requests; the clock under test stays where it is. */
const untilRequests = (notion: FakeNotion.FakeNotion, n: number) =>
  Effect.promise(async () => {
    for (let i = 0; i < 500 && notion.requests.length < n; i++) await new Promise((r) => setTimeout(r, 10))
  })
/** Gives in-flight work a moment of real time, so that anything that could go out does. */
const settle = Effect.promise(() => new Promise((r) => setTimeout(r, 100)))

describe("NotionPublisher (official client against a loopback Notion)", () => {
  it.scopedLive("creates one page with title, date, entry id, the text and the transcript toggle", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      const recorded: Array<string> = []
      const page = input()
      const { pageId } = yield* publish(notion, page, (id) => Effect.sync(() => recorded.push(id)))
      const [stored] = notion.pages()
      expect(notion.pages().length).toBe(1)
      expect(stored!.id).toBe(pageId)
      expect(recorded).toEqual([pageId])
      expect(stored!.title).toBe("Market day")
      expect(stored!.entryId).toBe(page.entryId)
      expect(stored!.date).toBe("2026-11-24T08:00:00.000Z")
      expect(stored!.blocks.map((b) => b.type)).toEqual(["paragraph", "paragraph", "toggle"])
      expect(stored!.blocks[2]!.text).toBe("Transcript")
      expect(stored!.blocks[2]!.children).toEqual([page.transcript])
    }))

  it.scopedLive("a long entry (250 paragraphs, some over 2,000 characters) becomes one page with all the text in order", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      const paragraphs = Array.from({ length: 250 }, (_, i) =>
        i % 25 === 0
          ? `Paragraph ${i}. ` + "long words ".repeat(500) // 5,500 characters with spaces
          : i % 25 === 1
          ? "x".repeat(4500) // no whitespace at all: a hard cut
          : i % 25 === 2
          ? "a" + "😀".repeat(1500) // a naive cut at 2,000 would split a surrogate pair
          : `Paragraph ${i}.\nwith a line break inside.`)
      const transcript = Array.from({ length: 230 }, (_, i) => `spoken part ${i} ` + "um ".repeat(i % 7 === 0 ? 800 : 3)).join("\n\n")
      const page = input({ text: paragraphs.join("\n\n"), transcript })
      yield* publish(notion, page)
      expect(notion.pages().length).toBe(1)
      const [stored] = notion.pages()
      const text = topText(stored!)
      const [toggle, ...extraToggles] = toggleOf(stored!)
      expect(extraToggles).toEqual([])
      for (const block of [...text, ...toggle!.children]) {
        expect(block.length).toBeLessThanOrEqual(2000)
        expect(wellFormed(block)).toBe(true)
      }
      // nothing lost, nothing duplicated, nothing reordered
      expect(text.join("")).toBe(paragraphsOf(page.text).join(""))
      expect(toggle!.children.join("")).toBe(paragraphsOf(transcript).join(""))
      expect(text.length).toBeGreaterThan(250)
      expect(stored!.blocks.at(-1)!.type).toBe("toggle")
      // more than 100 blocks: the rest went in appends the fake accepted (it rejects more than 100 per request)
      expect(notion.requests.filter((r) => r.method === "PATCH").length).toBeGreaterThanOrEqual(4)
    }))

  it.scopedLive("multi-byte text is batched by payload size too (100 blocks of CJK text would exceed 500 KB)", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      const paragraphs = Array.from({ length: 130 }, (_, i) => `${i}：` + "日記を書きました。".repeat(210))
      const page = input({ text: paragraphs.join("\n\n"), transcript: paragraphs.slice(0, 120).join("\n\n") })
      yield* publish(notion, page)
      const [stored] = notion.pages()
      expect(notion.pages().length).toBe(1)
      expect(topText(stored!).join("")).toBe(paragraphs.join(""))
      expect(toggleOf(stored!)[0]!.children.join("")).toBe(paragraphs.slice(0, 120).join(""))
      for (const r of notion.requests) expect(r.bytes).toBeLessThanOrEqual(500_000)
    }))

  it.scopedLive("the page id is recorded right after the create, before any append", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      const page = input({ text: Array.from({ length: 150 }, (_, i) => `para ${i}`).join("\n\n") })
      const seenAtRecord: Array<ReadonlyArray<string>> = []
      yield* publish(notion, page, () => Effect.sync(() => seenAtRecord.push(notion.requests.map((r) => r.method))))
      expect(seenAtRecord.length).toBe(1)
      expect(seenAtRecord[0]).not.toContain("PATCH")
      expect(notion.requests.some((r) => r.method === "PATCH")).toBe(true)
    }))

  it.scopedLive("a retry after recordPageId failed (crash between 'page created' and 'row updated') finds the page: no second page", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      const page = input({ text: Array.from({ length: 150 }, (_, i) => `para ${i}`).join("\n\n") })
      const crashed = yield* Effect.flip(publish(notion, page, () => Effect.fail(new TemporaryError({ service: "database", message: "process killed" }))))
      expect(crashed.message).toBe("process killed")
      expect(notion.pages().length).toBe(1)
      expect(notion.pages()[0]!.blocks.length).toBe(100) // it died before appending the rest
      const recorded: Array<string> = []
      const { pageId } = yield* publish(notion, page, (id) => Effect.sync(() => recorded.push(id)))
      expect(notion.pages().length).toBe(1)
      expect(pageId).toBe(notion.pages()[0]!.id)
      expect(recorded).toEqual([pageId])
      const done = notion.pages()[0]!
      expect(topText(done)).toEqual(Array.from({ length: 150 }, (_, i) => `para ${i}`))
      expect(toggleOf(done).map((t) => t.children)).toEqual([[page.transcript]])
    }))

  it.scopedLive("a page left half-written (an append failed) is finished, not duplicated", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      const transcript = Array.from({ length: 150 }, (_, i) => `spoken ${i}`).join("\n\n")
      const page = input({ text: Array.from({ length: 230 }, (_, i) => `para ${i}`).join("\n\n"), transcript })
      // the first append fails: the 100 paragraphs of the create exist, the rest and the toggle do not
      notion.failNext({ kind: "status", status: 503, body: { object: "error", status: 503, code: "service_unavailable", message: "down" } }, 1, "PATCH /v1/blocks/")
      const recorded: Array<string> = []
      const first = yield* Effect.flip(publish(notion, page, (id) => Effect.sync(() => recorded.push(id))))
      expect(first._tag).toBe("TemporaryError")
      expect(notion.pages()[0]!.blocks.length).toBe(100)
      const { pageId } = yield* publish(notion, { ...page, existingPageId: recorded[0]! })
      expect(pageId).toBe(recorded[0])
      expect(notion.pages().length).toBe(1)
      const done = notion.pages()[0]!
      expect(topText(done)).toEqual(Array.from({ length: 230 }, (_, i) => `para ${i}`))
      expect(toggleOf(done).map((t) => t.children)).toEqual([Array.from({ length: 150 }, (_, i) => `spoken ${i}`)])
    }))

  it.scopedLive("a half-filled transcript toggle gets only its missing children", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      const spoken = Array.from({ length: 260 }, (_, i) => `spoken ${i}`)
      const page = input({ transcript: spoken.join("\n\n") })
      // create carries the toggle with its first 100 children; the first append to the toggle fails
      notion.failNext({ kind: "status", status: 500, body: { object: "error", status: 500, code: "internal_server_error", message: "oops" } }, 1, "PATCH /v1/blocks/")
      const first = yield* Effect.flip(publish(notion, page))
      expect(first.status).toBe(500)
      expect(toggleOf(notion.pages()[0]!)[0]!.children.length).toBe(100)
      yield* publish(notion, page) // no stored id: found by entry id
      expect(notion.pages().length).toBe(1)
      const done = notion.pages()[0]!
      expect(topText(done)).toEqual(["Today I went to the market.", "The weather was nice."])
      expect(toggleOf(done).map((t) => t.children)).toEqual([spoken])
    }))

  it.scoped("an append that Notion applied but never answered (timeout) is not repeated on retry", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      const page = input({ text: Array.from({ length: 150 }, (_, i) => `para ${i}`).join("\n\n") })
      const recorded: Array<string> = []
      notion.applyThenHang("PATCH /v1/blocks/")
      const attempt = yield* Effect.fork(publish(notion, page, (id) => Effect.sync(() => recorded.push(id)), { timeout: "30 seconds" }))
      yield* untilRequests(notion, 4) // retrieve db, query, create, the append that hangs
      yield* settle
      yield* TestClock.adjust("31 seconds")
      const timedOut = yield* Effect.flip(Fiber.join(attempt))
      expect(timedOut._tag).toBe("TemporaryError")
      expect(timedOut.message).toContain("no answer within")
      expect(topText(notion.pages()[0]!).length).toBe(150) // the append did happen
      yield* publish(notion, { ...page, existingPageId: recorded[0]! }, undefined, { timeout: "30 seconds" })
      const done = notion.pages()[0]!
      expect(notion.pages().length).toBe(1)
      expect(topText(done)).toEqual(Array.from({ length: 150 }, (_, i) => `para ${i}`))
      expect(toggleOf(done).length).toBe(1)
    }))

  it.scoped("a create that Notion applied but never answered: the retry finds the page by entry id and records it", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      const page = input()
      const recorded: Array<string> = []
      const record: Record = (id) => Effect.sync(() => recorded.push(id))
      notion.applyThenHang("POST /v1/pages")
      const attempt = yield* Effect.fork(publish(notion, page, record, { timeout: "30 seconds" }))
      yield* untilRequests(notion, 3) // retrieve db, query, the create that hangs
      yield* settle
      yield* TestClock.adjust("30 seconds")
      expect((yield* Effect.flip(Fiber.join(attempt)))._tag).toBe("TemporaryError")
      expect(recorded).toEqual([]) // the page exists, but nobody knows its id
      const { pageId } = yield* publish(notion, page, record, { timeout: "30 seconds" })
      expect(notion.pages().map((p) => p.id)).toEqual([pageId])
      expect(recorded).toEqual([pageId])
      expect(notion.pages()[0]!.blocks.map((b) => b.text)).toEqual(["Today I went to the market.", "The weather was nice.", "Transcript"])
      expect(notion.requests.filter((r) => r.method === "PATCH")).toEqual([])
    }))

  it.scopedLive("an empty text and transcript give a page with an empty transcript toggle", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      yield* publish(notion, input({ text: " \n\n ", transcript: "" }))
      expect(notion.pages()[0]!.blocks).toEqual([{ type: "toggle", text: "Transcript", children: [] }])
    }))

  it.scopedLive("a configured data source id is used as is (no database lookup)", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      yield* publish(notion, input()) // learn the fake's data source id from the requests it gets
      const source = notion.requests.find((r) => r.path.startsWith("/v1/data_sources/"))!.path.split("/")[3]!
      const { pageId } = yield* publish(notion, input(), undefined, { dataSourceId: source, databaseId: "not-used" })
      expect(notion.pages().map((p) => p.id)).toContain(pageId)
      expect(notion.requests.filter((r) => r.path.startsWith("/v1/databases/")).length).toBe(1) // the first publish's only
    }))

  it.scopedLive("a stored page that was trashed counts as absent: a new page is made and recorded", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      const page = input()
      const { pageId: old } = yield* publish(notion, page)
      notion.trash(old)
      const recorded: Array<string> = []
      const { pageId } = yield* publish(notion, { ...page, existingPageId: old }, (id) => Effect.sync(() => recorded.push(id)))
      expect(pageId).not.toBe(old)
      expect(recorded).toEqual([pageId])
      expect(notion.pages().length).toBe(2)
      expect(topText(notion.pages().find((p) => p.id === pageId)!)).toEqual(["Today I went to the market.", "The weather was nice."])
    }))

  it.scopedLive("a stored page id that Notion no longer knows (404) counts as absent", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      const { pageId } = yield* publish(notion, input({ existingPageId: globalThis.crypto.randomUUID() }))
      expect(notion.pages().map((p) => p.id)).toEqual([pageId])
    }))

  const error = (status: number, code: string, message: string) => ({ object: "error", status, code, message, request_id: "r" })
  const cases: ReadonlyArray<{
    readonly label: string
    readonly fault: Fault
    readonly tag: "TemporaryError" | "PermanentError"
    readonly status: number | undefined
    readonly retryAfterMillis?: number
    readonly says?: string
  }> = [
    { label: "429 rate_limited", fault: { kind: "status", status: 429, headers: { "retry-after": "12" }, body: error(429, "rate_limited", "slow down") }, tag: "TemporaryError", status: 429, retryAfterMillis: 12_000 },
    { label: "529 service_overload", fault: { kind: "status", status: 529, headers: { "retry-after": "5" }, body: error(529, "service_overload", "overloaded") }, tag: "TemporaryError", status: 529, retryAfterMillis: 5_000 },
    { label: "409 conflict_error", fault: { kind: "status", status: 409, body: error(409, "conflict_error", "try again") }, tag: "TemporaryError", status: 409 },
    { label: "500 internal_server_error", fault: { kind: "status", status: 500, body: error(500, "internal_server_error", "oops") }, tag: "TemporaryError", status: 500 },
    { label: "502 from a proxy (HTML body)", fault: { kind: "status", status: 502, body: "<html>bad gateway</html>" }, tag: "TemporaryError", status: 502 },
    { label: "503 service_unavailable", fault: { kind: "status", status: 503, headers: { "retry-after": "30" }, body: error(503, "service_unavailable", "down") }, tag: "TemporaryError", status: 503, retryAfterMillis: 30_000 },
    { label: "504 gateway_timeout", fault: { kind: "status", status: 504, body: error(504, "gateway_timeout", "slow") }, tag: "TemporaryError", status: 504 },
    { label: "connection reset", fault: { kind: "refuse" }, tag: "TemporaryError", status: undefined },
    { label: "a 200 that is not JSON", fault: { kind: "malformed" }, tag: "TemporaryError", status: undefined },
    { label: "400 validation_error", fault: { kind: "status", status: 400, body: error(400, "validation_error", "body failed validation") }, tag: "PermanentError", status: 400, says: "validation" },
    { label: "401 unauthorized", fault: { kind: "status", status: 401, body: error(401, "unauthorized", "API token is invalid.") }, tag: "PermanentError", status: 401, says: "integration token" },
    { label: "403 restricted_resource", fault: { kind: "status", status: 403, body: error(403, "restricted_resource", "no access") }, tag: "PermanentError", status: 403, says: "share the database with the integration" },
    { label: "404 object_not_found for the database", fault: { kind: "status", status: 404, body: error(404, "object_not_found", "Could not find database") }, tag: "PermanentError", status: 404, says: "shared with the integration" },
    { label: "the Free-workspace block cap (400)", fault: { kind: "status", status: 400, body: error(400, "validation_error", "This workspace has reached its block limit.") }, tag: "PermanentError", status: 400, says: "Free plan's block limit" },
    { label: "the Free-workspace block cap (even if sent as 429)", fault: { kind: "status", status: 429, body: { ...error(429, "rate_limited", "Workspace is over its plan limit."), additional_data: { reason: "workspace_block_limit" } } }, tag: "PermanentError", status: 429, says: "Free plan's block limit" }
  ]
  for (const c of cases) {
    it.scopedLive(`${c.label} → ${c.tag}`, () =>
      Effect.gen(function*() {
        const notion = yield* FakeNotion.make()
        notion.failNext(c.fault)
        const failure = yield* Effect.flip(publish(notion, input()))
        expect(failure._tag).toBe(c.tag)
        expect(failure.service).toBe("notion")
        expect(failure.status).toBe(c.status)
        if (failure._tag === "TemporaryError") expect(failure.retryAfterMillis).toBe(c.retryAfterMillis)
        if (c.says !== undefined) expect(failure.message).toContain(c.says)
        expect(failure.message).not.toContain(notion.token)
        expect(JSON.stringify(failure)).not.toContain(notion.token)
        expect(notion.requests.length).toBe(1) // no hidden retries inside the client
        expect(notion.pages().length).toBe(0)
      }))
  }

  it.scopedLive("create fails with 429: temporary with Retry-After, and the retry makes exactly one page", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      notion.failNext({ kind: "status", status: 429, headers: { "retry-after": "2" }, body: error(429, "rate_limited", "slow down") }, 1, "POST /v1/pages")
      const page = input()
      const failure = yield* Effect.flip(publish(notion, page))
      expect(failure._tag === "TemporaryError" && failure.retryAfterMillis).toBe(2_000)
      expect(notion.requests.filter((r) => r.method === "POST" && r.path === "/v1/pages").length).toBe(1)
      yield* publish(notion, page)
      expect(notion.pages().length).toBe(1)
    }))

  it.scopedLive("a wrong token gives a permanent 401 that does not echo the token", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      const wrong = "secret_wrong_token_value"
      const failure = yield* Effect.flip(publish(notion, input(), undefined, { token: Redacted.make(wrong) }))
      expect(failure._tag).toBe("PermanentError")
      expect(failure.status).toBe(401)
      expect(failure.message).toContain("integration token")
      expect(JSON.stringify(failure) + failure.message).not.toContain(wrong)
    }))

  it.scopedLive("a server that echoes the token in its error message: the token is masked", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      notion.failNext({ kind: "status", status: 400, body: error(400, "validation_error", `bad header Authorization: Bearer ${notion.token}`) })
      const failure = yield* Effect.flip(publish(notion, input()))
      expect(failure._tag).toBe("PermanentError")
      expect(failure.message).toContain("[redacted]")
      expect(JSON.stringify(failure) + failure.message).not.toContain(notion.token)
    }))

  it.scopedLive("a database that does not exist (or is not shared) is permanent and says so", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      const failure = yield* Effect.flip(publish(notion, input(), undefined, { databaseId: globalThis.crypto.randomUUID() }))
      expect(failure._tag).toBe("PermanentError")
      expect(failure.status).toBe(404)
      expect(failure.message).toContain("shared with the integration")
    }))

  it.scopedLive("Notion unreachable (connection refused) is temporary", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      yield* Effect.promise(() => notion.down())
      const failure = yield* Effect.flip(publish(notion, input()))
      expect(failure._tag).toBe("TemporaryError")
      expect(failure.message).toContain("ECONNREFUSED")
      expect(failure.message).not.toContain(notion.token)
    }))

  it.scoped("no answer within the timeout is temporary (on the test clock)", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      notion.failNext({ kind: "hang" })
      const attempt = yield* Effect.fork(publish(notion, input(), undefined, { timeout: "10 seconds" }))
      yield* untilRequests(notion, 1)
      yield* settle
      expect(Option.isNone(yield* Fiber.poll(attempt))).toBe(true) // still waiting: the timeout runs on the clock
      yield* TestClock.adjust("10 seconds")
      const failure = yield* Effect.flip(Fiber.join(attempt))
      expect(failure._tag).toBe("TemporaryError")
      expect(failure.message).toContain("no answer within 10s")
    }))

  it.scoped("all calls through one layer share one rate limiter", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      const publishing = yield* Effect.flatMap(NotionPublisher, (p) =>
        Effect.forEach([1, 2, 3], () => p.publish(input(), () => Effect.void), { concurrency: "unbounded" })).pipe(
          Effect.provide(layer(configFor(notion, { requestsPerSecond: 2 }))),
          Effect.fork
        )
      // the limiter runs on the test clock: with time standing still only the first window's 2 requests go out,
      // however long we wait (three separate limiters would let 3 out)
      yield* untilRequests(notion, 2)
      yield* settle
      expect(notion.requests.length).toBe(2)
      // then at most 2 more per second of test time, until all three pages are made
      let seconds = 0
      while (Option.isNone(yield* Fiber.poll(publishing)) && seconds < 60) {
        yield* TestClock.adjust("1 second")
        seconds++
        yield* settle
        expect(notion.requests.length).toBeLessThanOrEqual(2 + 2 * seconds)
      }
      yield* Fiber.join(publishing)
      expect(notion.pages().length).toBe(3)
      expect(seconds).toBeGreaterThanOrEqual(Math.ceil((notion.requests.length - 2) / 2))
    }))

  it("splitText keeps paragraphs, cuts long ones after whitespace, loses no character, never exceeds the limit", () => {
    const long = "word ".repeat(1000).trim()
    const pieces = splitText(`first\n\n${long}\n\n\nlast`, 2000)
    expect(pieces[0]).toBe("first")
    expect(pieces.at(-1)).toBe("last")
    for (const p of pieces) expect(p.length).toBeLessThanOrEqual(2000)
    expect(pieces.slice(1, -1).join("")).toBe(long)
    expect(pieces[1]!.endsWith(" ")).toBe(true) // cut at whitespace, kept with the first piece
    const emoji = "a" + "😀".repeat(10)
    const cut = splitText(emoji, 4)
    expect(cut.join("")).toBe(emoji)
    for (const p of cut) expect(wellFormed(p)).toBe(true)
  })
})
