/**
 * An outside process locks the SQLite file (a `sqlite3` shell holding
 * `BEGIN EXCLUSIVE`, a backup tool): the server keeps answering. `/healthz`
 * never waits for the database, `/readyz` says 503 at once, reads go on (WAL),
 * a write waits asynchronously for the lock and then answers 503 with
 * `Retry-After`; once the lock is gone everything works again and the
 * pipeline workers, which kept running, finish the work.
 */
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { SqliteJournalStore } from "@voice-journal/adapter-sqlite"
import { Context, Effect, Layer } from "effect"
import * as path from "node:path"
import { audioBytes } from "../../core/test/support/Audio.js"
import { call, filesIn, start, waitFor } from "./support/TestServer.js"

describe("SQLite locked by another process", () => {
  it.scopedLive("healthz answers during the lock, readyz and writes answer 503 + Retry-After, all is well after release", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const audioDir = path.join(s.dir, "audio")
      const upload = (name: string) =>
        fetch(`${s.url}/entries`, {
          method: "POST",
          body: audioBytes("wav"),
          headers: { authorization: `Bearer ${key}`, "content-type": "audio/wav", "x-filename": name }
        })
      const before = yield* call(s.url, key, "/entries", { method: "POST", body: audioBytes("wav"), headers: { "content-type": "audio/wav" } })
      expect(before.status).toBe(201)
      yield* waitFor(async () => {
        const r = await fetch(`${s.url}/entries/${before.body.id}`, { headers: { authorization: `Bearer ${key}` } })
        return ((await r.json()) as any).notionSync?.status === "success" ? true : undefined
      })
      const blobsBefore = filesIn(audioDir).length

      // the outside process: its own connection to the same file, holding the write lock
      const outside = Context.get(
        yield* Layer.build(SqliteJournalStore.layerClient({ filename: path.join(s.dir, "journal.db") })),
        SqlClient.SqlClient
      )
      yield* outside.unsafe("BEGIN EXCLUSIVE")
      let locked = true

      // a write that must wait for the lock
      let writeSettled = false
      const write = upload("during-lock.wav").then(async (r) => {
        writeSettled = true
        return { status: r.status, retryAfter: r.headers.get("retry-after"), body: await r.json() as any }
      })
      // its audio is on disk: the write is now waiting for the database
      yield* waitFor(async () => (filesIn(audioDir).length > blobsBefore ? true : undefined), 10_000)

      const alive = yield* call(s.url, undefined, "/healthz").pipe(Effect.timeout("3 seconds"))
      expect(alive.status).toBe(200)
      expect(alive.body).toEqual({ status: "ok" })
      expect(writeSettled).toBe(false) // healthz answered while the write was still waiting
      expect(locked).toBe(true)

      const ready = yield* call(s.url, undefined, "/readyz").pipe(Effect.timeout("3 seconds"))
      expect(ready.status).toBe(503)
      expect(ready.body).toEqual({ error: "unavailable", message: expect.stringContaining("busy") })
      expect(Number(ready.headers.get("retry-after"))).toBeGreaterThan(0)

      // reads are not blocked by a writer in WAL mode
      const list = yield* call(s.url, key, "/entries")
      expect(list.status).toBe(200)
      expect(list.body.total).toBe(1)

      // the waiting write gives up after its bound, with the envelope and Retry-After, writing no row
      const refused = yield* Effect.promise(() => write)
      expect(refused.status).toBe(503)
      expect(refused.body).toEqual({
        error: "unavailable",
        message: "the database is busy (locked by another process); retry shortly"
      })
      expect(Number(refused.retryAfter)).toBeGreaterThan(0)
      expect(locked).toBe(true)
      // no row was written (its audio is left to the orphan sweep, see VoiceJournal.ingest)
      expect((yield* call(s.url, key, "/entries")).body.total).toBe(1)

      yield* outside.unsafe("COMMIT")
      locked = false

      expect((yield* call(s.url, undefined, "/readyz")).status).toBe(200)
      const after = yield* call(s.url, key, "/entries", { method: "POST", body: audioBytes("wav"), headers: { "content-type": "audio/wav" } })
      expect(after.status).toBe(201)
      // the workers kept running through the lock and pick the new entry up
      yield* waitFor(async () => {
        const r = await fetch(`${s.url}/entries/${after.body.id}`, { headers: { authorization: `Bearer ${key}` } })
        return ((await r.json()) as any).notionSync?.status === "success" ? true : undefined
      })
      expect((yield* call(s.url, key, "/entries")).body.total).toBe(2)
    }), 120_000)
})
