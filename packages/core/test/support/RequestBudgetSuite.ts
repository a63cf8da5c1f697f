/**
 * The `RequestBudget` conformance suite: what every implementation must do,
 * checked on the grants it hands out (the `at` times on its own clock), not
 * on how long anything took — so it runs the same against the in-process
 * budget and against PostgreSQL, where time keeps moving between
 * statements.
 *
 * `node` opens the budget as another node would: for a shared budget every
 * build is a new connection pool to the same backend; for the in-process one
 * it is the same budget (there is only one process).
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Duration, Effect, Layer, type Scope } from "effect"
import { type Grant, type Limit, RequestBudget, type RequestBudgetService } from "../../src/RequestBudget.js"

export interface Harness {
  /** A fresh backend for one test; every build of the returned layer is another node on it. */
  readonly freshBackend: Effect.Effect<Layer.Layer<RequestBudget, unknown>, unknown, Scope.Scope>
}

const nodes = (harness: Harness, n: number) =>
  Effect.gen(function*() {
    const layer = yield* harness.freshBackend
    return yield* Effect.forEach(Array.from({ length: n }), () => Layer.build(layer).pipe(Effect.map((ctx) => Context.get(ctx, RequestBudget))))
  }).pipe(Effect.orDie)

const limitNamed = (perSecond: number, burst: number): Limit => ({ name: `suite:${globalThis.crypto.randomUUID()}`, perSecond, burst })

/** Float arithmetic on a database clock: equal to within a microsecond. */
const near = (actual: number, expected: number) => expect(Math.abs(actual - expected)).toBeLessThan(0.001)

/**
 * The property of a rate limit, stated on the grants: in any stretch of time
 * from one grant to another, no more than `burst + perSecond × length`
 * grants. Returns the worst shortfall in milliseconds (≤ 0: within the
 * limit; epoch milliseconds as doubles carry ~0.0002 ms of rounding, a race
 * that hands out one slot twice falls short by a whole interval).
 */
export const shortfall = (grants: ReadonlyArray<Grant>, limit: Limit): number => {
  const at = grants.map((g) => g.at).sort((a, b) => a - b)
  const burst = limit.burst ?? limit.perSecond
  const step = 1000 / limit.perSecond
  let worst = -Infinity
  for (let i = 0; i < at.length; i++) {
    for (let j = i; j < at.length; j++) {
      // j - i + 1 grants need at least (count - burst) intervals between the first and the last
      worst = Math.max(worst, (j - i + 1 - burst) * step - (at[j]! - at[i]!))
    }
  }
  return worst
}

/** Within the limit, to a hundredth of a millisecond. */
export const withinLimit = (grants: ReadonlyArray<Grant>, limit: Limit): boolean => shortfall(grants, limit) < 0.01

const reserveAll = (budget: RequestBudgetService, limit: Limit, n: number, tokens?: number) =>
  Effect.forEach(Array.from({ length: n }), () => budget.reserve(limit, tokens))

export const run = (name: string, harness: Harness) =>
  describe(`RequestBudget conformance: ${name}`, () => {
    // one token per 10 s: whatever time passes while the test runs is small against it
    const slow = () => limitNamed(0.1, 3)
    const step = 10_000

    it.scoped("a fresh budget lets `burst` requests go at once, then one per interval", () =>
      Effect.gen(function*() {
        const [budget] = yield* nodes(harness, 1)
        const limit = slow()
        const grants = yield* reserveAll(budget!, limit, 5)
        expect(grants.slice(0, 3).map((g) => Duration.toMillis(g.wait))).toEqual([0, 0, 0])
        near(grants[3]!.at - grants[0]!.at, step)
        near(grants[4]!.at - grants[3]!.at, step)
        expect(Duration.toMillis(grants[3]!.wait)).toBeGreaterThan(step / 2)
      }))

    it.scoped("taking several tokens at once counts them all", () =>
      Effect.gen(function*() {
        const [budget] = yield* nodes(harness, 1)
        const limit = slow()
        const first = yield* budget!.reserve(limit, 3)
        const next = yield* budget!.reserve(limit)
        expect(Duration.toMillis(first.wait)).toBe(0)
        near(next.at - first.at, step)
      }))

    it.scoped("budgets with different names do not share tokens", () =>
      Effect.gen(function*() {
        const [budget] = yield* nodes(harness, 1)
        yield* reserveAll(budget!, slow(), 5)
        const other = yield* reserveAll(budget!, slow(), 3)
        expect(other.map((g) => Duration.toMillis(g.wait))).toEqual([0, 0, 0])
      }))

    it.scoped("many takers on several nodes at once: every grant counted, never more than burst + rate × window", () =>
      Effect.gen(function*() {
        const budgets = yield* nodes(harness, 3)
        // 2 per second: the 60 grants span 27.5 s of budget, far longer than the statements take
        const limit = limitNamed(2, 5)
        const grants = (yield* Effect.forEach(
          budgets.flatMap((b) => Array.from({ length: 4 }, () => b)),
          (b) => reserveAll(b, limit, 5),
          { concurrency: "unbounded" }
        )).flat()
        expect(grants.length).toBe(60)
        expect(withinLimit(grants, limit)).toBe(true)
        // and no slower than the limit: 60 grants span (60 - burst) intervals
        const at = grants.map((g) => g.at).sort((a, b) => a - b)
        near(at.at(-1)! - at[0]!, ((60 - 5) * 1000) / 2)
      }))

    it.scoped("holdOff stops every node until then; afterwards one request at a time, not a burst", () =>
      Effect.gen(function*() {
        const [a, b] = yield* nodes(harness, 2)
        const limit = slow()
        yield* a!.holdOff(limit, 60_000)
        const [first, second] = yield* reserveAll(b!, limit, 2)
        expect(Duration.toMillis(first!.wait)).toBeGreaterThan(50_000)
        near(second!.at - first!.at, step)
        // a shorter hold-off later never brings the budget forward
        yield* a!.holdOff(limit, 1_000)
        const third = yield* b!.reserve(limit)
        near(third.at - second!.at, step)
      }))
  })
