/**
 * A stage whose runs are short claims ahead: besides its free slots, a
 * claim takes the rows its slots should start within `claimAhead`. Those
 * rows wait leased, their leases renewed by the stage's heartbeat, and are
 * handed back at shutdown (claimable at once, the claim not counted). A
 * real store (SQLite and PostgreSQL), real audio probed by ffprobe; the
 * engine answers the first run at once and holds the second.
 */
import { describe, expect, it } from "@effect/vitest"
import { SqlClient } from "@effect/sql"
import { Deferred, Effect, Exit, Layer, Scope, Stream } from "effect"
import { Cleaner } from "../src/Cleaner.js"
import { JournalStore } from "../src/JournalStore.js"
import * as Pipeline from "../src/Pipeline.js"
import { Transcriber } from "../src/Transcriber.js"
import * as VoiceJournal from "../src/VoiceJournal.js"
import { audioBytes } from "./support/Audio.js"
import { eventually, realServices, statusCounts, type StoreKind } from "./support/PipelineHarness.js"

for (const kind of ["sqlite", "postgres"] as const satisfies ReadonlyArray<StoreKind>) {
  describe(`Pipeline claims ahead on ${kind}`, () => {
    it.scopedLive("short runs claim ahead; the rows waiting keep their leases and are handed back uncounted at shutdown", () =>
      Effect.gen(function*() {
        const base = yield* realServices(kind, "vj-claim-ahead-")
        const store = yield* Effect.provide(JournalStore, base)
        const limits: Array<number> = []
        const recording = {
          ...store,
          claimBatch: ((stage, options) =>
            Effect.sync(() => stage === "transcription" && limits.push(options.limit)).pipe(
              Effect.zipRight(store.claimBatch(stage, options))
            )) satisfies typeof store.claimBatch
        }
        const calls: Array<string> = []
        const secondStarted = yield* Deferred.make<void>()
        const services = Layer.mergeAll(
          Layer.succeedContext(base),
          Layer.succeed(JournalStore, recording),
          Layer.succeed(Transcriber, {
            transcribe: ({ entryId = "(no entry)" }) =>
              Effect.suspend(() => {
                calls.push(entryId)
                // the first run answers at once; the second holds the only slot until interrupted
                return calls.length === 2 ? Deferred.succeed(secondStarted, undefined).pipe(Effect.zipRight(Effect.never)) : Effect.void
              }).pipe(Effect.as({ text: "words", engine: "test", language: null, durationSeconds: null, segments: null }))
          }),
          Layer.succeed(Cleaner, { clean: () => Effect.dieMessage("no cleanup workers in this test") })
        )
        const ctx = yield* Layer.build(services)
        const journal = yield* Effect.provide(VoiceJournal.make({ notionEnabled: false, maxUploadBytes: 10 * 1024 * 1024 }), ctx)
        const { user } = yield* journal.createUser("u")
        const n = 12
        for (let i = 0; i < n; i++) {
          yield* journal.ingest(user.id, Stream.make(audioBytes("wav")), { originalFilename: `note-${i}.wav` })
        }
        const sql = yield* Effect.provide(SqlClient.SqlClient, base)
        const rows = sql<{ entryId: string; owner: string | null; expires: string | null; status: string; attempts: number | string }>`
          SELECT entry_id AS "entryId", lease_owner AS owner, lease_expires_at AS expires, status, attempts
          FROM transcriptions ORDER BY entry_id`
        const pipeline = Pipeline.layer({
          concurrency: { transcription: 1, cleanup: 0, delivery: 0 },
          pollInterval: "50 millis",
          lease: "1 minute",
          heartbeat: "50 millis",
          shutdownGrace: "100 millis",
          // any run this suite's machine does is "short" against a minute
          claimAhead: "1 minute"
        }).pipe(Layer.provide(Layer.succeedContext(ctx)))
        const scope = yield* Scope.make()
        yield* Layer.buildWithScope(pipeline, scope)
        yield* Deferred.await(secondStarted)

        // one slot: the first claim took one row (no run time known yet), the next one slot's share ahead too
        expect(limits.slice(0, 2)).toEqual([1, 1 + 8])
        // the first run's completion may still be in its write (the second run can start before it commits)
        const settled = yield* eventually(rows.pipe(Effect.map((now) => now.some((r) => r.status === "completed") ? now : undefined)))
        const claimed = settled.filter((r) => r.status === "processing")
        expect(claimed.length).toBe(9) // the held run and the eight waiting for its slot
        expect(calls.length).toBe(2) // the waiting rows have not run
        // their leases are renewed with the run's
        yield* eventually(rows.pipe(Effect.map((now) =>
          claimed.every((c) => {
            const r = now.find((x) => x.entryId === c.entryId)!
            return r.status === "processing" && r.owner === c.owner && new Date(r.expires!).getTime() > new Date(c.expires!).getTime()
          }) ? now : undefined
        )))

        // shutdown: the held run is interrupted after the grace, the waiting rows handed back uncounted
        yield* Scope.close(scope, Exit.void)
        const after = yield* rows
        expect(after.filter((r) => r.status === "completed").length).toBe(1)
        const handedBack = after.filter((r) => r.status !== "completed")
        expect(handedBack.map((r) => [r.status, r.owner, Number(r.attempts)])).toEqual(
          Array.from({ length: n - 1 }, () => ["pending", null, 0])
        )

        // a new pipeline finishes the rest: every row completed once, each waiting row run exactly once
        yield* Layer.build(pipeline)
        yield* eventually(statusCounts(sql, "transcriptions").pipe(Effect.map((c) => c.completed === n ? c : undefined)))
        const waitedThenRan = claimed.map((c) => c.entryId).filter((id) => id !== calls[1])
        for (const id of waitedThenRan) expect(calls.filter((c) => c === id).length).toBe(1)
        expect(new Set(calls).size).toBe(n)
      }))
  })
}
