/**
 * Another process holds the SQLite write lock (here: a second connection to
 * the same file in `BEGIN EXCLUSIVE`, as a `sqlite3` shell or a backup would).
 * The store must not freeze the event loop while it waits, must give up with
 * a busy `StoreError` after its budget, and must repeat a whole call — never
 * half of one — when the lock goes away in the meantime.
 */
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Errors, JournalStore } from "@voice-journal/core"
import { Context, type Duration, Effect, Fiber, Layer } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { SqliteJournalStore } from "../src/index.js"

/** A store on a fresh file, and an outside connection to the same file. */
const setup = (busyWait: Duration.DurationInput) =>
  Effect.gen(function*() {
    const dir = yield* Effect.acquireRelease(
      Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "vj-sqlite-busy-"))),
      (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
    )
    const filename = path.join(dir, "journal.db")
    const ctx = yield* Layer.build(SqliteJournalStore.layer({ filename, busyWait }))
    const outside = Context.get(yield* Layer.build(SqliteJournalStore.layerClient({ filename })), SqlClient.SqlClient)
    return { store: Context.get(ctx, JournalStore.JournalStore), sql: Context.get(ctx, SqlClient.SqlClient), outside }
  })

/** Lets the event loop run timers for a moment: it only returns if the loop is not blocked. */
const loopTurn = Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 100)))

const count = (sql: SqlClient.SqlClient, table: string) =>
  sql.unsafe<{ n: number }>(`SELECT count(*) AS n FROM ${table}`).pipe(Effect.map((rows) => rows[0]!.n))

describe("SQLite locked by another process", () => {
  it.scopedLive("a write waits without blocking the event loop, then fails busy after its budget; nothing is written", () =>
    Effect.gen(function*() {
      const { outside, sql, store } = yield* setup("1 second")
      yield* outside.unsafe("BEGIN EXCLUSIVE")
      const write = yield* Effect.fork(store.createUser("u"))
      yield* loopTurn
      // timers ran while the write was still waiting for the lock
      expect(write.unsafePoll()).toBeNull()
      const error = yield* Effect.flip(Fiber.join(write))
      expect(error).toBeInstanceOf(Errors.StoreError)
      expect(error.busy).toBe(true)
      expect(Errors.isStoreBusy(error)).toBe(true)
      expect(error.message).toBe("the database is busy (locked by another process)")
      yield* outside.unsafe("COMMIT")
      expect(yield* count(sql, "users")).toBe(0)
      expect((yield* store.createUser("v")).name).toBe("v")
    }))

  it.scopedLive("the lock goes away while a call waits: the whole call runs, exactly once", () =>
    Effect.gen(function*() {
      const { outside, sql, store } = yield* setup("20 seconds")
      const user = yield* store.createUser("u")
      const { entry } = yield* store.createEntry({
        userId: user.id,
        blobKey: "k",
        originalFilename: null,
        mimeType: "audio/wav",
        sizeBytes: 1,
        sha256: "0".repeat(64)
      })
      yield* outside.unsafe("BEGIN EXCLUSIVE")
      // several statements (owner check, insert, read back): retried as one transaction
      const add = yield* Effect.fork(store.addTranscription(user.id, entry.id, { makePrimary: false }))
      yield* loopTurn
      expect(add.unsafePoll()).toBeNull()
      yield* outside.unsafe("COMMIT")
      const added = yield* Fiber.join(add)
      expect(added.entryId).toBe(entry.id)
      expect(yield* count(sql, "transcriptions")).toBe(2)
    }))

  it.scopedLive("ping fails busy at once (readiness), without retrying", () =>
    Effect.gen(function*() {
      const { outside, store } = yield* setup("20 seconds")
      yield* store.ping
      yield* outside.unsafe("BEGIN EXCLUSIVE")
      // generous bound: far below the 20 s budget, so ping did not retry
      const error = yield* Effect.flip(store.ping).pipe(Effect.timeout("5 seconds"))
      expect(Errors.isStoreBusy(error)).toBe(true)
      yield* outside.unsafe("COMMIT")
      yield* store.ping
    }))

  it.scopedLive("inside a caller's own transaction a busy call is not retried (that would repeat half of it)", () =>
    Effect.gen(function*() {
      const { outside, sql, store } = yield* setup("20 seconds")
      yield* outside.unsafe("BEGIN EXCLUSIVE")
      const error = yield* Effect.flip(sql.withTransaction(store.createUser("u"))).pipe(Effect.timeout("5 seconds"))
      expect(Errors.isStoreBusy(error)).toBe(true)
      yield* outside.unsafe("COMMIT")
      expect(yield* count(sql, "users")).toBe(0)
    }))
})
