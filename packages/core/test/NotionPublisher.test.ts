import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Redacted, TestClock } from "effect"
import { TemporaryError } from "../src/Errors.js"
import { layer, type NotionPageInput, NotionPublisher, splitText } from "../src/NotionPublisher.js"
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

const publisher = (notion: FakeNotion.FakeNotion, token = notion.token) =>
  layer({ token: Redacted.make(token), databaseId: notion.databaseId, baseUrl: notion.url, requestsPerSecond: 1000 })

const publish = (notion: FakeNotion.FakeNotion, page: NotionPageInput, record: (id: string) => Effect.Effect<void, TemporaryError> = () => Effect.void, token?: string) =>
  Effect.flatMap(NotionPublisher, (p) => p.publish(page, record)).pipe(Effect.provide(publisher(notion, token)))

/** Everything on a page, in order, as one string per block. */
const contentOf = (page: FakeNotion.StoredPage) => page.blocks.flatMap((b) => [b.text, ...b.children])

describe("NotionPublisher (official client against a loopback Notion)", () => {
  it.scopedLive("creates one page with title, date, entry id, the text and the transcript toggle", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      const recorded: Array<string> = []
      const page = input()
      const { pageId } = yield* publish(notion, page, (id) => Effect.sync(() => recorded.push(id)))
      const [stored] = notion.pages()
      expect(stored!.id).toBe(pageId)
      expect(recorded).toEqual([pageId])
      expect(stored!.title).toBe("Market day")
      expect(stored!.entryId).toBe(page.entryId)
      expect(stored!.date).toBe("2026-11-24T08:00:00.000Z")
      expect(stored!.blocks.map((b) => b.type)).toEqual(["paragraph", "paragraph", "toggle"])
      expect(stored!.blocks[2]!.children).toEqual([page.transcript])
    }))

  it.scopedLive("a long entry is split to Notion's limits (2,000 chars, 100 blocks per request) and nothing is lost", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      const paragraphs = Array.from({ length: 250 }, (_, i) => `Paragraph ${i}. ` + (i % 10 === 0 ? "long words ".repeat(500) : "short."))
      const transcript = Array.from({ length: 230 }, (_, i) => `spoken part ${i}`).join("\n\n")
      const page = input({ text: paragraphs.join("\n\n"), transcript })
      yield* publish(notion, page)
      expect(notion.pages().length).toBe(1)
      const [stored] = notion.pages()
      const content = contentOf(stored!)
      for (const block of content) expect(block.length).toBeLessThanOrEqual(2000)
      const flat = (s: string) => s.replace(/\s+/g, "")
      expect(flat(content.join(""))).toBe(flat(page.text + "Transcript" + page.transcript))
      // more than 100 blocks: the rest was appended in batches the fake accepted (it rejects > 100)
      expect(notion.requests.filter((r) => r.path.endsWith("/children")).length).toBeGreaterThan(2)
    }))

  it.scopedLive("a retry after a crash between 'page created' and 'row updated' finds the page: no second page", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      const page = input()
      // the process dies right after creating the page: the id was never stored
      const crashed = yield* Effect.flip(publish(notion, page, () => Effect.fail(new TemporaryError({ service: "database", message: "process killed" }))))
      expect(crashed._tag).toBe("TemporaryError")
      expect(notion.pages().length).toBe(1)
      const recorded: Array<string> = []
      const { pageId } = yield* publish(notion, page, (id) => Effect.sync(() => recorded.push(id)))
      expect(notion.pages().length).toBe(1)
      expect(pageId).toBe(notion.pages()[0]!.id)
      expect(recorded).toEqual([pageId])
      expect(contentOf(notion.pages()[0]!)).toEqual([
        "Today I went to the market.", "The weather was nice.", "Transcript", page.transcript
      ])
    }))

  it.scopedLive("a page left half-written (appends failed) is finished, not duplicated", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      const page = input({ text: Array.from({ length: 230 }, (_, i) => `para ${i}`).join("\n\n") })
      notion.failNext({ kind: "status", status: 503, body: { object: "error", status: 503, code: "service_unavailable", message: "down" } }, 1, "PATCH /v1/blocks/")
      const first = yield* Effect.flip(publish(notion, page))
      expect(first._tag).toBe("TemporaryError")
      const stored = notion.pages()[0]!
      expect(stored.blocks.length).toBe(100) // only the create request got through
      const { pageId } = yield* publish(notion, { ...page, existingPageId: stored.id })
      expect(pageId).toBe(stored.id)
      expect(notion.pages().length).toBe(1)
      const done = notion.pages()[0]!
      expect(done.blocks.length).toBe(231)
      expect(done.blocks.slice(0, 230).map((b) => b.text)).toEqual(Array.from({ length: 230 }, (_, i) => `para ${i}`))
      expect(done.blocks[230]!.children).toEqual([page.transcript])
    }))

  const cases: ReadonlyArray<readonly [string, Fault, "TemporaryError" | "PermanentError", number | undefined]> = [
    ["429 rate_limited", { kind: "status", status: 429, headers: { "retry-after": "12" }, body: { object: "error", status: 429, code: "rate_limited", message: "slow down" } }, "TemporaryError", 429],
    ["529 service_overload", { kind: "status", status: 529, headers: { "retry-after": "5" }, body: { object: "error", status: 529, code: "service_overload", message: "overloaded" } }, "TemporaryError", 529],
    ["409 conflict_error", { kind: "status", status: 409, body: { object: "error", status: 409, code: "conflict_error", message: "try again" } }, "TemporaryError", 409],
    ["500", { kind: "status", status: 500, body: { object: "error", status: 500, code: "internal_server_error", message: "oops" } }, "TemporaryError", 500],
    ["502", { kind: "status", status: 502, body: "<html>bad gateway</html>" }, "TemporaryError", 502],
    ["503", { kind: "status", status: 503, body: { object: "error", status: 503, code: "service_unavailable", message: "down" } }, "TemporaryError", 503],
    ["504", { kind: "status", status: 504, body: { object: "error", status: 504, code: "gateway_timeout", message: "slow" } }, "TemporaryError", 504],
    ["connection reset", { kind: "refuse" }, "TemporaryError", undefined],
    ["400 validation_error (e.g. the free-workspace block cap)", { kind: "status", status: 400, body: { object: "error", status: 400, code: "validation_error", message: "block limit reached for this workspace" } }, "PermanentError", 400],
    ["403 restricted_resource", { kind: "status", status: 403, body: { object: "error", status: 403, code: "restricted_resource", message: "no access" } }, "PermanentError", 403]
  ]
  for (const [label, fault, tag, status] of cases) {
    it.scopedLive(`${label} → ${tag}`, () =>
      Effect.gen(function*() {
        const notion = yield* FakeNotion.make()
        notion.failNext(fault)
        const error = yield* Effect.flip(publish(notion, input()))
        expect(error._tag).toBe(tag)
        expect(error.status).toBe(status)
        expect(JSON.stringify(error)).not.toContain(notion.token)
        expect(error.message).not.toContain(notion.token)
        if (status === 429) expect(error._tag === "TemporaryError" && error.retryAfterMillis).toBe(12_000)
        if (status === 529) expect(error._tag === "TemporaryError" && error.retryAfterMillis).toBe(5_000)
        expect(notion.pages().length).toBe(0)
      }))
  }

  it.scopedLive("401 from a wrong token is permanent and never echoes the token", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      const wrong = "secret_wrong_token_value"
      const error = yield* Effect.flip(publish(notion, input(), undefined, wrong))
      expect(error._tag).toBe("PermanentError")
      expect(error.status).toBe(401)
      expect(error.message).toContain("NOTION_TOKEN")
      expect(JSON.stringify(error) + error.message).not.toContain(wrong)
    }))

  it.scopedLive("404 for a database that is missing or not shared is permanent and says so", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      const error = yield* Effect.flip(
        Effect.flatMap(NotionPublisher, (p) => p.publish(input(), () => Effect.void)).pipe(
          Effect.provide(layer({ token: Redacted.make(notion.token), databaseId: globalThis.crypto.randomUUID(), baseUrl: notion.url }))
        )
      )
      expect(error._tag).toBe("PermanentError")
      expect(error.status).toBe(404)
      expect(error.message).toContain("shared with the integration")
    }))

  it.scopedLive("Notion unreachable is temporary", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      yield* Effect.promise(() => notion.down())
      const error = yield* Effect.flip(publish(notion, input()))
      expect(error._tag).toBe("TemporaryError")
    }))

  it.scoped("all calls through one layer share one rate limiter", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      const publishing = yield* Effect.flatMap(NotionPublisher, (p) =>
        Effect.forEach([1, 2, 3], () => p.publish(input(), () => Effect.void), { concurrency: "unbounded" })).pipe(
        Effect.provide(layer({ token: Redacted.make(notion.token), databaseId: notion.databaseId, baseUrl: notion.url, requestsPerSecond: 2 })),
        Effect.fork
      )
      // the limiter runs on the (test) clock: without advancing it only the first window's requests go out
      for (let i = 0; i < 20; i++) yield* Effect.promise(() => new Promise((r) => setTimeout(r, 10)))
      expect(notion.requests.length).toBe(2)
      yield* TestClock.adjust("1 second")
      for (let i = 0; i < 20; i++) yield* Effect.promise(() => new Promise((r) => setTimeout(r, 10)))
      expect(notion.requests.length).toBe(4)
      yield* TestClock.adjust("1 minute")
      yield* Fiber.join(publishing)
      expect(notion.pages().length).toBe(3)
    }))

  it("splitText keeps paragraphs, splits long ones at spaces, never exceeds the limit", () => {
    const long = "word ".repeat(1000).trim()
    const pieces = splitText(`first\n\n${long}\n\n\nlast`, 2000)
    expect(pieces[0]).toBe("first")
    expect(pieces.at(-1)).toBe("last")
    for (const p of pieces) expect(p.length).toBeLessThanOrEqual(2000)
    expect(pieces.slice(1, -1).join(" ")).toBe(long)
  })
})
