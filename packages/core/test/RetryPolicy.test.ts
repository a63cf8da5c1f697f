import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Random, Ref, TestClock } from "effect"
import { PermanentError, type StageError, TemporaryError } from "../src/Errors.js"
import * as RetryPolicy from "../src/RetryPolicy.js"

/** An operation that fails with the given errors in turn, then succeeds; records when each attempt ran. */
const scripted = (errors: ReadonlyArray<StageError>) =>
  Effect.gen(function*() {
    const attempts = yield* Ref.make<Array<number>>([])
    const op = Effect.gen(function*() {
      const now = yield* TestClock.currentTimeMillis
      const n = (yield* Ref.updateAndGet(attempts, (a) => [...a, now])).length
      if (n <= errors.length) return yield* Effect.fail(errors[n - 1]!)
      return "done"
    })
    return { attempts, op }
  })

const temporary = (retryAfterMillis?: number) =>
  new TemporaryError({ service: "ollama", message: "down", ...(retryAfterMillis !== undefined ? { retryAfterMillis } : {}) })

/** Fixed randomness so jitter is reproducible. */
const seeded = <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.withRandom(self, Random.make("retry-seed"))

describe("RetryPolicy.schedule", () => {
  it.effect("retries temporary errors with growing, jittered delays (5 s, 10 s, 20 s ±20 %)", () =>
    seeded(Effect.gen(function*() {
      const { attempts, op } = yield* scripted([temporary(), temporary(), temporary()])
      const fiber = yield* Effect.fork(Effect.retry(op, RetryPolicy.schedule(RetryPolicy.defaults)))
      yield* TestClock.adjust("2 minutes")
      expect(yield* Fiber.join(fiber)).toBe("done")
      const at = yield* Ref.get(attempts)
      expect(at.length).toBe(4)
      const gaps = at.slice(1).map((t, i) => t - at[i]!)
      const nominal = [5000, 10000, 20000]
      gaps.forEach((gap, i) => {
        expect(gap).toBeGreaterThanOrEqual(nominal[i]! * 0.8)
        expect(gap).toBeLessThanOrEqual(nominal[i]! * 1.2)
      })
    })))

  it.effect("stops after the in-process budget and surfaces the last temporary error", () =>
    seeded(Effect.gen(function*() {
      const { attempts, op } = yield* scripted([temporary(), temporary(), temporary(), temporary(), temporary()])
      const fiber = yield* Effect.fork(Effect.flip(Effect.retry(op, RetryPolicy.schedule(RetryPolicy.defaults))))
      yield* TestClock.adjust("10 minutes")
      const error = yield* Fiber.join(fiber)
      expect(error._tag).toBe("TemporaryError")
      expect((yield* Ref.get(attempts)).length).toBe(4) // 1 + 3 retries
    })))

  it.effect("a permanent error stops at once: one attempt, no waiting", () =>
    seeded(Effect.gen(function*() {
      const { attempts, op } = yield* scripted([new PermanentError({ service: "notion", status: 401, message: "unauthorized" })])
      const error = yield* Effect.flip(Effect.retry(op, RetryPolicy.schedule(RetryPolicy.defaults)))
      expect(error._tag).toBe("PermanentError")
      expect(yield* Ref.get(attempts)).toEqual([0])
    })))

  it.effect("honours Retry-After when it is longer than the backoff", () =>
    seeded(Effect.gen(function*() {
      const { attempts, op } = yield* scripted([temporary(42_000), temporary(1_000)])
      const fiber = yield* Effect.fork(Effect.retry(op, RetryPolicy.schedule(RetryPolicy.defaults)))
      yield* TestClock.adjust("41 seconds")
      expect((yield* Ref.get(attempts)).length).toBe(1) // still waiting for the server's 42 s
      yield* TestClock.adjust("2 minutes")
      expect(yield* Fiber.join(fiber)).toBe("done")
      const at = yield* Ref.get(attempts)
      expect(at[1]! - at[0]!).toBe(42_000)
      // a shorter Retry-After does not shorten the backoff (10 s ±20 %)
      expect(at[2]! - at[1]!).toBeGreaterThanOrEqual(8_000)
    })))
})

describe("RetryPolicy.durableDelay", () => {
  it.effect("doubles per attempt from 1 minute, capped at 1 hour, jittered, never before Retry-After", () =>
    seeded(Effect.gen(function*() {
      const policy = RetryPolicy.defaults
      const delays = yield* Effect.forEach([1, 2, 3, 8, 20], (n) => RetryPolicy.durableDelay(policy, n))
      const nominal = [60_000, 120_000, 240_000, 3_600_000, 3_600_000]
      delays.forEach((d, i) => {
        expect(Duration.toMillis(d)).toBeGreaterThanOrEqual(nominal[i]! * 0.8)
        expect(Duration.toMillis(d)).toBeLessThanOrEqual(nominal[i]! * 1.2)
      })
      const afterServer = yield* RetryPolicy.durableDelay(policy, 1, 7_200_000)
      expect(Duration.toMillis(afterServer)).toBe(7_200_000)
    })))

  it("counts claims against maxAttempts", () => {
    const policy = RetryPolicy.make({ maxAttempts: 3 })
    expect([1, 2, 3].map((n) => RetryPolicy.hasAttemptsLeft(policy, n))).toEqual([true, true, false])
  })
})
