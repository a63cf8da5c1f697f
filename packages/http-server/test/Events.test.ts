/**
 * `GET /events` (Server-Sent Events) on the real server: the signed-in
 * user's stage changes and entry creations/deletions only, with durable ids
 * a reconnect resumes after (`Last-Event-ID`), heartbeats, a clean end at
 * shutdown, and delivery across nodes on PostgreSQL (LISTEN/NOTIFY).
 */
import { describe, expect, it } from "@effect/vitest"
import { PgTestDatabase } from "@voice-journal/adapter-postgres"
import { Effect, Redacted } from "effect"
import * as path from "node:path"
import { audioBytes } from "../../core/test/support/Audio.js"
import * as FakeOllama from "../../core/test/support/FakeOllama.js"
import * as FakeOpenAi from "../../core/test/support/FakeOpenAiTranscription.js"
import { call, exitOf, freePort, serve, serverEnv, start, tempDir } from "./support/TestServer.js"
import { openEvents, signIn, userKey } from "./support/WebClient.js"

const upload = (url: string, key: string) =>
  call(url, key, "/entries", { method: "POST", body: audioBytes("wav"), headers: { "content-type": "audio/wav" } })

const bearer = (key: string) => ({ authorization: `Bearer ${key}` })

describe("GET /events", () => {
  it.scopedLive("streams the user's own stage changes live, entry created and deleted, never another user's; replays after Last-Event-ID", () =>
    Effect.gen(function*() {
      // streams re-read only hourly: what arrives in this test was woken by the store's in-process signal
      const server = yield* start({ eventsHeartbeatSeconds: 1, eventsPollSeconds: 3600 })
      const alice = yield* userKey(server.config.database, server.config.audioDir, "alice")
      const bob = yield* userKey(server.config.database, server.config.audioDir, "bob")
      // alice watches with the session cookie (as the web app does), bob with his key
      const session = yield* signIn(server.url, alice.apiKey)
      const aliceEvents = yield* Effect.acquireRelease(
        Effect.promise(() => openEvents(server.url, { cookie: session.cookie })),
        (r) => Effect.sync(r.close)
      )
      expect(aliceEvents.status).toBe(200)
      expect(aliceEvents.contentType).toContain("text/event-stream")
      const bobEvents = yield* Effect.acquireRelease(Effect.promise(() => openEvents(server.url, bearer(bob.apiKey))), (r) => Effect.sync(r.close))

      const bobsEntry = (yield* upload(server.url, bob.apiKey)).body.id as string
      const entry = (yield* upload(server.url, alice.apiKey)).body.id as string
      const done = yield* Effect.promise(() =>
        aliceEvents.waitFor((e) => e.event === "stage" && e.data.stage === "cleanup" && e.data.status === "completed", 120_000)
      )
      expect(done.data.entryId).toBe(entry)
      expect(typeof done.data.cleanupId).toBe("string")
      expect(new Date(done.data.at).getTime()).not.toBeNaN()
      const created = aliceEvents.events.find((e) => e.event === "entry")!
      expect(created.data).toEqual({ entryId: entry, status: "created", at: expect.any(String) })
      const transcription = aliceEvents.events.filter((e) => e.data.stage === "transcription").map((e) => e.data.status)
      expect(transcription).toEqual(["pending", "processing", "completed"])
      const transcriptionIds = new Set(aliceEvents.events.filter((e) => e.data.stage === "transcription").map((e) => e.data.transcriptionId))
      expect(transcriptionIds.size).toBe(1)
      expect([...transcriptionIds][0]).toBe((yield* call(server.url, alice.apiKey, `/entries/${entry}`)).body.transcription.id)
      // only alice's entry, ever
      expect(aliceEvents.events.every((e) => e.data.entryId === entry)).toBe(true)
      yield* Effect.promise(() => bobEvents.waitFor((e) => e.data.stage === "transcription" && e.data.status === "completed", 120_000))
      expect(bobEvents.events.every((e) => e.data.entryId === bobsEntry)).toBe(true)
      // ids are durable and growing; heartbeats keep the stream open between events
      const ids = aliceEvents.events.map((e) => Number(e.id))
      expect([...ids].sort((a, b) => a - b)).toEqual(ids)
      yield* Effect.promise(() => aliceEvents.waitForComment((c) => c === "heartbeat"))

      // a reconnect with Last-Event-ID gets exactly what came after it, from the table
      const seen = aliceEvents.events.slice(0, 2)
      const resumed = yield* Effect.acquireRelease(
        Effect.promise(() => openEvents(server.url, { cookie: session.cookie, "last-event-id": seen[1]!.id! })),
        (r) => Effect.sync(r.close)
      )
      const later = aliceEvents.events.slice(2)
      yield* Effect.promise(() => resumed.waitFor((e) => e.id === later[later.length - 1]!.id))
      expect(resumed.events.slice(0, later.length)).toEqual(later)

      // deleting is an event too
      expect((yield* call(server.url, alice.apiKey, `/entries/${entry}`, { method: "DELETE" })).status).toBe(204)
      const deleted = yield* Effect.promise(() => aliceEvents.waitFor((e) => e.event === "entry" && e.data.status === "deleted"))
      expect(deleted.data.entryId).toBe(entry)
      expect(bobEvents.events.some((e) => e.data.entryId === entry)).toBe(false)
    }), { timeout: 240_000 })

  it.scopedLive("needs a credential; a malformed Last-Event-ID is 400", () =>
    Effect.gen(function*() {
      const server = yield* start()
      const alice = yield* userKey(server.config.database, server.config.audioDir, "alice")
      expect((yield* call(server.url, undefined, "/events")).status).toBe(401)
      const bad = yield* call(server.url, alice.apiKey, "/events", { headers: { "last-event-id": "abc" } })
      expect(bad.status).toBe(400)
      expect(bad.body.message).toContain("Last-Event-ID")
    }))

  it.scopedLive("ends cleanly at shutdown instead of holding it for the grace period", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir("vj-events-shutdown-")
      const ollama = yield* FakeOllama.make()
      const transcription = yield* FakeOpenAi.make({ instantText: "hello" })
      const port = yield* Effect.promise(freePort)
      const env = serverEnv({
        port,
        dataDir: dir,
        transcribeUrl: transcription.url,
        ollamaUrl: ollama.url,
        extra: { VJ_SHUTDOWN_GRACE_SECONDS: "60" }
      })
      const database = { kind: "sqlite" as const, filename: path.join(dir, "journal.db") }
      const child = yield* serve(env, port, "pipe")
      let output = ""
      child.stdout!.on("data", (c: Buffer) => (output += c.toString("utf8")))
      child.stderr!.on("data", (c: Buffer) => (output += c.toString("utf8")))
      const alice = yield* userKey(database, path.join(dir, "audio"), "alice")
      const url = `http://127.0.0.1:${port}`
      const events = yield* Effect.promise(() => openEvents(url, bearer(alice.apiKey)))
      expect(events.status).toBe(200)
      child.kill("SIGTERM")
      yield* Effect.promise(() => events.ended)
      expect(yield* Effect.promise(() => exitOf(child))).toBe(0)
      expect(output).toContain("shutting down")
      expect(output).not.toContain("cutting off")
    }), { timeout: 180_000 })
})

