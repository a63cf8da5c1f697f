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
import { Chunk, Clock, Context, Effect, Exit, Layer, Option, type Scope, Stream, TestClock } from "effect"
import { type DestinationId, type EntryId, type Job, serverNotionDestination, type Stage, type UserId } from "./Domain.js"
import * as JournalEvents from "./JournalEvents.js"
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

/** A cleanup result without structured fields, for tests about other things. */
const noStructure = { summary: null, actionItems: [], tags: [], sections: {} } as const

const lease = { workerId: "suite-worker", leaseMillis: 30_000 }
/** The server-wide Notion, as an implicit destination. */
const notion = [serverNotionDestination]
/** Queues a delivery of the entry to the server-wide Notion only. */
const toNotion = (store: JournalStoreService, userId: UserId, entryId: Parameters<JournalStoreService["getEntry"]>[1]) =>
  store.queueDeliveries(userId, entryId, { destinationIds: notion, implicit: notion }).pipe(Effect.map((ds) => ds[0]!))

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
    yield* store.completeCleanup(c, { title: "A title", text: "Clean words.", model: "m", ...noStructure }, { implicit: [] })
    return entry
  })

/** What a finished entry says: its primary transcript, and its primary cleanup's title and text. */
interface Content {
  readonly transcript: string
  readonly title?: string
  readonly cleaned?: string
  readonly tags?: ReadonlyArray<string>
}

/** An entry carried through transcription and cleanup with `content`, one second after the previous one. */
const journalEntry = (store: JournalStoreService, userId: UserId, content: Content) =>
  Effect.gen(function*() {
    yield* TestClock.adjust("1 second")
    const { entry } = yield* newEntry(store, userId)
    const t = yield* claim(store, "transcription")
    yield* store.completeTranscription(t, { text: content.transcript, engine: "test", language: null, durationSeconds: 1 })
    const c = yield* claim(store, "cleanup")
    yield* store.completeCleanup(c, {
      ...noStructure,
      title: content.title ?? "Untitled",
      text: content.cleaned ?? "",
      model: "m",
      tags: content.tags ?? []
    }, { implicit: [] })
    return entry
  })

