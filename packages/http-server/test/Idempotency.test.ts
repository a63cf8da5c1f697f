/**
 * `Idempotency-Key` on `POST /entries`, on the real server with SQLite and
 * PostgreSQL: a retry (same key, same user, within 24 h) answers 200 with the
 * first entry; concurrent duplicates make exactly one entry and leave no
 * audio behind; another user's identical key is independent; bad keys are 400.
 */
import { describe, expect, it } from "@effect/vitest"
import { PgTestDatabase } from "@voice-journal/adapter-postgres"
import { Effect, Redacted } from "effect"
import { audioBytes } from "../../core/test/support/Audio.js"
import type { ServerConfig } from "../src/Config.js"
import { call, filesIn, multipart, start } from "./support/TestServer.js"
import { userKey } from "./support/WebClient.js"

type Db = "sqlite" | "postgres"

const server = (db: Db) =>
  Effect.gen(function*() {
    const overrides: Partial<ServerConfig> = db === "postgres"
      ? { database: { kind: "postgres", url: Redacted.make(yield* PgTestDatabase.freshDatabase()) } }
      : {}
    const running = yield* start(overrides)
    const alice = yield* userKey(running.config.database, running.config.audioDir, "alice")
    const bob = yield* userKey(running.config.database, running.config.audioDir, "bob")
    return { running, alice, bob }
  })

const wav = () => audioBytes("wav")

const uploadRaw = (url: string, key: string, idempotencyKey?: string) =>
  call(url, key, "/entries", {
    method: "POST",
    body: wav(),
    headers: { "content-type": "audio/wav", ...(idempotencyKey !== undefined ? { "idempotency-key": idempotencyKey } : {}) }
  })

describe.each(["sqlite", "postgres"] as const)("Idempotency-Key on %s", (db) => {
  it.scopedLive("a retry with the same key answers 200 with the first entry; one entry, one stored file", () =>
    Effect.gen(function*() {
      const { alice, running } = yield* server(db)
      const first = yield* uploadRaw(running.url, alice.apiKey, "rec-1")
      expect(first.status).toBe(201)
      const retry = yield* uploadRaw(running.url, alice.apiKey, "rec-1")
      expect(retry.status).toBe(200)
      expect(retry.body.id).toBe(first.body.id)
      expect(retry.body.sha256).toBe(first.body.sha256)
      // multipart retries too
      const form = yield* call(running.url, alice.apiKey, "/entries", {
        method: "POST",
        body: multipart(wav(), "file", "note.wav"),
        headers: { "idempotency-key": "rec-1" }
      })
      expect(form.status).toBe(200)
      expect(form.body.id).toBe(first.body.id)
      const list = yield* call(running.url, alice.apiKey, "/entries")
      expect(list.body.total).toBe(1)
      expect(filesIn(running.config.audioDir)).toHaveLength(1)
      // a different key is a different upload; no key at all is never deduplicated
      expect((yield* uploadRaw(running.url, alice.apiKey, "rec-2")).status).toBe(201)
      expect((yield* uploadRaw(running.url, alice.apiKey)).status).toBe(201)
      expect((yield* uploadRaw(running.url, alice.apiKey)).status).toBe(201)
      expect((yield* call(running.url, alice.apiKey, "/entries")).body.total).toBe(4)
    }), { timeout: 120_000 })

  it.scopedLive("concurrent uploads with one key make exactly one entry; the others get it with 200 and leave no audio behind", () =>
    Effect.gen(function*() {
      const { alice, running } = yield* server(db)
      const results = yield* Effect.all(Array.from({ length: 6 }, () => uploadRaw(running.url, alice.apiKey, "same-recording")), {
        concurrency: "unbounded"
      })
      const statuses = results.map((r) => r.status).sort()
      expect(statuses).toEqual([200, 200, 200, 200, 200, 201])
      expect(new Set(results.map((r) => r.body.id)).size).toBe(1)
      expect((yield* call(running.url, alice.apiKey, "/entries")).body.total).toBe(1)
      // the losers' copies are removed at once, not left to the hourly orphan sweep
      expect(filesIn(running.config.audioDir)).toHaveLength(1)
    }), { timeout: 120_000 })

  it.scopedLive("the same key from another user is independent", () =>
    Effect.gen(function*() {
      const { alice, bob, running } = yield* server(db)
      const a = yield* uploadRaw(running.url, alice.apiKey, "shared-key")
      const b = yield* uploadRaw(running.url, bob.apiKey, "shared-key")
      expect([a.status, b.status]).toEqual([201, 201])
      expect(b.body.id).not.toBe(a.body.id)
      // and bob's retry finds bob's entry, never alice's
      const again = yield* uploadRaw(running.url, bob.apiKey, "shared-key")
      expect(again.status).toBe(200)
      expect(again.body.id).toBe(b.body.id)
      expect((yield* call(running.url, bob.apiKey, `/entries/${a.body.id}`)).status).toBe(404)
    }), { timeout: 120_000 })
})

describe("Idempotency-Key validation", () => {
  it.scopedLive("an empty key or one over 200 characters is 400 and nothing is stored; 200 characters is fine", () =>
    Effect.gen(function*() {
      const { alice, running } = yield* server("sqlite")
      const empty = yield* uploadRaw(running.url, alice.apiKey, "")
      expect(empty.status).toBe(400)
      expect(empty.body.error).toBe("bad_request")
      expect(empty.body.message).toContain("idempotency-key")
      const long = yield* uploadRaw(running.url, alice.apiKey, "k".repeat(201))
      expect(long.status).toBe(400)
      expect(long.body.message).toContain("200")
      expect((yield* call(running.url, alice.apiKey, "/entries")).body.total).toBe(0)
      expect(filesIn(running.config.audioDir)).toHaveLength(0)
      expect((yield* uploadRaw(running.url, alice.apiKey, "k".repeat(200))).status).toBe(201)
    }), { timeout: 120_000 })
})
