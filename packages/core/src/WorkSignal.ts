/**
 * Wake-ups for idle workers: when a stage row is queued, `notify(stage)`
 * lets waiting workers claim at once instead of at their next poll.
 * Polling stays the source of truth; a lost signal only costs latency.
 *
 * @since 0.1.0
 */
import { Context, Deferred, Duration, Effect, Layer, Ref } from "effect"
import type { Stage } from "./Domain.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface WorkSignalService {
  /** Work for `stage` was queued (in this process or, with a shared channel, on another node). */
  readonly notify: (stage: Stage) => Effect.Effect<void>
  /**
   * Returns an effect that completes on the next `notify(stage)` after this
   * call, or when `timeout` passes. Take it *before* looking for work, so a
   * signal sent in between is not missed.
   */
  readonly next: (stage: Stage, timeout: Duration.DurationInput) => Effect.Effect<Effect.Effect<void>>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class WorkSignal extends Context.Tag("@voice-journal/core/WorkSignal")<WorkSignal, WorkSignalService>() {}

/**
 * An in-process signal.
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<WorkSignalService> = Effect.gen(function*() {
  const slots = {
    transcription: yield* Ref.make(yield* Deferred.make<void>()),
    cleanup: yield* Ref.make(yield* Deferred.make<void>()),
    delivery: yield* Ref.make(yield* Deferred.make<void>())
  }
  return {
    notify: (stage) =>
      Deferred.make<void>().pipe(
        Effect.flatMap((fresh) => Ref.getAndSet(slots[stage], fresh)),
        Effect.flatMap((previous) => Deferred.succeed(previous, undefined)),
        Effect.asVoid
      ),
    next: (stage, timeout) =>
      Ref.get(slots[stage]).pipe(
        Effect.map((deferred) => Deferred.await(deferred).pipe(Effect.timeoutOption(Duration.decode(timeout)), Effect.asVoid))
      )
  }
})

/**
 * In-process wake-ups (the default; PostgreSQL adds LISTEN/NOTIFY on top).
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<WorkSignal> = Layer.effect(WorkSignal, make)