/** The ids a search returns, in order. */
const searchIds = (store: JournalStoreService, userId: UserId, q: string, extra: { tag?: string; limit?: number; offset?: number } = {}) =>
  store.searchEntries(userId, { q, ...extra }).pipe(Effect.map((page) => page.items.map((e) => e.id as string)))

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
          yield* store.completeCleanup(c, { title: "T", text: "Hello.", model: "m", ...noStructure }, { implicit: notion })
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

    it.scoped("structured cleanup fields round-trip; tags are stored normalised; a cleanup not yet done has empty ones", () =>
      withStore(({ store }) =>
        Effect.gen(function*() {
          const user = yield* store.createUser("u")
          const { entry } = yield* newEntry(store, user.id)
          yield* store.completeTranscription(yield* claim(store, "transcription"), {
            text: "raw",
            engine: "e",
            language: null,
            durationSeconds: null
          })
          const [pending] = yield* store.listCleanups(user.id, entry.id)
          expect(pending).toMatchObject({ summary: null, actionItems: [], tags: [], sections: {}, templateId: null })
          yield* store.completeCleanup(yield* claim(store, "cleanup"), {
            title: "T",
            text: "Body.",
            model: "m",
            summary: "About the garden.",
            actionItems: ["Buy seeds", "Call \"Anna\" — ünïcode"],
            tags: [" Garden ", "garden", "WORK", "", "Été"],
            sections: { mood: "calm", gratitude: "the sun\nand rain" }
          }, { implicit: [] })
          const [done] = yield* store.listCleanups(user.id, entry.id)
          expect(done).toMatchObject({
            summary: "About the garden.",
            actionItems: ["Buy seeds", "Call \"Anna\" — ünïcode"],
            tags: ["garden", "work", "été"],
            sections: { mood: "calm", gratitude: "the sun\nand rain" }
          })
          expect(yield* store.getCleanup(user.id, done!.id)).toEqual(done)
        })
      ))

    it.scoped("templates: create, list by name, get, update, delete; names unique per user; owner-scoped", () =>
      withStore(({ store }) =>
        Effect.gen(function*() {
          const alice = yield* store.createUser("alice")
          const bob = yield* store.createUser("bob")
          const sections = [{ name: "mood", description: "how I feel" }]
          const work = yield* store.createTemplate(alice.id, { name: "Work", instructions: "Work log.", sections })
          expect(work).toMatchObject({ userId: alice.id, name: "Work", instructions: "Work log.", sections })
          const dream = yield* store.createTemplate(alice.id, { name: "Dreams", instructions: "Dream log.", sections: [] })
          expect((yield* store.listTemplates(alice.id)).map((t) => t.name)).toEqual(["Dreams", "Work"])
          expect(yield* store.getTemplate(alice.id, work.id)).toEqual(work)
          // unique per user: alice cannot have a second "Work", bob can
          const taken = yield* Effect.flip(store.createTemplate(alice.id, { name: "Work", instructions: "x", sections: [] }))
          expect(taken._tag).toBe("NameTaken")
          yield* store.createTemplate(bob.id, { name: "Work", instructions: "Bob's.", sections: [] })
          const renameTaken = yield* Effect.flip(store.updateTemplate(alice.id, dream.id, { name: "Work", instructions: "x", sections: [] }))
          expect(renameTaken._tag).toBe("NameTaken")
          yield* TestClock.adjust("1 second")
          const updated = yield* store.updateTemplate(alice.id, dream.id, { name: "Night", instructions: "Night log.", sections })
          expect(updated).toMatchObject({ name: "Night", instructions: "Night log.", sections })
          expect(updated.updatedAt.getTime()).toBeGreaterThan(updated.createdAt.getTime())
          // another user's template is NotFound everywhere, and untouched
          for (
            const attempt of [
              store.getTemplate(bob.id, work.id),
              store.updateTemplate(bob.id, work.id, { name: "Mine", instructions: "x", sections: [] }),
              store.deleteTemplate(bob.id, work.id)
            ] as ReadonlyArray<Effect.Effect<unknown, { readonly _tag: string }>>
          ) expect((yield* Effect.flip(attempt))._tag).toBe("NotFound")
          expect((yield* store.listTemplates(bob.id)).map((t) => t.name)).toEqual(["Work"])
          yield* store.deleteTemplate(alice.id, dream.id)
          expect((yield* Effect.flip(store.getTemplate(alice.id, dream.id)))._tag).toBe("NotFound")
          expect((yield* store.listTemplates(alice.id)).map((t) => t.id)).toEqual([work.id])
        })
      ))

    it.scoped("a cleanup with a template: only the owner's template; deleting it is refused while that cleanup is queued, allowed after", () =>
      withStore(({ store }) =>
        Effect.gen(function*() {
          const alice = yield* store.createUser("alice")
          const bob = yield* store.createUser("bob")
          const entry = yield* cleanedEntry(store, alice.id)
          const template = yield* store.createTemplate(alice.id, { name: "Work", instructions: "Work log.", sections: [] })
          const bobs = yield* store.createTemplate(bob.id, { name: "Bob's", instructions: "x", sections: [] })
          const foreign = yield* Effect.flip(store.addCleanup(alice.id, entry.id, { templateId: bobs.id, makePrimary: false }))
          expect(foreign._tag).toBe("NotFound")
          expect((yield* store.listCleanups(alice.id, entry.id)).length).toBe(1) // nothing queued
          const queued = yield* store.addCleanup(alice.id, entry.id, { templateId: template.id, makePrimary: false })
          expect(queued.templateId).toBe(template.id)
          const inUse = yield* Effect.flip(store.deleteTemplate(alice.id, template.id))
          expect(inUse._tag).toBe("InvalidState")
          const job = yield* claim(store, "cleanup")
          expect((yield* Effect.flip(store.deleteTemplate(alice.id, template.id)))._tag).toBe("InvalidState") // running
          yield* store.completeCleanup(job, { title: "T", text: "Work.", model: "m", ...noStructure }, { implicit: [] })
          yield* store.deleteTemplate(alice.id, template.id)
          // the finished cleanup keeps its output and says which template wrote it
          expect(yield* store.getCleanup(alice.id, queued.id)).toMatchObject({ status: "completed", text: "Work.", templateId: template.id })
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

    it.scoped("batches: claimBatch takes up to its limit (expired leases first); completeTranscriptions writes the runs still leased and nothing of a lost one", () =>
      withStore(({ sql, store }) =>
        Effect.gen(function*() {
          const user = yield* store.createUser("u")
          const entries: Array<EntryId> = []
          for (let n = 0; n < 5; n++) {
            yield* TestClock.adjust("1 second")
            entries.push((yield* newEntry(store, user.id, n)).entry.id)
          }
          const stale = yield* claim(store, "transcription", "worker-old")
          expect(stale.entryId).toBe(entries[0])
          yield* TestClock.adjust("31 seconds") // stale's lease expires
          const claimed = yield* store.claimBatch("transcription", { ...lease, workerId: "worker-b", limit: 3 })
          // the expired lease, then the oldest due rows (in any order); each with its entry
          const first = entries.slice(0, 3).map((id) => claimed.find((j) => j.entryId === id)!)
          expect(first.map((j) => j?.entry.id)).toEqual(entries.slice(0, 3))
          expect(first[0]!.attempts).toBe(2)
          const rest = yield* store.claimBatch("transcription", { ...lease, workerId: "worker-c", limit: 3 })
          expect(rest.map((j) => j.entryId).sort()).toEqual([entries[3], entries[4]].sort())
          expect(yield* store.claimBatch("transcription", { ...lease, workerId: "worker-c", limit: 3 })).toEqual([])

          // one heartbeat for many leases: each renewed but the one another worker took
          yield* TestClock.adjust("10 seconds")
          const beat = yield* store.heartbeatBatch([first[1]!, stale, rest[0]!], 30_000)
          const renewedAt = (yield* TestClock.currentTimeMillis) + 30_000
          expect(beat.map(Option.map((j) => [j.id, j.leaseExpiresAt.getTime()]))).toEqual([
            Option.some([first[1]!.id, renewedAt]),
            Option.none(),
            Option.some([rest[0]!.id, renewedAt])
          ])
          // renewed: past the claim's expiry, worker-b's row is still not claimable; the others' (not renewed) are
          yield* TestClock.adjust("25 seconds")
          const expired = yield* store.claimBatch("transcription", { ...lease, workerId: "worker-e", limit: 5 })
          expect(expired.map((j) => j.entryId).sort()).toEqual([entries[0], entries[2], rest[1]!.entryId].sort())
          expect(yield* store.heartbeatBatch([first[0]!], 30_000)).toEqual([Option.none()])
          first[0] = expired.find((j) => j.entryId === entries[0])!
          first[2] = expired.find((j) => j.entryId === entries[2])!

          // a re-run of entry 1 that will be primary, finished in the same batch as the first run of entry 1
          yield* store.addTranscription(user.id, entries[1]!, { makePrimary: true })
          const [rerun] = yield* store.claimBatch("transcription", { ...lease, workerId: "worker-d", limit: 3 })
          const result = (text: string) => ({ text, engine: "e", language: null, durationSeconds: 2.5 })
          const written = yield* store.completeTranscriptions([
            { job: first[1]!, result: result("one") },
            { job: stale, result: result("late") }, // its lease went to worker-b
            { job: first[2]!, result: result("two") },
            { job: rerun!, result: result("one again") },
            { job: first[0]!, result: result("zero") }
          ])
          expect(written).toEqual([true, false, true, true, true])
          const text = (entryId: EntryId) =>
            store.listTranscriptions(user.id, entryId).pipe(Effect.map((ts) => ts.map((t) => [t.text, t.isPrimary, t.status])))
          expect(yield* text(entries[0]!)).toEqual([["zero", true, "completed"]])
          expect(yield* text(entries[2]!)).toEqual([["two", true, "completed"]])
          // the re-run (newer, listed first) is primary; the first run completed too
          expect(yield* text(entries[1]!)).toEqual([["one again", true, "completed"], ["one", false, "completed"]])
          // a cleanup queued for each run that became primary: entry 1 twice (its first run was primary for a moment)
          expect(yield* countRows(sql, `SELECT count(*) AS n FROM cleaned_entries WHERE status = 'pending'`)).toBe(4)
          // the two still-running rows are untouched
          expect((yield* store.queueDepth).filter((d) => d.stage === "transcription" && d.status === "processing").map((d) => d.rows))
            .toEqual([2])
          // search follows each entry's primary
          expect(yield* searchIds(store, user.id, "again")).toEqual([entries[1]])
          expect(yield* searchIds(store, user.id, "zero")).toEqual([entries[0]])
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
          yield* store.completeCleanup(yield* claim(store, "cleanup"), { title: "T", text: "Again.", model: "m", ...noStructure }, { implicit: [] })
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

    it.scoped("search ranks title hits above cleaned-text hits above transcript-only hits, newest first on ties", () =>
      withStore(({ store }) =>
        Effect.gen(function*() {
          const user = yield* store.createUser("u")
          const inTranscript = yield* journalEntry(store, user.id, { transcript: "we walked to the lighthouse at dawn", cleaned: "A walk at dawn." })
          const inCleaned = yield* journalEntry(store, user.id, { transcript: "we walked at dawn", cleaned: "The lighthouse at dawn." })
          const inTitle = { transcript: "we walked at dawn", title: "Lighthouse", cleaned: "A walk at dawn." }
          const olderTitle = yield* journalEntry(store, user.id, inTitle)
          const newerTitle = yield* journalEntry(store, user.id, inTitle)
          yield* journalEntry(store, user.id, { transcript: "nothing to see", cleaned: "Nothing." })
          const page = yield* store.searchEntries(user.id, { q: "lighthouse" })
          expect(page.total).toBe(4)
          expect(page.items.map((e) => e.id)).toEqual([newerTitle.id, olderTitle.id, inCleaned.id, inTranscript.id])
          // the items are the list's summaries
          expect(page.items[0]).toMatchObject({ id: newerTitle.id, title: "Lighthouse", cleanupStatus: "completed", transcriptionStatus: "completed" })
          // a hit in the cleaned text and the transcript outranks one in the transcript only
          expect(yield* searchIds(store, user.id, "walk")).toEqual([newerTitle.id, olderTitle.id, inTranscript.id, inCleaned.id])
          // every word must match, in any field
          expect(yield* searchIds(store, user.id, "lighthouse nothing")).toEqual([])
          expect(yield* searchIds(store, user.id, "nothing see")).toHaveLength(1)
          // the last word also matches as a prefix (3 letters or more); earlier words only whole
          const sorted = (ids: ReadonlyArray<string>) => [...ids].sort()
          expect(sorted(yield* searchIds(store, user.id, "dawn lighth"))).toEqual(sorted([newerTitle.id, olderTitle.id, inCleaned.id, inTranscript.id]))
          expect(yield* searchIds(store, user.id, "lighth dawn")).toEqual([])
          expect(yield* searchIds(store, user.id, "nothing se")).toEqual([])
        })
      ))

    it.scoped("search finds words in tags (ranked like the title) and ?tag filters exactly, alone or with words", () =>
      withStore(({ store }) =>
        Effect.gen(function*() {
          const user = yield* store.createUser("u")
          const other = yield* store.createUser("other")
          const inText = yield* journalEntry(store, user.id, { transcript: "a long walk in the garden", tags: ["walks"] })
          const tagged = yield* journalEntry(store, user.id, { transcript: "pulled weeds", tags: ["Garden", "Home Work"] })
          const both = yield* journalEntry(store, user.id, { transcript: "the garden again", tags: ["garden"] })
          yield* journalEntry(store, other.id, { transcript: "my garden", tags: ["garden"] })
          // a tag word ranks above a transcript word; tags are stored lower-case
          expect(yield* searchIds(store, user.id, "garden")).toEqual([both.id, tagged.id, inText.id])
          expect(yield* searchIds(store, user.id, "work")).toEqual([tagged.id])
          // the filter alone: exact tag (case-folded), newest first, owner-scoped
          const filtered = yield* store.searchEntries(user.id, { tag: "GARDEN" })
          expect(filtered.items.map((e) => e.id)).toEqual([both.id, tagged.id])
          expect(filtered.total).toBe(2)
          expect(yield* searchIds(store, user.id, "", { tag: "home work" })).toEqual([tagged.id])
          // a word of a tag is not the tag
          expect(yield* searchIds(store, user.id, "", { tag: "home" })).toEqual([])
          expect(yield* searchIds(store, user.id, "", { tag: "walk" })).toEqual([])
          // with words: both must hold
          expect(yield* searchIds(store, user.id, "weeds", { tag: "garden" })).toEqual([tagged.id])
          expect(yield* searchIds(store, user.id, "walk", { tag: "garden" })).toEqual([])
          expect((yield* store.searchEntries(other.id, { tag: "garden" })).total).toBe(1)
          // tags with odd characters are keys, never syntax
          const odd = yield* journalEntry(store, user.id, { transcript: "x", tags: [`c++ "quoted" & 'ok':*`] })
          expect(yield* searchIds(store, user.id, "", { tag: `c++ "quoted" & 'ok':*` })).toEqual([odd.id])
        })
      ))

    it.scoped("search is owner-scoped: another user's entries never match and are never counted", () =>
      withStore(({ store }) =>
        Effect.gen(function*() {
          const alice = yield* store.createUser("alice")
          const mallory = yield* store.createUser("mallory")
          const mine = yield* journalEntry(store, alice.id, { transcript: "the secret garden", title: "Garden" })
          for (let i = 0; i < 3; i++) yield* journalEntry(store, mallory.id, { transcript: "my secret garden too", title: "Garden" })
          const page = yield* store.searchEntries(alice.id, { q: "secret garden" })
          expect(page.items.map((e) => e.id)).toEqual([mine.id])
          expect(page.total).toBe(1)
          expect((yield* store.searchEntries(mallory.id, { q: "garden" })).total).toBe(3)
          // a user who has nothing finds nothing, even what others have
          const eve = yield* store.createUser("eve")
          expect(yield* store.searchEntries(eve.id, { q: "garden" })).toMatchObject({ items: [], total: 0 })
        })
      ))

    it.scoped("search pages its matches with limit/offset and the total of all matches", () =>
      withStore(({ store }) =>
        Effect.gen(function*() {
          const user = yield* store.createUser("u")
          const made: Array<string> = []
          for (let i = 0; i < 7; i++) made.push((yield* journalEntry(store, user.id, { transcript: `note ${i} about coffee` })).id)
          yield* journalEntry(store, user.id, { transcript: "about tea" })
          const newestFirst = made.reverse()
          const p1 = yield* store.searchEntries(user.id, { q: "coffee", limit: 3, offset: 0 })
          expect(p1).toMatchObject({ total: 7, limit: 3, offset: 0 })
          expect(p1.items.map((e) => e.id)).toEqual(newestFirst.slice(0, 3))
          const p3 = yield* store.searchEntries(user.id, { q: "coffee", limit: 3, offset: 6 })
          expect(p3.items.map((e) => e.id)).toEqual(newestFirst.slice(6))
          expect(p3.total).toBe(7)
          const beyond = yield* store.searchEntries(user.id, { q: "coffee", limit: 3, offset: 9 })
          expect(beyond).toMatchObject({ items: [], total: 7 })
          // no q and no tag: the plain list
          const all = yield* store.searchEntries(user.id, { limit: 100 })
          expect(all.items.map((e) => e.id)).toEqual((yield* store.listEntries(user.id, { limit: 100, offset: 0 })).items.map((e) => e.id))
          expect(all.total).toBe(8)
        })
      ))

    it.scoped("search folds case and accents and finds words in any script", () =>
      withStore(({ store }) =>
        Effect.gen(function*() {
          const user = yield* store.createUser("u")
          const french = yield* journalEntry(store, user.id, { transcript: "Un café crème à Besançon", title: "Éloïse" })
          const greek = yield* journalEntry(store, user.id, { transcript: "Καλημέρα κόσμε" })
          const russian = yield* journalEntry(store, user.id, { transcript: "Привет, МИР!" })
          const hindi = yield* journalEntry(store, user.id, { transcript: "नमस्ते दुनिया" })
          const japanese = yield* journalEntry(store, user.id, { transcript: "東京都庁に行きました" })
          const german = yield* journalEntry(store, user.id, { transcript: "Die Straße nach Köln" })
          expect(yield* searchIds(store, user.id, "CAFÉ")).toEqual([french.id])
          expect(yield* searchIds(store, user.id, "cafe creme besancon")).toEqual([french.id])
          expect(yield* searchIds(store, user.id, "eloise")).toEqual([french.id])
          expect(yield* searchIds(store, user.id, "ΚΑΛΗΜΕΡΑ")).toEqual([greek.id])
          expect(yield* searchIds(store, user.id, "καλημέρα")).toEqual([greek.id])
          expect(yield* searchIds(store, user.id, "мир")).toEqual([russian.id])
          expect(yield* searchIds(store, user.id, "привет мир")).toEqual([russian.id])
          expect(yield* searchIds(store, user.id, "दुनिया")).toEqual([hindi.id])
          // no spaces between Japanese words: the run is one term, and the last word's prefix finds its beginning
          expect(yield* searchIds(store, user.id, "東京都")).toEqual([japanese.id])
          expect(yield* searchIds(store, user.id, "東京都庁に行きました")).toEqual([japanese.id])
          expect(yield* searchIds(store, user.id, "KÖLN straße")).toEqual([german.id])
          expect(yield* searchIds(store, user.id, "koln")).toEqual([german.id])
        })
      ))

    it.scoped("search follows the primary: a re-run that becomes primary replaces the indexed text; deletion removes it", () =>
      withStore(({ sql, store }) =>
        Effect.gen(function*() {
          const user = yield* store.createUser("u")
          const entry = yield* journalEntry(store, user.id, { transcript: "apples and pears", title: "Orchard", cleaned: "Apples and pears." })
          expect(yield* searchIds(store, user.id, "pears")).toEqual([entry.id])
          // a re-transcription that is not primary changes nothing
          yield* store.addTranscription(user.id, entry.id, { makePrimary: false })
          const side = yield* claim(store, "transcription")
          yield* store.completeTranscription(side, { text: "bananas", engine: "test", language: null, durationSeconds: 1 })
          expect(yield* searchIds(store, user.id, "bananas")).toEqual([])
          // switching the primary transcription re-indexes it
          yield* store.setPrimaryTranscription(user.id, entry.id, side.id as never)
          expect(yield* searchIds(store, user.id, "bananas")).toEqual([entry.id])
          expect(yield* searchIds(store, user.id, "pears")).toEqual([entry.id]) // still in the primary cleanup
          // a new cleanup that becomes primary on completion replaces title and text
          yield* store.addCleanup(user.id, entry.id, { makePrimary: true })
          const c = yield* claim(store, "cleanup")
          yield* store.completeCleanup(c, { ...noStructure, title: "Fruit bowl", text: "Bananas only.", model: "m", tags: ["fruit-bowl"] }, { implicit: [] })
          expect(yield* searchIds(store, user.id, "pears")).toEqual([])
          expect(yield* searchIds(store, user.id, "orchard")).toEqual([])
          expect(yield* searchIds(store, user.id, "fruit")).toEqual([entry.id])
          // a primary transcription re-run (make primary) re-indexes on completion
          yield* store.addTranscription(user.id, entry.id, { makePrimary: true })
          const rerun = yield* claim(store, "transcription")
          yield* store.completeTranscription(rerun, { text: "cherries", engine: "test", language: null, durationSeconds: 1 })
          expect(yield* searchIds(store, user.id, "cherries")).toEqual([entry.id])
          // switching the cleanup back brings the old title back
          const cleanups = yield* store.listCleanups(user.id, entry.id)
          const first = cleanups.find((x) => x.title === "Orchard")!
          yield* store.setPrimaryCleanup(user.id, entry.id, first.id)
          expect(yield* searchIds(store, user.id, "orchard")).toEqual([entry.id])
          expect(yield* searchIds(store, user.id, "fruit")).toEqual([])
          yield* store.deleteEntry(user.id, entry.id)
          expect(yield* store.searchEntries(user.id, { q: "orchard" })).toMatchObject({ items: [], total: 0 })
          expect(yield* countRows(sql, "SELECT count(*) AS n FROM entry_search")).toBe(0)
        })
      ))

    it.scoped("hostile query strings are words, never syntax: no error, no other user's rows; too long is InvalidSearch", () =>
      withStore(({ store }) =>
        Effect.gen(function*() {
          const alice = yield* store.createUser("alice")
          const bob = yield* store.createUser("bob")
          const entry = yield* journalEntry(store, alice.id, { transcript: "don't panic: the answer is 42", title: "Notes" })
          yield* journalEntry(store, bob.id, { transcript: "the answer is 42 for bob too" })
          const hostile = [
            `"`, `'`, `*`, `"unterminated`, `answer" OR "`, `NEAR(answer 42)`, `answer*`, `^answer`, `title: answer`,
            `{title}: answer`, `answer AND NOT 42`, `answer & !42 | x`, `answer:*`, `'answer':A`, `(answer`, `answer)`,
            `' OR 1=1 --`, `"; DROP TABLE voice_entries; --`, `\\`, `answer\\'`, `%`, `_`, `-42`, `+answer`, `\u0000`,
            `${"(".repeat(100)}`, `match_keys: ${"o"}`, `ⁿ⁵ ﬁ`, `answer\u0000`
          ]
          for (const q of hostile) {
            const page = yield* store.searchEntries(alice.id, { q })
            expect(page.items.every((e) => e.userId === alice.id)).toBe(true)
            expect(page.total).toBe(page.items.length)
          }
          // the words in them still match
          expect(yield* searchIds(store, alice.id, `"answer" "42`)).toEqual([entry.id])
          expect(yield* searchIds(store, alice.id, `answer" OR "42`)).toEqual([]) // "or" is a word it lacks
          expect(yield* searchIds(store, alice.id, `don't`)).toEqual([entry.id])
          expect(yield* searchIds(store, alice.id, `' OR 1=1 --`)).toEqual([])
          // punctuation only: no words, no match (not the whole list)
          expect(yield* store.searchEntries(alice.id, { q: `"*:()` })).toMatchObject({ items: [], total: 0 })
          const tooLong = yield* Effect.flip(store.searchEntries(alice.id, { q: "a".repeat(201) }))
          expect(tooLong._tag).toBe("InvalidSearch")
          expect((yield* store.searchEntries(alice.id, { q: "answer ".repeat(28) })).total).toBe(1)
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
          yield* store.completeCleanup(yield* claim(store, "cleanup"), { title: "T", text: "x", model: "m", ...noStructure }, { implicit: notion })
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
          yield* store.completeCleanup(c, { title: "T", text: "x", model: "m", ...noStructure }, { implicit: [serverNotionDestination] })
          const n = yield* claim(store, "delivery")
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
            ["stage", "delivery", "pending"],
            ["stage", "delivery", "processing"],
            ["stage", "delivery", "failed"],
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

    it.scoped("events: a live JournalEvents stream misses nothing while writers on separate connections race", () =>
      withStore((first, layer) =>
        Effect.gen(function*() {
          const user = yield* first.store.createUser("u")
          const { entry } = yield* newEntry(first.store, user.id)
          const connections = [first, ...(yield* Effect.all([connect(layer), connect(layer), connect(layer)]))]
          const total = 2 + 4 * 25
          const reader = JournalEvents.stream(user.id, { afterId: 0, pollInterval: "20 millis" }).pipe(
            Stream.take(total),
            Stream.runCollect,
            Effect.provideService(JournalStore, first.store),
            Effect.withClock(Clock.make()), // real time: the stream polls
            Effect.timeout("30 seconds") // a missed event: the stream never yields them all
          )
          const writers = Effect.forEach(connections, (c) =>
            Effect.forEach(Array.from({ length: 25 }), () => c.store.addTranscription(user.id, entry.id, { makePrimary: false }), {
              discard: true
            }), { concurrency: "unbounded", discard: true })
          const [seen] = yield* Effect.all([reader, writers], { concurrency: "unbounded" })
          const all = (yield* first.store.readEvents(user.id, { afterId: 0, limit: 1000 })).map((e) => e.id)
          expect(all.length).toBe(total)
          // every event exactly once (an event that committed after a larger id comes right after it)
          expect(Chunk.toReadonlyArray(seen).map((e) => e.id).sort((a, b) => a - b)).toEqual(all)
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
          const sync = yield* toNotion(store, user.id, entry.id)
          const events = yield* store.readEvents(user.id, { afterId: after, limit: 100 })
          expect(events.map((e) => [e.stage, e.stageId, e.status])).toEqual([
            ["transcription", t.id, "pending"],
            ["cleanup", c.id, "pending"],
            ["delivery", sync.id, "pending"]
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

    it.scoped("queueDepth: waiting and running rows per stage and status, of every user; finished rows not counted", () =>
      withStore(({ store }) =>
        Effect.gen(function*() {
          const depth = Effect.map(store.queueDepth, (rows) =>
            Object.fromEntries(rows.filter((r) => r.rows > 0).map((r) => [`${r.stage}/${r.status}`, r.rows])))
          expect(yield* depth).toEqual({})
          const alice = yield* store.createUser("alice")
          const bob = yield* store.createUser("bob")
          for (let n = 0; n < 3; n++) yield* newEntry(store, alice.id, n)
          yield* newEntry(store, bob.id)
          expect(yield* depth).toEqual({ "transcription/pending": 4 })
          const first = yield* claim(store, "transcription")
          const second = yield* claim(store, "transcription")
          const now = yield* TestClock.currentTimeMillis
          yield* store.failTemporarily(second, { error: "engine down", nextAttemptAt: new Date(now + 60_000) })
          expect(yield* depth).toEqual({ "transcription/pending": 2, "transcription/processing": 1, "transcription/retrying": 1 })
          yield* store.completeTranscription(first, { text: "words", engine: "test", language: null, durationSeconds: 1 })
          const third = yield* claim(store, "transcription")
          yield* store.failPermanently(third, { error: "undecodable" })
          expect(yield* depth).toEqual({ "transcription/pending": 1, "transcription/retrying": 1, "cleanup/pending": 1 })
        })
      ))

    it.scoped("pieces of a long recording: the first plan wins, each piece's transcript is kept as it completes, progress counts them", () =>
      withStore(({ sql, store }) =>
        Effect.gen(function*() {
          const user = yield* store.createUser("u")
          const { entry, transcription } = yield* newEntry(store, user.id)
          const job = yield* claim(store, "transcription")
          const plan = [
            { index: 0, start: 0, end: 599.5, overlap: 0 },
            { index: 1, start: 599.5, end: 1200, overlap: 0 },
            { index: 2, start: 1198, end: 1500.25, overlap: 2 }
          ]
          const planned = yield* store.planPieces(job, plan)
          expect(planned.map((p) => [p.index, p.startSeconds, p.endSeconds, p.overlapSeconds, p.text])).toEqual([
            [0, 0, 599.5, 0, null],
            [1, 599.5, 1200, 0, null],
            [2, 1198, 1500.25, 2, null]
          ])
          const progress = () => store.getTranscription(user.id, transcription.id).pipe(Effect.map((t) => [t.piecesDone, t.piecesTotal]))
          expect(yield* progress()).toEqual([0, 3])
          yield* store.completePiece(job, 1, { text: "second", segments: [{ start: 600, end: 610, text: "second" }], engine: "e", language: "en" })
          expect(yield* progress()).toEqual([1, 3])
          // the job is lost and re-claimed (a crash): a different plan does not replace the stored one
          yield* store.releaseLease(job)
          const again = yield* claim(store, "transcription", "worker-b")
          const resumed = yield* store.planPieces(again, [{ index: 0, start: 0, end: 1500.25, overlap: 0 }])
          expect(resumed.map((p) => p.text)).toEqual([null, "second", null])
          expect(resumed[1]!.segments).toEqual([{ start: 600, end: 610, text: "second" }])
          expect(resumed[1]!.language).toBe("en")
          expect(resumed[1]!.completedAt).not.toBeNull()
          // the old holder is fenced out of both
          expect((yield* Effect.flip(store.completePiece(job, 0, { text: "late", segments: [], engine: "e", language: null })))._tag).toBe("LeaseLost")
          expect((yield* Effect.flip(store.planPieces(job, plan)))._tag).toBe("LeaseLost")
          expect((yield* store.planPieces(again, plan)).map((p) => p.text)).toEqual([null, "second", null])
          yield* store.completePiece(again, 0, { text: "first", segments: [], engine: "e", language: null })
          yield* store.completePiece(again, 2, { text: "third", segments: [], engine: "e", language: null })
          expect(yield* progress()).toEqual([3, 3])
          const segments = [{ start: 0, end: 5, text: "first" }, { start: 600, end: 610, text: "second" }]
          yield* store.completeTranscription(again, { text: "first second third", engine: "e", language: "en", durationSeconds: 1500.25, segments })
          const done = yield* store.getTranscription(user.id, transcription.id)
          expect([done.piecesDone, done.piecesTotal, done.segments]).toEqual([3, 3, segments])
          expect((yield* store.listTranscriptions(user.id, entry.id))[0]!.segments).toEqual(segments)
          // deleting the entry removes its pieces
          yield* store.deleteEntry(user.id, entry.id)
          expect(yield* countRows(sql, `SELECT count(*) AS n FROM transcription_pieces`)).toBe(0)
        })
      ))

    it.scoped("a recording sent whole: no pieces, one in all once completed; segments optional", () =>
      withStore(({ store }) =>
        Effect.gen(function*() {
          const user = yield* store.createUser("u")
          const { transcription } = yield* newEntry(store, user.id)
          expect([transcription.piecesDone, transcription.piecesTotal, transcription.segments]).toEqual([0, null, null])
          const job = yield* claim(store, "transcription")
          yield* store.completeTranscription(job, { text: "short", engine: "e", language: null, durationSeconds: 2 })
          const done = yield* store.getTranscription(user.id, transcription.id)
          expect([done.piecesDone, done.piecesTotal, done.segments]).toEqual([1, 1, null])
        })
      ))
  })
}
