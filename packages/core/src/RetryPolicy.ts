/**
 * How a stage retries. Two layers, both bounded:
 *
 * 1. **In-process**: an Effect `Schedule` — exponential with jitter
 *    (defaults 5 s, 10 s, 20 s), only while the error is a `TemporaryError`,
 *    never sooner than a server's `Retry-After`. Short outages are absorbed
 *    here while the worker keeps its lease alive.
 * 2. **Durable**: when the in-process budget is spent, the row goes to
 *    `retrying` with `next_attempt_at` (growing backoff, default 1 min
 *    doubling to 1 h, jittered) and any worker on any node picks it up then.
 *    After `maxAttempts` claims the row is `failed` with the last error.
 *
 * A `PermanentError` skips both: the row fails at once.
 *
 * @since 0.1.0
 */
import { Duration, Effect, Either, Random, Schedule } from "effect"
import { isTemporaryError } from "./Errors.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface RetryPolicy {
  /** First in-process delay; doubles each retry. Default 5 seconds. */
  readonly initialDelay: Duration.DurationInput
  /** In-process retries per claim. Default 3 (5 s, 10 s, 20 s). */
  readonly inProcessRetries: number
  /** First durable delay (`retrying` → due again). Default 1 minute. */
  readonly durableDelay: Duration.DurationInput
  /** Upper bound of the durable delay. Default 1 hour. */
  readonly maxDurableDelay: Duration.DurationInput
  /** Claims before the row is `failed` (1 = no durable retry). Default 5. */
  readonly maxAttempts: number
}

/**
 * @since 0.1.0
 */
export const defaults: RetryPolicy = {
  initialDelay: "5 seconds",
  inProcessRetries: 3,
  durableDelay: "1 minute",
  maxDurableDelay: "1 hour",
  maxAttempts: 5
}

/**
 * Builds a policy from partial settings.
 * @since 0.1.0
 */
export const make = (overrides: Partial<RetryPolicy> = {}): RetryPolicy => ({ ...defaults, ...overrides })

/**
 * The in-process schedule: retries `TemporaryError`s only (anything else
 * stops it), exponentially with jitter, waiting at least the error's
 * `Retry-After`.
 * @since 0.1.0
 */
export const schedule = (policy: RetryPolicy): Schedule.Schedule<unknown, unknown> =>
  Schedule.exponential(policy.initialDelay, 2).pipe(
    Schedule.jittered,
    Schedule.intersect(Schedule.recurs(policy.inProcessRetries)),
    Schedule.intersect(Schedule.identity<unknown>()),
    Schedule.whileInput((error: unknown) => isTemporaryError(error)),
    Schedule.modifyDelay(([, error], delay) => {
      const retryAfter = isTemporaryError(error) ? error.retryAfterMillis : undefined
      return retryAfter !== undefined && retryAfter > Duration.toMillis(delay) ? Duration.millis(retryAfter) : delay
    })
  )

/**
 * The backoff sleep between two in-process tries was cut short by shutdown:
 * the caller hands the row back (due at once, the claim not counted)
 * instead of holding the process for the rest of the sleep.
 * @since 0.1.0
 * @category errors
 */
export class RetryReleased {
  readonly _tag = "RetryReleased"
}

/**
 * Runs `self`, retrying it in-process with {@link schedule}. When `release`
 * completes (shutdown began), a backoff sleep in progress — or about to
 * start — ends at once with {@link RetryReleased}; a try that is running is
 * never cut short by it (it keeps the grace period).
 * @since 0.1.0
 */
export const retry = <A, E, R>(
  self: Effect.Effect<A, E, R>,
  policy: RetryPolicy,
  release: Effect.Effect<void>,
  /** Called before each in-process retry (metrics). */
  onRetry: (error: E) => Effect.Effect<void> = () => Effect.void
): Effect.Effect<A, E | RetryReleased, R> =>
  // the schedule's driver is made at the first failure: most runs never fail
  Effect.catchAll(self, (first) =>
    Effect.flatMap(Schedule.driver(schedule(policy)), (driver) => {
      const retryAfter = (error: E): Effect.Effect<A, E | RetryReleased, R> =>
        // `driver.next` decides and sleeps; Left = the schedule is done
        Effect.raceFirst(
          Effect.either(driver.next(error)),
          Effect.as(release, "released" as const)
        ).pipe(
          Effect.flatMap((next) =>
            next === "released"
              ? Effect.fail(new RetryReleased())
              : Either.isLeft(next)
              ? Effect.fail(error)
              : Effect.zipRight(onRetry(error), Effect.catchAll(self, retryAfter))
          )
        )
      return retryAfter(first)
    }))

/**
 * When a row that failed temporarily on its `attempts`-th claim is due
 * again: `durableDelay · 2^(attempts-1)`, capped, ×U(0.8, 1.2), and never
 * sooner than `retryAfterMillis`.
 * @since 0.1.0
 */
export const durableDelay = (
  policy: RetryPolicy,
  attempts: number,
  retryAfterMillis?: number | undefined
): Effect.Effect<Duration.Duration> =>
  Effect.gen(function*() {
    const base = Duration.toMillis(policy.durableDelay) * 2 ** Math.max(0, attempts - 1)
    const capped = Math.min(base, Duration.toMillis(policy.maxDurableDelay))
    const jitter = yield* Random.nextRange(0.8, 1.2)
    return Duration.millis(Math.max(Math.round(capped * jitter), retryAfterMillis ?? 0))
  })

/**
 * Whether a row may be retried durably after failing on its `attempts`-th claim.
 * @since 0.1.0
 */
export const hasAttemptsLeft = (policy: RetryPolicy, attempts: number): boolean => attempts < policy.maxAttempts
