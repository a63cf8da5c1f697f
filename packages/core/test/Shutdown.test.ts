/**
 * Shutdown is bounded: a stage sleeping in its in-process retry backoff is
 * released at once (row back to due, the attempt not counted) instead of
 * holding the stop for the whole grace period.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Option, Ref, Stream, TestClock } from "effect"
import { TemporaryError } from "../src/Errors.js"
import * as RetryPolicy from "../src/RetryPolicy.js"
import { audioBytes } from "./support/Audio.js"
import { eventually, fastPipeline, make, statusCounts, type StoreKind } from "./support/PipelineHarness.js"

/** Ollama's 503 with a long Retry-After: the cleanup sleeps 20 s in-process before its next try. */
const unavailable = { kind: "status", status: 503, headers: { "retry-after": "20" }, body: { error: "server busy" } } as const

describe("RetryPolicy.retry and shutdown", () => {
  const policy = RetryPolicy.make({ initialDelay: "10 seconds", inProcessRetries: 3 })
  const down = new TemporaryError({ service: "ollama", message: "down" })

  it.effect("a backoff sleep ends as soon as shutdown begins, with RetryReleased, and no further try", () =>
    Effect.gen(function*() {
      const tries = yield* Ref.make(0)
      const release = yield* Deferred.make<void>()
      const fiber = yield* RetryPolicy.retry(Effect.zipRight(Ref.update(tries, (n) => n + 1), Effect.fail(down)), policy, Deferred.await(release))
        .pipe(Effect.fork)
      yield* TestClock.adjust("1 second") // first try failed; sleeping until ~10 s
      expect(yield* Ref.get(tries)).toBe(1)
      yield* Deferred.succeed(release, undefined)
      const exit = yield* Fiber.await(fiber) // no clock advance needed: the sleep is over
      expect(exit).toStrictEqual(Exit.fail(new RetryPolicy.RetryReleased()))
      expect(yield* Ref.get(tries)).toBe(1)
    }))

  it.effect("a try that is running when shutdown begins is not cut short", () =>
    Effect.gen(function*() {
      const release = yield* Deferred.make<void>()
      yield* Deferred.succeed(release, undefined)
      const fiber = yield* RetryPolicy.retry(Effect.as(Effect.sleep("5 seconds"), "done"), policy, Deferred.await(release)).pipe(Effect.fork)
      yield* TestClock.adjust("5 seconds")
      expect(yield* Fiber.join(fiber)).toBe("done")
    }))

  it.effect("without shutdown it retries like the schedule, and gives up with the last error", () =>
    Effect.gen(function*() {
      const tries = yield* Ref.make(0)
      const fiber = yield* RetryPolicy.retry(Effect.zipRight(Ref.update(tries, (n) => n + 1), Effect.fail(down)), policy, Effect.never)
        .pipe(Effect.fork)
      yield* TestClock.adjust("10 minutes")
      expect(yield* Fiber.await(fiber)).toStrictEqual(Exit.fail(down))
      expect(yield* Ref.get(tries)).toBe(4)
    }))
})

for (const kind of ["sqlite", "postgres"] as const satisfies ReadonlyArray<StoreKind>) {
  describe(`Pipeline shutdown on ${kind}`, () => {
    it.scopedLive("a stage sleeping in its retry backoff is released at once: row due again, attempt not counted", () =>
      Effect.gen(function*() {
        const h = yield* make({ kind, notion: false, instantTranscription: true })
        const { user } = yield* h.journal.createUser("u")
        h.ollama.failNext(unavailable)
        // a grace far longer than the test's bound: only releasing the sleeper ends the stop in time
        const first = yield* h.startPipeline({ ...fastPipeline, shutdownGrace: "1 minute", lease: "1 minute" })
        const { entry } = yield* h.journal.ingest(user.id, Stream.make(audioBytes("wav")), { originalFilename: "n.wav" })
        yield* eventually(Effect.sync(() => (h.ollama.requests.length >= 1 ? true : undefined)))
        yield* Effect.sleep("200 millis") // the 503 has been answered: the stage is in its backoff sleep
        const stopped = yield* h.stopPipeline(first).pipe(Effect.timeoutOption("10 seconds"))
        expect(Option.isSome(stopped)).toBe(true)
        const after = yield* h.journal.getEntry(user.id, entry.id)
        expect(after.cleanup!.status).toBe("pending")
        expect(after.cleanup!.leaseOwner).toBeNull()
        expect(after.cleanup!.attempts).toBe(0) // released, not failed
        expect(after.cleanup!.lastError).toBeNull()
        expect(h.ollama.requests.length).toBe(1) // no retry was squeezed in
        expect((yield* statusCounts(h.sql, "cleaned_entries")).processing).toBeUndefined()
        // the next runtime takes it at once (a one-minute lease would block it otherwise)
        yield* h.startPipeline({ ...fastPipeline, lease: "1 minute" })
        const done = yield* eventually(h.journal.getEntry(user.id, entry.id).pipe(
          Effect.map((d) => (d.cleanup?.status === "completed" ? d : undefined))
        ))
        expect(done.cleanup!.attempts).toBe(1)
      }), { timeout: 90_000 })

  })
}
