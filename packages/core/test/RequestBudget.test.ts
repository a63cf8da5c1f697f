import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Option, Redacted, TestClock } from "effect"
import * as NotionPublisher from "../src/NotionPublisher.js"
import * as RequestBudget from "../src/RequestBudget.js"
import * as FakeNotion from "./support/FakeNotion.js"
import * as RequestBudgetSuite from "./support/RequestBudgetSuite.js"

RequestBudgetSuite.run("in-process", {
  freshBackend: Effect.map(RequestBudget.makeInProcess, (budget) => Layer.succeed(RequestBudget.RequestBudget, budget))
})

describe("RequestBudget (in-process)", () => {
  const limit: RequestBudget.Limit = { name: "test", perSecond: 2 }

  it.scoped("take waits on the clock: a burst of one second's worth goes at once, the next when a token is back", () =>
    Effect.gen(function*() {
      const budget = yield* RequestBudget.makeInProcess
      yield* budget.take(limit)
      yield* budget.take(limit)
      const third = yield* Effect.fork(budget.take(limit))
      yield* TestClock.adjust("499 millis")
      expect(Option.isNone(yield* Fiber.poll(third))).toBe(true)
      yield* TestClock.adjust("1 millis")
      yield* Fiber.join(third)
    }))

  it.scoped("holdOff makes every taker wait for the Retry-After, then resumes one at a time", () =>
    Effect.gen(function*() {
      const budget = yield* RequestBudget.makeInProcess
      yield* budget.holdOff(limit, 3_000)
      const first = yield* Effect.fork(budget.take(limit))
      const second = yield* Effect.fork(budget.take(limit))
      yield* TestClock.adjust("2999 millis")
      expect(Option.isNone(yield* Fiber.poll(first))).toBe(true)
      yield* TestClock.adjust("1 millis")
      yield* Fiber.join(first)
      expect(Option.isNone(yield* Fiber.poll(second))).toBe(true)
      yield* TestClock.adjust("500 millis")
      yield* Fiber.join(second)
    }))
})

describe("NotionPublisher on a provided RequestBudget", () => {
  it.scoped("a Retry-After one publisher gets holds back another publisher on the same budget until then", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      const shared = Layer.succeed(RequestBudget.RequestBudget, yield* RequestBudget.makeInProcess)
      // two publishers (as on two nodes) taking from one budget
      const publish = NotionPublisher.NotionPublisher.pipe(
        Effect.flatMap((p) =>
          p.publish({
            syncId: "s",
            entryId: globalThis.crypto.randomUUID(),
            title: "t",
            text: "text",
            transcript: "transcript",
            createdAt: new Date("2026-11-24T08:00:00Z"),
            existingPageId: null
          }, () => Effect.void)
        ),
        Effect.provide(NotionPublisher.layer({
          token: Redacted.make(notion.token),
          databaseId: notion.databaseId,
          baseUrl: notion.url,
          requestsPerSecond: 1000
        }).pipe(Layer.provide(shared)))
      )
      notion.failNext({ kind: "status", status: 429, headers: { "retry-after": "5" }, body: { object: "error", status: 429, code: "rate_limited", message: "slow down" } })
      const failure = yield* Effect.flip(publish)
      expect(failure._tag === "TemporaryError" && failure.retryAfterMillis).toBe(5_000)
      expect(notion.requests.length).toBe(1)
      const other = yield* Effect.fork(publish)
      // real time passes, the test clock does not: the other publisher sends nothing
      yield* Effect.promise(() => new Promise((r) => setTimeout(r, 300)))
      expect(notion.requests.length).toBe(1)
      yield* TestClock.adjust("5 seconds")
      // at the end of the pause one request goes; the rest follow at the steady rate
      yield* Effect.promise(async () => {
        for (let i = 0; i < 300 && notion.requests.length < 2; i++) await new Promise((r) => setTimeout(r, 10))
      })
      expect(notion.requests.length).toBe(2)
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(other)
      expect(notion.pages().length).toBe(1)
    }))
})
