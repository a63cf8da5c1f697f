/**
 * One heartbeat per stage keeps every lease of the process alive, and a run
 * whose lease is lost (another worker owns the row now) is stopped and
 * writes nothing, while the stage's other runs go on. A real store (SQLite
 * and PostgreSQL), real audio probed by ffprobe; the engine holds every run
 * until it is interrupted.
 */
import { describe, expect, it } from "@effect/vitest"
import { SqlClient } from "@effect/sql"
import { Deferred, Effect, Layer, Stream } from "effect"
import { Cleaner } from "../src/Cleaner.js"
import { JournalStore } from "../src/JournalStore.js"
import * as Pipeline from "../src/Pipeline.js"
import { Transcriber } from "../src/Transcriber.js"
import * as VoiceJournal from "../src/VoiceJournal.js"
import { audioBytes } from "./support/Audio.js"
import { eventually, realServices, type StoreKind } from "./support/PipelineHarness.js"

for (const kind of ["sqlite", "postgres"] as const satisfies ReadonlyArray<StoreKind>) {
  describe(`Pipeline heartbeat on ${kind}`, () => {
    it.scopedLive("one heartbeat renews every run's lease; a run whose row another worker took is stopped and writes nothing", () =>
      Effect.gen(function*() {
        const base = yield* realServices(kind, "vj-heartbeat-")
        const store = yield* Effect.provide(JournalStore, base)
        const beats: Array<number> = [] // leases per heartbeat call
        let singleBeats = 0
        const counting = {
          ...store,
          heartbeatBatch: ((jobs, leaseMillis) =>
            Effect.sync(() => beats.push(jobs.length)).pipe(Effect.zipRight(store.heartbeatBatch(jobs, leaseMillis)))) satisfies typeof store.heartbeatBatch,
          heartbeat: ((job, leaseMillis) =>
            Effect.sync(() => singleBeats++).pipe(Effect.zipRight(store.heartbeat(job, leaseMillis)))) satisfies typeof store.heartbeat
        }
        const started: Array<string> = []
        const interrupted: Array<string> = []
        const allStarted = yield* Deferred.make<void>()
        const services = Layer.mergeAll(
          Layer.succeedContext(base),
          Layer.succeed(JournalStore, counting),
          Layer.succeed(Transcriber, {
            transcribe: ({ entryId = "(no entry)" }) =>
              Effect.suspend(() => {
                started.push(entryId)
                return started.length === 3 ? Deferred.succeed(allStarted, undefined) : Effect.void
              }).pipe(
                Effect.zipRight(Effect.never),
                Effect.onInterrupt(() => Effect.sync(() => interrupted.push(entryId)))
              )
          }),
          Layer.succeed(Cleaner, { clean: () => Effect.dieMessage("no cleanup workers in this test") })
        )
        const ctx = yield* Layer.build(services)
        const journal = yield* Effect.provide(VoiceJournal.make({ notionEnabled: false, maxUploadBytes: 10 * 1024 * 1024 }), ctx)
        const { user } = yield* journal.createUser("u")
        for (let i = 0; i < 3; i++) {
          yield* journal.ingest(user.id, Stream.make(audioBytes("wav")), { originalFilename: `note-${i}.wav` })
        }
        const sql = yield* Effect.provide(SqlClient.SqlClient, base)
        const leases = sql<{ entryId: string; owner: string | null; expires: string | null; status: string }>`
          SELECT entry_id AS "entryId", lease_owner AS owner, lease_expires_at AS expires, status FROM transcriptions ORDER BY entry_id`
        yield* Layer.build(
          Pipeline.layer({
            concurrency: { transcription: 3, cleanup: 0, delivery: 0 },
            pollInterval: "50 millis",
            lease: "1 minute",
            heartbeat: "50 millis",
            shutdownGrace: "100 millis"
          }).pipe(Layer.provide(Layer.succeedContext(ctx)))
        )
        yield* Deferred.await(allStarted)
        const claimed = yield* leases
        expect(claimed.map((r) => r.status)).toEqual(["processing", "processing", "processing"])

        // the heartbeat renews all three, in one call for the three leases (none per run)
        yield* eventually(leases.pipe(Effect.map((rows) =>
          rows.every((r, i) => new Date(r.expires!).getTime() > new Date(claimed[i]!.expires!).getTime()) ? rows : undefined
        )))
        expect(beats).toContain(3)
        expect(singleBeats).toBe(0)

        // another worker takes the first row over (its lease expired there, say)
        const stolen = claimed[0]!.entryId
        yield* sql`UPDATE transcriptions SET lease_owner = 'another-node' WHERE entry_id = ${stolen}`
        yield* eventually(Effect.sync(() => interrupted.includes(stolen) ? true : undefined))
        const after = yield* leases
        // nothing written by the stopped run: the row is still the other worker's
        expect(after[0]).toMatchObject({ owner: "another-node", status: "processing" })
        // the other two still run, their leases still ours
        expect(interrupted).toEqual([stolen])
        expect(after.slice(1).map((r) => [r.status, r.owner === claimed[1]!.owner || r.owner === claimed[2]!.owner]))
          .toEqual([["processing", true], ["processing", true]])
      }))
  })
}
