/**
 * The `JournalStore` conformance suite. Any adapter runs it against itself
 * (both bundled adapters do), so "implements the port" means "passes this":
 *
 * ```ts
 * import { JournalStoreSuite } from "@voice-journal/core/testing"
 * JournalStoreSuite.run("my adapter", { freshDatabase: … })
 * ```
 *
 * It needs `vitest` and `@effect/vitest` (optional peer dependencies).
 *
 * @since 0.1.0
 */
import { describe, expect, it } from "@effect/vitest"
import { SqlClient } from "@effect/sql"
import { Context, Effect, Exit, Layer, Option, type Scope, TestClock } from "effect"
import { type DestinationId, type Job, serverNotionDestination, type Stage, type UserId } from "./Domain.js"
import { JournalStore, type JournalStoreService } from "./JournalStore.js"

/**
 * How the suite reaches your database.
 * @since 0.1.0
 */
export interface Harness {
  /**
   * Creates a fresh, empty database for one test (removed when the scope
   * closes) and returns a layer for it. Every build of that layer must open
   * a NEW connection (or pool) to the same database, with the schema
   * migrated, so the suite can race separate connections.
   */
  readonly freshDatabase: Effect.Effect<
    Layer.Layer<JournalStore | SqlClient.SqlClient, unknown>,
    unknown,
    Scope.Scope
  >
}

type Services = { readonly store: JournalStoreService; readonly sql: SqlClient.SqlClient }

const connect = (layer: Layer.Layer<JournalStore | SqlClient.SqlClient, unknown>) =>
  Layer.build(layer).pipe(
    Effect.map((ctx): Services => ({ store: Context.get(ctx, JournalStore), sql: Context.get(ctx, SqlClient.SqlClient) })),
    Effect.orDie
  )

const lease = { workerId: "suite-worker", leaseMillis: 30_000 }
/** The server-wide Notion, as an implicit destination. */
const notion = [serverNotionDestination]
/** Queues a delivery of the entry to the server-wide Notion only. */
const toNotion = (store: JournalStoreService, userId: UserId, entryId: Parameters<JournalStoreService["getEntry"]>[1]) =>
  store.queueDeliveries(userId, entryId, { destinationIds: notion, implicit: notion }).pipe(Effect.map((ds) => ds[0]!))

const newEntry = (store: JournalStoreService, userId: UserId, n = 0) =>
  store.createEntry({
    userId,
    blobKey: `blob-${n}-${globalThis.crypto.randomUUID()}`,
    originalFilename: `note-${n}.mp3`,
    mimeType: "audio/mpeg",
    sizeBytes: 1000 + n,
    sha256: "0".repeat(64)
  })

const claim = (store: JournalStoreService, stage: Stage, workerId = lease.workerId) =>
  store.claimNext(stage, { ...lease, workerId }).pipe(
    Effect.flatMap(Option.match({
      onNone: () => Effect.dieMessage(`expected a ${stage} row to claim`),
      onSome: Effect.succeed
    }))
  )

/** An entry whose transcription and cleanup are completed and primary. */
const cleanedEntry = (store: JournalStoreService, userId: UserId) =>
  Effect.gen(function*() {
    const { entry } = yield* newEntry(store, userId)
    const t = yield* claim(store, "transcription")
    yield* store.completeTranscription(t, { text: "raw words", engine: "test", language: "en", durationSeconds: 1.5 })
    const c = yield* claim(store, "cleanup")
    yield* store.completeCleanup(c, { title: "A title", text: "Clean words.", model: "m" }, { implicit: [] })
    return entry
  })

const countRows = (sql: SqlClient.SqlClient, query: string) =>
  sql.unsafe<{ n: number | string }>(query).pipe(Effect.map((rows) => Number(rows[0]!.n)), Effect.orDie)

/**
 * Registers the suite under `name`.
 * @since 0.1.0
 */
