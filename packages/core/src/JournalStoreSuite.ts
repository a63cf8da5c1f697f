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
import { Clock, Context, Effect, Exit, Layer, Option, type Scope, TestClock } from "effect"
import type { Job, Stage, UserId } from "./Domain.js"
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

/** The idempotency key `newEntry` passes, if one is provided. */
class IdempotencySetting extends Context.Tag("JournalStoreSuite/IdempotencySetting")<
  IdempotencySetting,
  { readonly key: string; readonly notBefore: Date }
>() {}

const newEntry = (store: JournalStoreService, userId: UserId, n = 0) =>
  Effect.flatMap(Effect.serviceOption(IdempotencySetting), (idempotency) =>
    store.createEntry({
      userId,
      blobKey: `blob-${n}-${globalThis.crypto.randomUUID()}`,
      originalFilename: `note-${n}.mp3`,
      mimeType: "audio/mpeg",
      sizeBytes: 1000 + n,
      sha256: "0".repeat(64),
      idempotency: Option.getOrUndefined(idempotency)
    }))

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
    yield* store.completeCleanup(c, { title: "A title", text: "Clean words.", model: "m" }, { queueNotionSync: false })
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
          yield* store.addNotionSync(user.id, done.id)
          yield* store.completeNotionSync(yield* claim(store, "notion"), "page-1")
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
          const sync = yield* store.addNotionSync(alice.id, entry.id)
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
            store.addNotionSync(mallory.id, entry.id),
            store.getNotionSync(mallory.id, sync.id),
            store.listNotionSyncsForEntry(mallory.id, entry.id),
            store.retryNotionSync(mallory.id, sync.id)
          ]
          for (const attempt of attempts) {
            const error = yield* Effect.flip(attempt)
            expect(error._tag).toBe("NotFound")
          }
          expect((yield* store.listEntries(mallory.id, { limit: 20, offset: 0 })).total).toBe(0)
          expect((yield* store.listNotionSyncs(mallory.id, { limit: 20, offset: 0 })).total).toBe(0)
          // nothing of alice's was touched
          expect(yield* countRows(sql, "SELECT count(*) AS n FROM transcriptions")).toBe(1)
          expect(yield* countRows(sql, "SELECT count(*) AS n FROM cleaned_entries")).toBe(1)
          expect((yield* store.getEntry(alice.id, entry.id)).id).toBe(entry.id)
        })
      ))

    it.scoped("the stage chain: transcription → cleanup → Notion sync, each completed in one step", () =>
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
          yield* store.completeCleanup(c, { title: "T", text: "Hello.", model: "m" }, { queueNotionSync: true })
          const [cleanup] = yield* store.listCleanups(user.id, entry.id)
          expect(cleanup!.isPrimary).toBe(true)
          expect(cleanup!.transcriptionId).toBe(transcription!.id)
          const n = yield* claim(store, "notion")
          yield* store.recordNotionPage(n, "page-1")
          expect((yield* store.listNotionSyncsForEntry(user.id, entry.id))[0]!.notionPageId).toBe("page-1")
          yield* store.completeNotionSync(n, "page-1")
          const synced = yield* store.listNotionSyncs(user.id, { limit: 20, offset: 0, status: "success" })
          expect(synced.total).toBe(1)
          expect(Option.isNone(yield* store.claimNext("notion", lease))).toBe(true)
          // a second sync request while none is open queues a new one; while one is open, reuses it
          const again = yield* store.addNotionSync(user.id, entry.id)
          const same = yield* store.addNotionSync(user.id, entry.id)
          expect(same.id).toBe(again.id)
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
          yield* store.completeCleanup(yield* claim(store, "cleanup"), { title: "T", text: "Again.", model: "m" }, { queueNotionSync: false })
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

    it.scoped("Notion syncs: listed by status with totals; only failed ones can be retried", () =>
      withStore(({ store }) =>
        Effect.gen(function*() {
          const user = yield* store.createUser("u")
          const entry = yield* cleanedEntry(store, user.id)
          const sync = yield* store.addNotionSync(user.id, entry.id)
          expect((yield* Effect.flip(store.retryNotionSync(user.id, sync.id)))._tag).toBe("InvalidState")
          const job = yield* claim(store, "notion")
          yield* store.failPermanently(job, { error: "401 unauthorized" })
          const failed = yield* store.listNotionSyncs(user.id, { limit: 20, offset: 0, status: "failed" })
          expect(failed.total).toBe(1)
          expect(failed.items[0]!.lastError).toBe("401 unauthorized")
          expect((yield* store.listNotionSyncs(user.id, { limit: 20, offset: 0, status: "pending" })).total).toBe(0)
          const retried = yield* store.retryNotionSync(user.id, sync.id)
          expect(retried.status).toBe("pending")
          expect(retried.attempts).toBe(0)
          const again = yield* claim(store, "notion")
          expect(again.id).toBe(sync.id)
          expect(yield* store.ping).toBeUndefined()
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

    it.scoped("sessions: found while live; expired, deleted or with a revoked key they are gone", () =>
      withStore(({ sql, store }) =>
        Effect.gen(function*() {
          const alice = yield* store.createUser("alice")
          const key = yield* store.createApiKey({ userId: alice.id, name: "browser", keyHash: "hash-s" })
          const other = yield* store.createApiKey({ userId: alice.id, name: "phone", keyHash: "hash-t" })
          const inOneHour = (yield* Clock.currentTimeMillis) + 3_600_000
          yield* store.createSession({ idHash: "s1", userId: alice.id, apiKeyId: key.id, expiresAt: new Date(inOneHour) })
          yield* store.createSession({ idHash: "s2", userId: alice.id, apiKeyId: other.id, expiresAt: new Date(inOneHour) })
          yield* store.createSession({ idHash: "s3", userId: alice.id, apiKeyId: other.id, expiresAt: new Date(inOneHour) })
          const found = yield* store.findSession("s1")
          expect(Option.map(found, (s) => [s.user.id, s.apiKeyId])).toEqual(Option.some([alice.id, key.id]))
          expect(Option.isNone(yield* store.findSession("no-such-session"))).toBe(true)
          // revoking the key ends its sessions, and only those
          yield* store.revokeApiKey(alice.id, key.id)
          expect(Option.isNone(yield* store.findSession("s1"))).toBe(true)
          expect(Option.isSome(yield* store.findSession("s2"))).toBe(true)
          yield* store.deleteSession("s2")
          expect(Option.isNone(yield* store.findSession("s2"))).toBe(true)
          // expiry, on the store's clock; expired rows are pruned
          expect(Option.isSome(yield* store.findSession("s3"))).toBe(true)
          yield* TestClock.adjust("61 minutes")
          expect(Option.isNone(yield* store.findSession("s3"))).toBe(true)
          const now = new Date(yield* Clock.currentTimeMillis)
          yield* store.pruneExpired({ idempotencyKeysBefore: now, eventsBefore: new Date(0) })
          expect(yield* countRows(sql, "SELECT count(*) AS n FROM sessions")).toBe(0)
        })
      ))

    it.scoped("idempotency keys: a used key returns the first entry and writes nothing; other users and expired keys are independent", () =>
      withStore(({ sql, store }) =>
        Effect.gen(function*() {
          const alice = yield* store.createUser("alice")
          const bob = yield* store.createUser("bob")
          const notBefore = new Date((yield* Clock.currentTimeMillis) - 86_400_000)
          const upload = (userId: UserId, key: string, since = notBefore) =>
            newEntry(store, userId).pipe(Effect.provideService(IdempotencySetting, { key, notBefore: since }))
          const first = yield* upload(alice.id, "k-1")
          const again = yield* Effect.flip(upload(alice.id, "k-1"))
          expect(again._tag).toBe("IdempotencyKeyUsed")
          expect((again as { entryId?: string }).entryId).toBe(first.entry.id)
          expect(yield* countRows(sql, "SELECT count(*) AS n FROM voice_entries")).toBe(1)
          expect(yield* countRows(sql, "SELECT count(*) AS n FROM transcriptions")).toBe(1)
          // the same key for another user, or another key: new entries
          const bobs = yield* upload(bob.id, "k-1")
          expect(bobs.entry.id).not.toBe(first.entry.id)
          yield* upload(alice.id, "k-2")
          // once the first use is older than the window, the key is free again
          yield* TestClock.adjust("25 hours")
          const later = yield* upload(alice.id, "k-1", new Date((yield* Clock.currentTimeMillis) - 86_400_000))
          expect(later.entry.id).not.toBe(first.entry.id)
          expect(yield* countRows(sql, "SELECT count(*) AS n FROM voice_entries")).toBe(4)
          // deleting the entry frees its key; old keys are pruned
          yield* store.deleteEntry(alice.id, later.entry.id)
          yield* store.pruneExpired({ idempotencyKeysBefore: new Date((yield* Clock.currentTimeMillis) - 86_400_000), eventsBefore: new Date(0) })
          expect(yield* countRows(sql, "SELECT count(*) AS n FROM idempotency_keys")).toBe(0)
        })
      ))

    it.scoped("idempotency keys: concurrent uploads with one key on separate connections make exactly one entry", () =>
      withStore((first, layer) =>
        Effect.gen(function*() {
          const user = yield* first.store.createUser("u")
          const connections = [first, ...(yield* Effect.all([connect(layer), connect(layer), connect(layer)]))]
          const notBefore = new Date((yield* Clock.currentTimeMillis) - 86_400_000)
          const results = yield* Effect.forEach(connections, (c, i) =>
            newEntry(c.store, user.id, i).pipe(
              Effect.provideService(IdempotencySetting, { key: "same", notBefore }),
              Effect.map((r) => r.entry.id as string),
              Effect.catchTag("IdempotencyKeyUsed", (e) => Effect.succeed(`replay:${e.entryId}`))
            ), { concurrency: "unbounded" })
          const made = results.filter((r) => !r.startsWith("replay:"))
          expect(made.length).toBe(1)
          expect(results.filter((r) => r.startsWith("replay:")).map((r) => r.slice(7))).toEqual([made[0], made[0], made[0]])
          expect(yield* countRows(first.sql, "SELECT count(*) AS n FROM voice_entries")).toBe(1)
          expect(yield* countRows(first.sql, "SELECT count(*) AS n FROM transcriptions")).toBe(1)
        })
      ))

    it.scoped("events: every stage status change and entry creation/deletion, per user, in order, with growing ids", () =>
      withStore(({ sql, store }) =>
        Effect.gen(function*() {
          const alice = yield* store.createUser("alice")
          const bob = yield* store.createUser("bob")
          expect(yield* store.lastEventId(alice.id)).toBe(0)
          const { entry, transcription } = yield* newEntry(store, alice.id)
          const t = yield* claim(store, "transcription")
          expect(t.id).toBe(transcription.id)
          yield* store.failTemporarily(t, { error: "busy", nextAttemptAt: new Date(0) })
          const t2 = yield* claim(store, "transcription")
          yield* store.completeTranscription(t2, { text: "w", engine: "e", language: null, durationSeconds: 1 })
          const c = yield* claim(store, "cleanup")
          yield* store.completeCleanup(c, { title: "T", text: "x", model: "m" }, { queueNotionSync: true })
          const n = yield* claim(store, "notion")
          yield* store.failPermanently(n, { error: "nope" })
          yield* store.deleteEntry(alice.id, entry.id)
          yield* newEntry(store, bob.id)
          const events = yield* store.readEvents(alice.id, { afterId: 0, limit: 100 })
          expect(events.map((e) => [e.kind, e.stage, e.status])).toEqual([
            ["entry", null, "created"],
            ["stage", "transcription", "pending"],
            ["stage", "transcription", "processing"],
            ["stage", "transcription", "retrying"],
            ["stage", "transcription", "processing"],
            ["stage", "transcription", "completed"],
            ["stage", "cleanup", "pending"],
            ["stage", "cleanup", "processing"],
            ["stage", "cleanup", "completed"],
            ["stage", "notion", "pending"],
            ["stage", "notion", "processing"],
            ["stage", "notion", "failed"],
            ["entry", null, "deleted"]
          ])
          expect(events.every((e) => e.entryId === entry.id && e.userId === alice.id)).toBe(true)
          expect(events[1]!.stageId).toBe(transcription.id)
          expect(events[7]!.stageId).toBe(c.id)
          const ids = events.map((e) => e.id)
          expect([...ids].sort((a, b) => a - b)).toEqual(ids)
          expect(new Set(ids).size).toBe(ids.length)
          expect(yield* store.lastEventId(alice.id)).toBe(ids[ids.length - 1])
          // resuming after an id gives what came later, and paging by limit
          expect((yield* store.readEvents(alice.id, { afterId: ids[9]!, limit: 100 })).map((e) => e.id)).toEqual(ids.slice(10))
          expect((yield* store.readEvents(alice.id, { afterId: 0, limit: 2 })).map((e) => e.id)).toEqual(ids.slice(0, 2))
          // bob sees only his own
          const bobs = yield* store.readEvents(bob.id, { afterId: 0, limit: 100 })
          expect(bobs.map((e) => e.status)).toEqual(["created", "pending"])
          // a released lease is an event too; pruning removes old events
          const b = yield* claim(store, "transcription")
          yield* store.releaseLease(b)
          expect((yield* store.readEvents(bob.id, { afterId: 0, limit: 100 })).map((e) => e.status)).toEqual(["created", "pending", "processing", "pending"])
          yield* TestClock.adjust("1 hour")
          yield* store.pruneExpired({ idempotencyKeysBefore: new Date(0), eventsBefore: new Date(yield* Clock.currentTimeMillis) })
          expect(yield* countRows(sql, "SELECT count(*) AS n FROM journal_events")).toBe(0)
        })
      ))

    it.scoped("events: a reader resuming after the last id it saw misses nothing while writers on separate connections race", () =>
      withStore((first, layer) =>
        Effect.gen(function*() {
          const user = yield* first.store.createUser("u")
          const { entry } = yield* newEntry(first.store, user.id)
          const connections = [first, ...(yield* Effect.all([connect(layer), connect(layer), connect(layer)]))]
          const seen: Array<number> = []
          let writing = true
          const reader = Effect.gen(function*() {
            let after = 0
            while (true) {
              const stop = !writing
              const batch = yield* first.store.readEvents(user.id, { afterId: after, limit: 1000 })
              for (const e of batch) seen.push(e.id)
              if (batch.length > 0) after = batch[batch.length - 1]!.id
              if (stop && batch.length === 0) return
              yield* Effect.yieldNow()
            }
          })
          const writers = Effect.forEach(connections, (c) =>
            Effect.forEach(Array.from({ length: 25 }), () => c.store.addTranscription(user.id, entry.id, { makePrimary: false }), {
              discard: true
            }), { concurrency: "unbounded", discard: true }).pipe(Effect.ensuring(Effect.sync(() => (writing = false))))
          yield* Effect.all([reader, writers], { concurrency: "unbounded" })
          const all = (yield* first.store.readEvents(user.id, { afterId: 0, limit: 1000 })).map((e) => e.id)
          expect(all.length).toBe(2 + 4 * 25)
          expect(seen).toEqual(all)
        })
      ))

    it.scoped("events: re-runs, retried syncs and queued syncs are events of their stage row", () =>
      withStore(({ store }) =>
        Effect.gen(function*() {
          const user = yield* store.createUser("u")
          const entry = yield* cleanedEntry(store, user.id)
          const after = yield* store.lastEventId(user.id)
          const t = yield* store.addTranscription(user.id, entry.id, { makePrimary: false })
          const c = yield* store.addCleanup(user.id, entry.id, { makePrimary: false })
          const sync = yield* store.addNotionSync(user.id, entry.id)
          const events = yield* store.readEvents(user.id, { afterId: after, limit: 100 })
          expect(events.map((e) => [e.stage, e.stageId, e.status])).toEqual([
            ["transcription", t.id, "pending"],
            ["cleanup", c.id, "pending"],
            ["notion", sync.id, "pending"]
          ])
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
