/**
 * Another node, in its own process: it connects to the database given as
 * argv[2], waits for wake-ups on every stage with a one-hour timeout (so
 * only a real notification can wake it) and prints "woke <stage>" for each.
 */
import { NodeRuntime } from "@effect/platform-node"
import { WorkSignal } from "@voice-journal/core"
import { Effect, Layer } from "effect"
import * as PgJournalStore from "../../src/PgJournalStore.js"

const stages = ["transcription", "cleanup", "delivery"] as const

const program = Effect.gen(function*() {
  const signal = yield* WorkSignal.WorkSignal
  yield* Effect.forEach(stages, (stage) =>
    Effect.gen(function*() {
      const woken = yield* signal.next(stage, "1 hour")
      yield* woken
      console.log(`woke ${stage}`)
    }).pipe(Effect.forever, Effect.forkScoped))
  // LISTEN is issued by a forked fiber: give it a round trip before saying ready
  yield* Effect.sleep("300 millis")
  console.log("ready")
  return yield* Effect.never
})

const layer = PgJournalStore.layerWorkSignal.pipe(Layer.provideMerge(PgJournalStore.layer({ url: process.argv[2]!, maxConnections: 2 })))

program.pipe(Effect.scoped, Effect.provide(layer), NodeRuntime.runMain)