describe("GET /events across nodes (PostgreSQL)", () => {
  it.scopedLive("an upload to node A reaches a subscriber on node B (LISTEN/NOTIFY, not polling)", () =>
    Effect.gen(function*() {
      const databaseUrl = yield* PgTestDatabase.freshDatabase()
      const dir = yield* tempDir("vj-events-nodes-")
      const audioDir = path.join(dir, "audio")
      const ollama = yield* FakeOllama.make()
      const transcription = yield* FakeOpenAi.make({ instantText: "hello from node a" })
      const [portA, portB] = [yield* Effect.promise(freePort), yield* Effect.promise(freePort)]
      // B re-reads only hourly: an event that arrives in this test was woken by NOTIFY
      const env = (port: number, name: string) =>
        serverEnv({
          port,
          dataDir: path.join(dir, name),
          databaseUrl,
          audioDir,
          transcribeUrl: transcription.url,
          ollamaUrl: ollama.url,
          extra: { VJ_EVENTS_POLL_SECONDS: "3600", VJ_SHUTDOWN_GRACE_SECONDS: "1" }
        })
      yield* serve(env(portA, "a"), portA)
      yield* serve(env(portB, "b"), portB)
      const alice = yield* userKey({ kind: "postgres", url: Redacted.make(databaseUrl) }, audioDir, "alice")
      const onB = yield* Effect.acquireRelease(
        Effect.promise(() => openEvents(`http://127.0.0.1:${portB}`, bearer(alice.apiKey))),
        (r) => Effect.sync(r.close)
      )
      expect(onB.status).toBe(200)
      const uploaded = yield* upload(`http://127.0.0.1:${portA}`, alice.apiKey)
      expect(uploaded.status).toBe(201)
      const created = yield* Effect.promise(() => onB.waitFor((e) => e.event === "entry", 60_000))
      expect(created.data.entryId).toBe(uploaded.body.id)
      const completed = yield* Effect.promise(() =>
        onB.waitFor((e) => e.data.stage === "transcription" && e.data.status === "completed", 120_000)
      )
      expect(completed.data.entryId).toBe(uploaded.body.id)
    }), { timeout: 240_000 })
})
