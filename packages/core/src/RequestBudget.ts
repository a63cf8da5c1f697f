/**
 * A budget of requests per second, taken from before every request to a
 * rate-limited service. Notion allows an integration an average of three
 * requests per second — per integration, not per process — so nodes that
 * each keep their own limiter send three times too much between them.
 *
 * Two implementations of one port:
 *
 * - {@link makeInProcess} / {@link layerInProcess}: state in memory, one
 *   process. The default of `NotionPublisher` (the library, and the server
 *   on SQLite).
 * - `PgRequestBudget.layer` (`@voice-journal/adapter-postgres`): one row per
 *   budget in the database, taken from atomically by every node, so the
 *   limit holds for all nodes together.
 *
 * Both schedule requests the same way (GCRA, a token bucket kept as one
 * timestamp): a budget remembers `nextAt`, the moment by which every token
 * handed out so far has been paid back at `perSecond`. Taking `n` tokens
 * moves it to `max(nextAt, now) + n·T` (T = 1 s / perSecond) and the request
 * may go once no more than `burst` tokens are owed: at
 * `max(now, nextAt − burst·T, blockedUntil)`. Taking is one step that never
 * fails for lack of tokens; the caller gets the time it may go and sleeps
 * until then — nobody polls, nobody retries.
 *
 * {@link RequestBudgetService.holdOff} is for a server's `Retry-After`: it
 * stops every taker of the budget until then (on every node, for the shared
 * one), after which requests resume one at a time at the steady rate rather
 * than as a burst.
 *
 * @since 0.1.0
 */
import { Clock, Context, Duration, Effect, Layer } from "effect"
import type { TemporaryError } from "./Errors.js"

/**
 * A named budget. Everyone who takes from the same name on the same backend
 * shares it; rate and burst travel with each call, so a budget needs no
 * set-up.
 * @since 0.1.0
 * @category models
 */
export interface Limit {
  readonly name: string
  /** Average requests per second. */
  readonly perSecond: number
  /** Requests that may go at once after a quiet spell. Default: one second's worth (`perSecond`), at least 1. */
  readonly burst?: number | undefined
}

/**
 * When a request may go.
 * @since 0.1.0
 * @category models
 */
export interface Grant {
  /** Milliseconds since the epoch on the budget's clock (the database's, for a shared budget). */
  readonly at: number
  /** How long to wait from now. */
  readonly wait: Duration.Duration
}

/**
 * @since 0.1.0
 * @category models
 */
export interface RequestBudgetService {
  /** Takes `tokens` (default 1) and says when the request may go; does not wait. */
  readonly reserve: (limit: Limit, tokens?: number) => Effect.Effect<Grant, TemporaryError>
  /** Takes `tokens` (default 1) and waits until the request may go. */
  readonly take: (limit: Limit, tokens?: number) => Effect.Effect<void, TemporaryError>
  /** Nobody takes from `limit` for `millis` from now (a server's `Retry-After`). */
  readonly holdOff: (limit: Limit, millis: number) => Effect.Effect<void, TemporaryError>
}

/**
 * The port. `NotionPublisher` takes from it when one is provided, else from
 * an in-process budget of its own.
 * @since 0.1.0
 * @category tags
 */
export class RequestBudget extends Context.Tag("@voice-journal/core/RequestBudget")<RequestBudget, RequestBudgetService>() {}

/**
 * Milliseconds per token.
 * @since 0.1.0
 */
export const millisPerToken = (limit: Limit): number => 1000 / limit.perSecond

/**
 * The burst in tokens: `burst`, default `perSecond`, at least 1 (so a single request can always go).
 * @since 0.1.0
 */
export const burstOf = (limit: Limit): number => Math.max(1, limit.burst ?? limit.perSecond)

/**
 * A full service from an implementation of `reserve` and `holdOff`: `take`
 * is `reserve`, then a sleep on Effect's clock.
 * @since 0.1.0
 * @category constructors
 */
export const make = (impl: Omit<RequestBudgetService, "take">): RequestBudgetService =>
  RequestBudget.of({
    ...impl,
    take: (limit, tokens) =>
      Effect.flatMap(impl.reserve(limit, tokens), (grant) => Duration.isZero(grant.wait) ? Effect.void : Effect.sleep(grant.wait))
  })

/**
 * A budget for one process, on Effect's clock (so `TestClock` drives it).
 * A request interrupted while it waits keeps its token: the budget errs on
 * the slow side.
 * @since 0.1.0
 * @category constructors
 */
export const makeInProcess: Effect.Effect<RequestBudgetService> = Effect.sync(() => {
  const budgets = new Map<string, { nextAt: number; blockedUntil: number }>()
  const stateOf = (name: string) => {
    let state = budgets.get(name)
    if (state === undefined) budgets.set(name, state = { nextAt: 0, blockedUntil: 0 })
    return state
  }
  return make({
    // synchronous read-modify-write: nothing can interleave in one JavaScript process
    reserve: (limit, tokens = 1) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const state = stateOf(limit.name)
        const step = millisPerToken(limit)
        state.nextAt = Math.max(state.nextAt, now) + tokens * step
        const at = Math.max(now, state.nextAt - burstOf(limit) * step, state.blockedUntil)
        return { at, wait: Duration.millis(at - now) }
      }),
    holdOff: (limit, millis) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const state = stateOf(limit.name)
        const until = now + Math.max(0, millis)
        state.blockedUntil = Math.max(state.blockedUntil, until)
        // at `until` one request may go, then the steady rate: no burst right after a 429
        state.nextAt = Math.max(state.nextAt, until + (burstOf(limit) - 1) * millisPerToken(limit))
      })
  })
})

/**
 * The in-process budget as a layer (one per layer instance).
 * @since 0.1.0
 * @category layers
 */
export const layerInProcess: Layer.Layer<RequestBudget> = Layer.effect(RequestBudget, makeInProcess)
