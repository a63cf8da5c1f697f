/**
 * The changes a user can watch live (`GET /events`): stage status changes
 * and entries created or deleted, as {@link JournalEvent}s. The
 * `journal_events` table is the truth — the store writes each event in the
 * transaction of its change, so an event id is durable and a client that
 * reconnects resumes after the last one it saw. A {@link Signal} only says
 * "this user has new events": in-process (the store notifies after its
 * writes), and on PostgreSQL also from other nodes by LISTEN/NOTIFY. A lost
 * signal costs latency (the stream re-reads every `pollInterval`), never
 * an event.
 *
 * @since 0.1.0
 */
import { Context, Deferred, Duration, Effect, FiberId, Layer, Option, Stream } from "effect"
import type { JournalEvent, UserId } from "./Domain.js"
import type { StoreError } from "./Errors.js"
import { JournalStore } from "./JournalStore.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface SignalService {
  /** `userId` has new events (committed, or about to be: readers wait for the writer on SQLite). */
  readonly notify: (userId: string) => Effect.Effect<void>
  /**
   * An effect that completes on the next `notify(userId)` after this call,
   * or when `timeout` passes. Take it *before* reading, so a notify in
   * between is not missed.
   */
  readonly next: (userId: string, timeout: Duration.DurationInput) => Effect.Effect<Effect.Effect<void>>
}

/**
 * "New events for this user". Optional for the store: without it, streams
 * find new events by polling alone.
 * @since 0.1.0
 * @category tags
 */
export class Signal extends Context.Tag("@voice-journal/core/JournalEvents/Signal")<Signal, SignalService>() {}

/**
 * An in-process signal: one waiting slot per user that somebody watches.
 * @since 0.1.0
 * @category constructors
 */
export const makeSignal: Effect.Effect<SignalService> = Effect.sync(() => {
  const waiting = new Map<string, Deferred.Deferred<void>>()
  return {
    notify: (userId) =>
      Effect.suspend(() => {
        const slot = waiting.get(userId)
        if (slot === undefined) return Effect.void
        waiting.delete(userId)
        return Deferred.succeed(slot, undefined)
      }),
    next: (userId, timeout) =>
      Effect.sync(() => {
        let slot = waiting.get(userId)
        if (slot === undefined) {
          slot = Deferred.unsafeMake<void>(FiberId.none)
          waiting.set(userId, slot)
        }
        return Deferred.await(slot).pipe(Effect.timeoutOption(Duration.decode(timeout)), Effect.asVoid)
      })
  }
})

/**
 * The in-process signal as a Layer. Give it to the store's layer too, so its
 * writes wake this process's streams at once.
 * @since 0.1.0
 * @category layers
 */
export const layerSignal: Layer.Layer<Signal> = Layer.effect(Signal, makeSignal)

/** Events read per round trip. */
const batchSize = 100

/**
 * `userId`'s events after `afterId` (the `Last-Event-ID` a client saw; none:
 * only events from now on), in id order, then live as they are written. A
 * round trip to the store per wake-up (and per `pollInterval`, default 5 s,
 * in case a wake-up was lost). Never ends by itself.
 * @since 0.1.0
 */
export const stream = (
  userId: UserId,
  options: { readonly afterId?: number | undefined; readonly pollInterval?: Duration.DurationInput | undefined } = {}
): Stream.Stream<JournalEvent, StoreError, JournalStore> =>
  Stream.unwrap(Effect.gen(function*() {
    const store = yield* JournalStore
    const signal = yield* Effect.serviceOption(Signal)
    const poll = options.pollInterval ?? "5 seconds"
    const wakeUp = Option.match(signal, {
      onNone: () => Effect.succeed(Effect.sleep(poll)),
      onSome: (s) => s.next(userId, poll)
    })
    let after = options.afterId ?? (yield* store.lastEventId(userId))
    const nextBatch = Effect.gen(function*() {
      while (true) {
        const wake = yield* wakeUp
        const events = yield* store.readEvents(userId, { afterId: after, limit: batchSize })
        if (events.length > 0) {
          after = events[events.length - 1]!.id
          return events
        }
        yield* wake
      }
    })
    return Stream.repeatEffect(nextBatch).pipe(Stream.flattenIterables)
  }))