export const run = (name: string, harness: Harness): void => {
  const withStore = <A, E>(f: (s: Services, layer: Layer.Layer<JournalStore | SqlClient.SqlClient, unknown>) => Effect.Effect<A, E, Scope.Scope>) =>
    Effect.gen(function*() {
      const layer = yield* Effect.orDie(harness.freshDatabase)
      const services = yield* connect(layer)
      return yield* f(services, layer)
    })

  describe(`JournalStore conformance: ${name}`, () => {
    it.scoped("users and API keys: lookup by hash, revocation, owner-scoped", () =>
      withStore(({ store }) =>
        Effect.gen(function*() {
          const alice = yield* store.createUser("alice")
          const bob = yield* store.createUser("bob")
          const key = yield* store.createApiKey({ userId: alice.id, name: "phone", keyHash: "hash-a" })
          const found = yield* store.findApiKeyByHash("hash-a")
          expect(Option.map(found, (f) => f.user.id)).toEqual(Option.some(alice.id))
          expect(Option.isNone(yield* store.findApiKeyByHash("hash-unknown"))).toBe(true)
          const wrongOwner = yield* Effect.flip(store.revokeApiKey(bob.id, key.id))
          expect(wrongOwner._tag).toBe("NotFound")
          yield* store.revokeApiKey(alice.id, key.id)
          expect(Option.isNone(yield* store.findApiKeyByHash("hash-a"))).toBe(true)
          expect((yield* store.listApiKeys(alice.id)).map((k) => k.revokedAt !== null)).toEqual([true])
        })
      ))

    it.scoped("createEntry writes the entry and its first transcription job together", () =>
      withStore(({ store }) =>
        Effect.gen(function*() {
          const user = yield* store.createUser("u")
          const { entry, transcription } = yield* newEntry(store, user.id)
          expect(transcription.entryId).toBe(entry.id)
          expect(transcription.status).toBe("pending")
          expect(transcription.makePrimary).toBe(true)
          const fetched = yield* store.getEntry(user.id, entry.id)
          expect(fetched.sizeBytes).toBe(1000)
          expect(fetched.createdAt).toBeInstanceOf(Date)
        })
      ))

    it.scoped("pagination: newest first, limit/offset, totals per user", () =>
      withStore(({ store }) =>
        Effect.gen(function*() {
          const alice = yield* store.createUser("alice")
          const bob = yield* store.createUser("bob")
          const made: Array<string> = []
          for (let i = 0; i < 25; i++) {
            yield* TestClock.adjust("1 second")
            made.push((yield* newEntry(store, alice.id, i)).entry.id)
          }
          for (let i = 0; i < 3; i++) yield* newEntry(store, bob.id, i)
          const newestFirst = [...made].reverse()
          const p1 = yield* store.listEntries(alice.id, { limit: 10, offset: 0 })
          expect(p1.total).toBe(25)
          expect(p1.items.map((e) => e.id)).toEqual(newestFirst.slice(0, 10))
          const p3 = yield* store.listEntries(alice.id, { limit: 10, offset: 20 })
          expect(p3.items.map((e) => e.id)).toEqual(newestFirst.slice(20))
          const beyond = yield* store.listEntries(alice.id, { limit: 10, offset: 30 })
          expect(beyond.items).toEqual([])
          expect(beyond.total).toBe(25)
          const bobs = yield* store.listEntries(bob.id, { limit: 100, offset: 0 })
          expect(bobs.total).toBe(3)
          expect(bobs.items.every((e) => e.userId === bob.id)).toBe(true)
        })
      ))

    it.scoped("list items carry their stages' status, the cleanup title and the duration (primary, else newest)", () =>
      withStore(({ store }) =>
        Effect.gen(function*() {
          const user = yield* store.createUser("u")
          const other = yield* store.createUser("other")
          const done = yield* cleanedEntry(store, user.id)
          yield* toNotion(store, user.id, done.id)
          yield* store.completeDelivery(yield* claim(store, "delivery"), "page-1")
          // a newer, not yet primary run does not hide the primary one
          yield* store.addTranscription(user.id, done.id, { makePrimary: false })
          yield* store.addCleanup(user.id, done.id, { makePrimary: false })
          const fresh = (yield* newEntry(store, user.id, 1)).entry
          yield* newEntry(store, other.id, 2)
          const page = yield* store.listEntries(user.id, { limit: 20, offset: 0 })
          expect(page.total).toBe(2)
          expect(page.items.length).toBe(2)
          const byId = new Map(page.items.map((i) => [i.id as string, i]))
          expect(byId.get(done.id)).toMatchObject({
            id: done.id,
            sizeBytes: done.sizeBytes,
            transcriptionStatus: "completed",
            durationSeconds: 1.5,
            cleanupStatus: "completed",
            title: "A title",
            notionSyncStatus: "success"
          })
          expect(byId.get(fresh.id)).toMatchObject({
            transcriptionStatus: "pending",
            durationSeconds: null,
            cleanupStatus: null,
            title: null,
            notionSyncStatus: null
          })
        })
      ))

    it.scoped("owner scoping: another user's ids are NotFound on every read and write", () =>
      withStore(({ sql, store }) =>
        Effect.gen(function*() {
          const alice = yield* store.createUser("alice")
          const mallory = yield* store.createUser("mallory")
          const entry = yield* cleanedEntry(store, alice.id)
          const sync = yield* toNotion(store, alice.id, entry.id)
          const hook = yield* store.createDestination({
            id: "d-alice" as DestinationId, userId: alice.id, kind: "webhook", name: "hook", config: { url: "https://example.com/" }, sealedSecret: "v1.x"
          })
          const [t] = yield* store.listTranscriptions(alice.id, entry.id)
          const [c] = yield* store.listCleanups(alice.id, entry.id)
          const attempts: ReadonlyArray<Effect.Effect<unknown, { readonly _tag: string }>> = [
            store.getEntry(mallory.id, entry.id),
            store.deleteEntry(mallory.id, entry.id),
            store.listTranscriptions(mallory.id, entry.id),
            store.getTranscription(mallory.id, t!.id),
            store.addTranscription(mallory.id, entry.id, { makePrimary: true }),
            store.setPrimaryTranscription(mallory.id, entry.id, t!.id),
            store.listCleanups(mallory.id, entry.id),
            store.getCleanup(mallory.id, c!.id),
            store.addCleanup(mallory.id, entry.id, { makePrimary: true }),
            store.setPrimaryCleanup(mallory.id, entry.id, c!.id),
            store.queueDeliveries(mallory.id, entry.id, { implicit: notion }),
            store.getDelivery(mallory.id, sync.id),
            store.retryDelivery(mallory.id, sync.id),
            store.getDestination(mallory.id, hook.id),
            store.deleteDestination(mallory.id, hook.id),
            store.disableDestination(mallory.id, hook.id, "x"),
            // alice's entry, mallory's (not yet existing) destination id: still NotFound, nothing queued
            store.queueDeliveries(alice.id, entry.id, { destinationIds: ["d-mallory" as DestinationId], implicit: notion })
          ]
          for (const attempt of attempts) {
            const error = yield* Effect.flip(attempt)
            expect(error._tag).toBe("NotFound")
          }
          expect((yield* store.listEntries(mallory.id, { limit: 20, offset: 0 })).total).toBe(0)
          expect((yield* store.listDeliveries(mallory.id, { limit: 20, offset: 0 })).total).toBe(0)
          expect((yield* store.listDeliveries(mallory.id, { limit: 20, offset: 0, entryId: entry.id })).total).toBe(0)
          expect(yield* store.listDestinations(mallory.id)).toEqual([])
          expect((yield* store.getDestination(alice.id, hook.id)).disabledAt).toBeNull()
          expect(yield* countRows(sql, "SELECT count(*) AS n FROM deliveries")).toBe(1)
          // nothing of alice's was touched
          expect(yield* countRows(sql, "SELECT count(*) AS n FROM transcriptions")).toBe(1)
          expect(yield* countRows(sql, "SELECT count(*) AS n FROM cleaned_entries")).toBe(1)
          expect((yield* store.getEntry(alice.id, entry.id)).id).toBe(entry.id)
        })
      ))

    it.scoped("the stage chain: transcription → cleanup → delivery, each completed in one step", () =>
      withStore(({ store }) =>
        Effect.gen(function*() {
          const user = yield* store.createUser("u")
          const { entry } = yield* newEntry(store, user.id)
          const t = yield* claim(store, "transcription")
          expect(t.attempts).toBe(1)
          expect(t.entryId).toBe(entry.id)
          yield* store.completeTranscription(t, { text: "hello", engine: "e", language: null, durationSeconds: null })
          const [transcription] = yield* store.listTranscriptions(user.id, entry.id)
          expect(transcription!.status).toBe("completed")
          expect(transcription!.isPrimary).toBe(true)
          expect(transcription!.leaseOwner).toBeNull()
          const c = yield* claim(store, "cleanup")
          yield* store.completeCleanup(c, { title: "T", text: "Hello.", model: "m" }, { implicit: notion })
          const [cleanup] = yield* store.listCleanups(user.id, entry.id)
          expect(cleanup!.isPrimary).toBe(true)
          expect(cleanup!.transcriptionId).toBe(transcription!.id)
          const n = yield* claim(store, "delivery")
          yield* store.recordExternalRef(n, "page-1")
          expect((yield* store.listDeliveries(user.id, { limit: 20, offset: 0, entryId: entry.id })).items[0]!.externalRef).toBe("page-1")
          yield* store.completeDelivery(n, "page-1")
          const synced = yield* store.listDeliveries(user.id, { limit: 20, offset: 0, status: "success" })
          expect(synced.total).toBe(1)
          expect(synced.items[0]!.destinationId).toBe(serverNotionDestination)
          expect(Option.isNone(yield* store.claimNext("delivery", lease))).toBe(true)
          // a second request while none is open queues a new one, starting from the page already made;
          // while one is open, reuses it
          const again = yield* toNotion(store, user.id, entry.id)
          const same = yield* toNotion(store, user.id, entry.id)
          expect(same.id).toBe(again.id)
          expect(again.externalRef).toBe("page-1")
        })
      ))

    it.scoped("concurrent claimers on separate connections never share a row and leave none behind", () =>
      withStore((first, layer) =>
        Effect.gen(function*() {
          const user = yield* first.store.createUser("u")
          const rows = 120
          for (let i = 0; i < rows; i++) yield* newEntry(first.store, user.id, i)
          const connections = [first, ...(yield* Effect.all([connect(layer), connect(layer), connect(layer)]))]
          const claimers = connections.flatMap((c, ci) =>
            [0, 1, 2].map((fi) => ({ store: c.store, workerId: `w${ci}-${fi}` }))
          )
          const claimedBy = yield* Effect.forEach(claimers, ({ store, workerId }) =>
            Effect.gen(function*() {
              const mine: Array<string> = []
              while (true) {
                const job = yield* store.claimNext("transcription", { workerId, leaseMillis: 60_000 })
                if (Option.isNone(job)) return mine
                mine.push(job.value.id)
                yield* Effect.yieldNow()
              }
            }), { concurrency: "unbounded" })
          const all = claimedBy.flat()
          expect(all.length).toBe(rows)
          expect(new Set(all).size).toBe(rows)
          expect(yield* countRows(first.sql, "SELECT count(*) AS n FROM transcriptions WHERE status <> 'processing'"))
            .toBe(0)
          expect(yield* countRows(first.sql, "SELECT count(*) AS n FROM transcriptions WHERE attempts <> 1")).toBe(0)
        })
      ))

    it.scoped("an expired lease makes the row claimable again and fences out the old worker", () =>
      withStore(({ store }) =>
        Effect.gen(function*() {
          const user = yield* store.createUser("u")
          yield* newEntry(store, user.id)
          const old = yield* claim(store, "transcription", "worker-a")
          expect(Option.isNone(yield* store.claimNext("transcription", { ...lease, workerId: "worker-b" }))).toBe(true)
          // a heartbeat keeps it: 20 s + 20 s is past the first expiry but within the renewed one
          yield* TestClock.adjust("20 seconds")
          const renewed = yield* store.heartbeat(old, 30_000)
          yield* TestClock.adjust("20 seconds")
          expect(Option.isNone(yield* store.claimNext("transcription", { ...lease, workerId: "worker-b" }))).toBe(true)
          // the worker dies: no more heartbeats
          yield* TestClock.adjust("11 seconds")
          const taken = yield* claim(store, "transcription", "worker-b")
          expect(taken.id).toBe(old.id)
          expect(taken.attempts).toBe(2)
          const lost = yield* Effect.flip(
            store.completeTranscription(renewed, { text: "late", engine: "e", language: null, durationSeconds: null })
          )
          expect(lost._tag).toBe("LeaseLost")
          expect((yield* Effect.flip(store.heartbeat(renewed, 30_000)))._tag).toBe("LeaseLost")
          yield* store.completeTranscription(taken, { text: "ok", engine: "e", language: null, durationSeconds: null })
          const [t] = yield* store.listTranscriptions(user.id, taken.entryId)
          expect(t!.text).toBe("ok")
        })
      ))

    it.scoped("temporary failure waits for next_attempt_at; permanent failure is final; release gives the row back", () =>
      withStore(({ store }) =>
        Effect.gen(function*() {
          const user = yield* store.createUser("u")
          yield* newEntry(store, user.id)
          const job = yield* claim(store, "transcription")
          const now = yield* TestClock.currentTimeMillis
          yield* store.failTemporarily(job, { error: "ollama down", nextAttemptAt: new Date(now + 60_000) })
          let [t] = yield* store.listTranscriptions(user.id, job.entryId)
          expect(t!.status).toBe("retrying")
          expect(t!.lastError).toBe("ollama down")
          expect(Option.isNone(yield* store.claimNext("transcription", lease))).toBe(true)
          yield* TestClock.adjust("61 seconds")
          const second = yield* claim(store, "transcription")
          expect(second.attempts).toBe(2)
          yield* store.releaseLease(second)
          ;[t] = yield* store.listTranscriptions(user.id, job.entryId)
          expect(t!.status).toBe("retrying")
          expect(t!.attempts).toBe(1)
          const third = yield* claim(store, "transcription")
          expect(third.attempts).toBe(2)
          yield* store.failPermanently(third, { error: "401 from engine" })
          ;[t] = yield* store.listTranscriptions(user.id, job.entryId)
          expect(t!.status).toBe("failed")
          yield* TestClock.adjust("1 day")
          expect(Option.isNone(yield* store.claimNext("transcription", lease))).toBe(true)
        })
      ))

    it.scoped("the database itself rejects a second primary (raw insert)", () =>
      withStore(({ sql, store }) =>
        Effect.gen(function*() {
          const user = yield* store.createUser("u")
          const entry = yield* cleanedEntry(store, user.id)
          const now = new Date().toISOString()
          const insertPrimaryTranscription = sql`INSERT INTO transcriptions
            (id, entry_id, user_id, is_primary, make_primary, status, attempts, next_attempt_at, created_at, updated_at)
            VALUES (${globalThis.crypto.randomUUID()}, ${entry.id}, ${user.id}, 1, 0, 'completed', 1, ${now}, ${now}, ${now})`
          expect(Exit.isFailure(yield* Effect.exit(insertPrimaryTranscription))).toBe(true)
          const [t] = yield* store.listTranscriptions(user.id, entry.id)
          const insertPrimaryCleanup = sql`INSERT INTO cleaned_entries
            (id, entry_id, transcription_id, user_id, is_primary, make_primary, status, attempts, next_attempt_at, created_at, updated_at)
            VALUES (${globalThis.crypto.randomUUID()}, ${entry.id}, ${t!.id}, ${user.id}, 1, 0, 'completed', 1, ${now}, ${now}, ${now})`
          expect(Exit.isFailure(yield* Effect.exit(insertPrimaryCleanup))).toBe(true)
          // a non-primary row is fine
          const insertSecondary = sql`INSERT INTO transcriptions
            (id, entry_id, user_id, is_primary, make_primary, status, attempts, next_attempt_at, created_at, updated_at)
            VALUES (${globalThis.crypto.randomUUID()}, ${entry.id}, ${user.id}, 0, 0, 'completed', 1, ${now}, ${now}, ${now})`
          expect(Exit.isSuccess(yield* Effect.exit(insertSecondary))).toBe(true)
        })
      ))

    it.scoped("switching the primary is atomic, also under concurrent switches from separate connections", () =>
      withStore((first, layer) =>
        Effect.gen(function*() {
          const { sql, store } = first
          const user = yield* store.createUser("u")
          const { entry } = yield* newEntry(store, user.id)
          const done = (job: Job) =>
            store.completeTranscription(job, { text: job.id, engine: "e", language: null, durationSeconds: null })
          yield* done(yield* claim(store, "transcription"))
          const ids: Array<string> = []
          for (let i = 0; i < 3; i++) {
            const t = yield* store.addTranscription(user.id, entry.id, { makePrimary: false })
            ids.push(t.id)
            yield* done(yield* claim(store, "transcription"))
          }
          const primaries = () =>
            countRows(sql, `SELECT count(*) AS n FROM transcriptions WHERE is_primary = 1 AND entry_id = '${entry.id}'`)
          expect(yield* primaries()).toBe(1)
          const unfinished = yield* store.addTranscription(user.id, entry.id, { makePrimary: false })
          expect((yield* Effect.flip(store.setPrimaryTranscription(user.id, entry.id, unfinished.id)))._tag).toBe("InvalidState")
          const others = yield* Effect.all([connect(layer), connect(layer)])
          const stores = [store, ...others.map((o) => o.store)]
          const results = yield* Effect.forEach(
            Array.from({ length: 12 }, (_, i) => i),
            (i) => Effect.either(stores[i % stores.length]!.setPrimaryTranscription(user.id, entry.id, ids[i % ids.length]! as never)),
            { concurrency: "unbounded" }
          )
          expect(results.some((r) => r._tag === "Right")).toBe(true)
          for (const r of results) {
            if (r._tag === "Left") expect(["PrimaryConflict", "StoreError"]).toContain(r.left._tag)
          }
          expect(yield* primaries()).toBe(1)
          const chosen = yield* store.setPrimaryTranscription(user.id, entry.id, ids[0]! as never)
          expect(chosen.isPrimary).toBe(true)
          expect(yield* primaries()).toBe(1)
        })
      ))

    it.scoped("primary switches check the parent: another entry's transcription or cleanup is NotFound and nothing changes", () =>
      withStore(({ sql, store }) =>
        Effect.gen(function*() {
          const user = yield* store.createUser("u")
          const a = yield* cleanedEntry(store, user.id)
          const b = yield* cleanedEntry(store, user.id)
          // a second completed, not primary, transcription and cleanup on b
          yield* store.addTranscription(user.id, b.id, { makePrimary: false })
          yield* store.completeTranscription(yield* claim(store, "transcription"), { text: "again", engine: "e", language: null, durationSeconds: null })
          yield* store.addCleanup(user.id, b.id, { makePrimary: false })
          yield* store.completeCleanup(yield* claim(store, "cleanup"), { title: "T", text: "Again.", model: "m" }, { implicit: [] })
          const t2 = (yield* store.listTranscriptions(user.id, b.id)).find((t) => !t.isPrimary)!
          const c2 = (yield* store.listCleanups(user.id, b.id)).find((c) => !c.isPrimary)!
          expect([t2.status, c2.status]).toEqual(["completed", "completed"])
          const snapshot = Effect.all([
            sql.unsafe(`SELECT id, is_primary, updated_at FROM transcriptions ORDER BY id`),
            sql.unsafe(`SELECT id, is_primary, updated_at FROM cleaned_entries ORDER BY id`),
            sql.unsafe(`SELECT id, updated_at FROM voice_entries ORDER BY id`)
          ]).pipe(Effect.orDie)
          const before = yield* snapshot
          expect((yield* Effect.flip(store.setPrimaryTranscription(user.id, a.id, t2.id)))._tag).toBe("NotFound")
          expect((yield* Effect.flip(store.setPrimaryCleanup(user.id, a.id, c2.id)))._tag).toBe("NotFound")
          expect(yield* snapshot).toEqual(before)
          // through its own entry the switch works
          expect((yield* store.setPrimaryTranscription(user.id, b.id, t2.id)).isPrimary).toBe(true)
          expect((yield* store.setPrimaryCleanup(user.id, b.id, c2.id)).isPrimary).toBe(true)
          expect((yield* store.listTranscriptions(user.id, a.id)).map((t) => t.isPrimary)).toEqual([true])
        })
      ))

    it.scoped("deleting an entry removes its stage rows and fences out a worker holding one", () =>
      withStore(({ sql, store }) =>
        Effect.gen(function*() {
          const user = yield* store.createUser("u")
          const { entry } = yield* newEntry(store, user.id)
          const job = yield* claim(store, "transcription")
          const deleted = yield* store.deleteEntry(user.id, entry.id)
          expect(deleted.blobKey).toBe(entry.blobKey)
          expect((yield* Effect.flip(store.getEntry(user.id, entry.id)))._tag).toBe("NotFound")
          expect(yield* countRows(sql, "SELECT count(*) AS n FROM transcriptions")).toBe(0)
          const late = yield* Effect.flip(
            store.completeTranscription(job, { text: "x", engine: "e", language: null, durationSeconds: null })
          )
          expect(late._tag).toBe("LeaseLost")
        })
      ))

    it.scoped("deliveries: listed by status with totals; only failed ones can be retried", () =>
      withStore(({ store }) =>
        Effect.gen(function*() {
          const user = yield* store.createUser("u")
          const entry = yield* cleanedEntry(store, user.id)
          const sync = yield* toNotion(store, user.id, entry.id)
          expect((yield* Effect.flip(store.retryDelivery(user.id, sync.id)))._tag).toBe("InvalidState")
          const job = yield* claim(store, "delivery")
          yield* store.failPermanently(job, { error: "401 unauthorized" })
          const failed = yield* store.listDeliveries(user.id, { limit: 20, offset: 0, status: "failed" })
          expect(failed.total).toBe(1)
          expect(failed.items[0]!.lastError).toBe("401 unauthorized")
          expect((yield* store.listDeliveries(user.id, { limit: 20, offset: 0, status: "pending" })).total).toBe(0)
          const retried = yield* store.retryDelivery(user.id, sync.id)
          expect(retried.status).toBe("pending")
          expect(retried.attempts).toBe(0)
          const again = yield* claim(store, "delivery")
          expect(again.id).toBe(sync.id)
          expect(yield* store.ping).toBeUndefined()
        })
      ))

    it.scoped("destinations: a completed cleanup queues one delivery per enabled destination (and the implicit ones); disabled get none; deleting one removes its log", () =>
      withStore(({ sql, store }) =>
        Effect.gen(function*() {
          const user = yield* store.createUser("u")
          const make = (id: string, kind: "webhook" | "markdown") =>
            store.createDestination({ id: id as DestinationId, userId: user.id, kind, name: id, config: { n: 1 }, sealedSecret: kind === "webhook" ? "v1.sealed" : null })
          const hook = yield* make("d1-hook", "webhook")
          const folder = yield* make("d2-folder", "markdown")
          const off = yield* make("d3-off", "webhook")
          yield* store.disableDestination(user.id, off.id, "410 Gone")
          yield* store.disableDestination(user.id, off.id, "later reason")
          const listed = yield* store.listDestinations(user.id)
          expect(listed.map((d) => d.id)).toEqual(["d1-hook", "d2-folder", "d3-off"]) // oldest first (same clock here: then by id)
          expect(listed[0]!.config).toEqual({ n: 1 })
          expect(listed[0]!.sealedSecret).toBe("v1.sealed")
          expect(listed[2]!.disabledReason).toBe("410 Gone") // the first reason is kept
          expect(yield* store.hasSealedSecrets).toBe(true)

          const { entry } = yield* newEntry(store, user.id)
          yield* store.completeTranscription(yield* claim(store, "transcription"), { text: "w", engine: "e", language: null, durationSeconds: null })
          yield* store.completeCleanup(yield* claim(store, "cleanup"), { title: "T", text: "x", model: "m" }, { implicit: notion })
          const log = yield* store.listDeliveries(user.id, { limit: 20, offset: 0, entryId: entry.id })
          expect(log.items.map((d) => d.destinationId).sort()).toEqual([serverNotionDestination, hook.id, folder.id].sort())
          expect((yield* store.listDeliveries(user.id, { limit: 20, offset: 0, destinationId: hook.id })).total).toBe(1)
          // asked for explicitly, a disabled destination is refused
          expect((yield* Effect.flip(store.queueDeliveries(user.id, entry.id, { destinationIds: [off.id], implicit: notion })))._tag).toBe("InvalidState")

          yield* store.deleteDestination(user.id, hook.id)
          expect((yield* Effect.flip(store.getDestination(user.id, hook.id)))._tag).toBe("NotFound")
          expect(yield* countRows(sql, `SELECT count(*) AS n FROM deliveries WHERE destination_id = 'd1-hook'`)).toBe(0)
          expect(yield* countRows(sql, "SELECT count(*) AS n FROM deliveries")).toBe(2)
        })
      ))

    it.scoped("existingBlobKeys: the keys some entry points to (any user, any number of keys); a deleted entry's key is not", () =>
      withStore(({ store }) =>
        Effect.gen(function*() {
          const alice = yield* store.createUser("alice")
          const bob = yield* store.createUser("bob")
          const kept = (yield* newEntry(store, alice.id, 1)).entry
          const other = (yield* newEntry(store, bob.id, 2)).entry
          const deleted = (yield* newEntry(store, alice.id, 3)).entry
          yield* store.deleteEntry(alice.id, deleted.id)
          // more keys than any one statement should bind (SQLite's old limit is 999)
          const unknown = Array.from({ length: 1500 }, (_, i) => `no-such-blob-${i}`)
          const asked = [...unknown.slice(0, 700), kept.blobKey, deleted.blobKey, ...unknown.slice(700), other.blobKey]
          const found = yield* store.existingBlobKeys(asked)
          expect([...found].sort()).toEqual([kept.blobKey, other.blobKey].sort())
          expect((yield* store.existingBlobKeys([])).size).toBe(0)
        })
      ))

    it.scoped("findEntryBySha256: the user's entry with that audio hash, not another user's, not a deleted one; getUser", () =>
      withStore(({ store }) =>
        Effect.gen(function*() {
          const alice = yield* store.createUser("alice")
          const bob = yield* store.createUser("bob")
          const hash = (c: string) => c.repeat(64)
          const input = { blobKey: "", originalFilename: "a.m4a", mimeType: "audio/mp4", sizeBytes: 10 }
          const { entry } = yield* store.createEntry({ ...input, userId: alice.id, blobKey: "k-a", sha256: hash("a") })
          yield* store.createEntry({ ...input, userId: bob.id, blobKey: "k-b", sha256: hash("b") })
          const gone = (yield* store.createEntry({ ...input, userId: alice.id, blobKey: "k-c", sha256: hash("c") })).entry
          yield* store.deleteEntry(alice.id, gone.id)
          const found = yield* store.findEntryBySha256(alice.id, hash("a"))
          expect(Option.map(found, (e) => e.id)).toEqual(Option.some(entry.id))
          expect(Option.isNone(yield* store.findEntryBySha256(alice.id, hash("b")))).toBe(true)
          expect(Option.isNone(yield* store.findEntryBySha256(alice.id, hash("c")))).toBe(true)
          expect(Option.isSome(yield* store.findEntryBySha256(bob.id, hash("b")))).toBe(true)
          expect((yield* store.getUser(alice.id)).name).toBe("alice")
          expect((yield* Effect.flip(store.getUser("no-such-user" as UserId)))._tag).toBe("NotFound")
        })
      ))
  })
}
