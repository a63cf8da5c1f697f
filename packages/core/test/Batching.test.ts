/**
 * The pipeline batches by itself: slots free at the same moment are claimed
 * in one `claimBatch`, and runs that finish together are written in one
 * `completeTranscriptions` transaction. A real store (SQLite and
 * PostgreSQL) wrapped to record each call, real audio probed by ffprobe; the
 * engine holds every run until all four are in, then answers them at once.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Layer, Stream } from "effect"
import { Cleaner } from "../src/Cleaner.js"
import { JournalStore } from "../src/JournalStore.js"
import * as Pipeline from "../src/Pipeline.js"
import { Transcriber } from "../src/Transcriber.js"
import * as VoiceJournal from "../src/VoiceJournal.js"
import { audioBytes } from "./support/Audio.js"
import { eventually, realServices, statusCounts, type StoreKind } from "./support/PipelineHarness.js"
import { SqlClient } from "@effect/sql"

for (const kind of ["sqlite", "postgres"] as const satisfies ReadonlyArray<StoreKind>) {
  describe(`Pipeline batches on ${kind}`, () => {
    it.scopedLive("four slots free together are one claim; four runs finishing together are one transaction", () =>
      Effect.gen(function*() {
        const base = yield* realServices(kind, "vj-batching-")
        const store = yield* Effect.provide(JournalStore, base)
        const claims: Array<number> = []
        const writes: Array<number> = []
        const recording = {
          ...store,
          claimBatch: ((stage, options) =>
            store.claimBatch(stage, options).pipe(
              Effect.tap((jobs) => Effect.sync(() => jobs.length > 0 && stage === "transcription" && claims.push(jobs.length)))
            )) satisfies typeof store.claimBatch,
          completeTranscriptions: ((items) =>
            Effect.sync(() => writes.push(items.length)).pipe(Effect.zipRight(store.completeTranscriptions(items)))) satisfies typeof store.completeTranscriptions
        }
        const four = yield* Deferred.make<void>()
        let calls = 0
        const services = Layer.mergeAll(
          Layer.succeedContext(base),
          Layer.succeed(JournalStore, recording),
          Layer.succeed(Transcriber, {
            transcribe: () =>
              Effect.suspend(() => (++calls === 4 ? Deferred.succeed(four, undefined) : Effect.void)).pipe(
                Effect.zipRight(Deferred.await(four)),
                Effect.as({ text: "held words", engine: "held", language: null, durationSeconds: null, segments: null })
              )
          }),
          Layer.succeed(Cleaner, { clean: () => Effect.dieMessage("no cleanup workers in this test") })
        )
        const ctx = yield* Layer.build(services)
        const journal = yield* Effect.provide(VoiceJournal.make({ notionEnabled: false, maxUploadBytes: 10 * 1024 * 1024 }), ctx)
        const { user } = yield* journal.createUser("u")
        for (let i = 0; i < 4; i++) {
          yield* journal.ingest(user.id, Stream.make(audioBytes("wav")), { originalFilename: `note-${i}.wav` })
        }
        yield* Layer.build(
          Pipeline.layer({
            concurrency: { transcription: 4, cleanup: 0, delivery: 0 },
            pollInterval: "50 millis",
            // long windows: the batches end when no run is working, never by the clock (no timing in this test)
            batchWindow: "1 minute"
          }).pipe(Layer.provide(Layer.succeedContext(ctx)))
        )
        const sql = yield* Effect.provide(SqlClient.SqlClient, base)
        yield* eventually(statusCounts(sql, "transcriptions").pipe(Effect.map((c) => c.completed === 4 ? c : undefined)))
        expect(claims).toEqual([4])
        expect(writes).toEqual([4])
        expect(yield* statusCounts(sql, "cleaned_entries")).toEqual({ pending: 4 })
      }))
  })
}
