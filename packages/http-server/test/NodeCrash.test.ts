/**
 * Several nodes, one audio directory, one database, and kill -9: what a
 * crash leaves in the audio directory is swept (and only that), a node's
 * start leaves other nodes' live uploads alone, and a shorter lease
 * (`VJ_LEASE_SECONDS`) gets a dead node's stage taken over sooner.
 * Multi-process tests run on PostgreSQL, each on a fresh database.
 */
import { describe, expect, it } from "@effect/vitest"
import { SqlClient } from "@effect/sql"
import { PgJournalStore, PgTestDatabase } from "@voice-journal/adapter-postgres"
import { BlobStore, VoiceJournal, WorkSignal } from "@voice-journal/core"
import { ConfigProvider, Effect, Layer, Redacted } from "effect"
import type { ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { audioBytes } from "../../core/test/support/Audio.js"
import * as FakeOllama from "../../core/test/support/FakeOllama.js"
import * as FakeOpenAi from "../../core/test/support/FakeOpenAiTranscription.js"
import * as ServerConfig from "../src/Config.js"
import { call, exitOf, filesIn, freePort, serve, serverEnv, start, tempDir, waitFor } from "./support/TestServer.js"

/** Sets a file's mtime (and atime) `hours` into the past. */
const age = (file: string, hours: number) => {
  const then = new Date(Date.now() - hours * 3_600_000)
  fs.utimesSync(file, then, then)
}

const uuid = () => globalThis.crypto.randomUUID()

/** A user and API key on a PostgreSQL database, through the library's own code path. */
const pgUserKey = (url: string, audioDir: string) =>
  Effect.scoped(
    Effect.flatMap(VoiceJournal.VoiceJournal, (j) => j.createUser("alice")).pipe(
      Effect.map(({ apiKey }) => Redacted.value(apiKey)),
      Effect.provide(VoiceJournal.layer().pipe(Layer.provide(Layer.mergeAll(
        PgJournalStore.layer({ url, maxConnections: 2 }),
        BlobStore.layerFileSystem({ directory: audioDir }),
        WorkSignal.layer
      ))))
    )
  )

/** Runs `f` with a SqlClient on the database at `url`. */
const onDatabase = <A>(url: string, f: (sql: SqlClient.SqlClient) => Effect.Effect<A, unknown>) =>
  Effect.scoped(Effect.flatMap(SqlClient.SqlClient, f).pipe(Effect.provide(PgJournalStore.layer({ url, maxConnections: 2 })))).pipe(
    Effect.orDie
  )

/** Environment for one server process on the shared database and audio directory. */
const nodeEnv = (options: {
  readonly port: number
  readonly dataDir: string
  readonly databaseUrl: string
  readonly audioDir: string
  readonly transcribeUrl: string
  readonly ollamaUrl: string
  readonly extra?: Record<string, string>
}): NodeJS.ProcessEnv => serverEnv({ ...options, extra: { VJ_SHUTDOWN_GRACE_SECONDS: "1", ...options.extra } })

describe("lease settings", () => {
  const read = (env: Record<string, string>) =>
    Effect.withConfigProvider(Effect.either(ServerConfig.config), ConfigProvider.fromMap(new Map(Object.entries(env))))

  it.effect("VJ_HEARTBEAT_SECONDS defaults to a third of VJ_LEASE_SECONDS and must stay under it", () =>
    Effect.gen(function*() {
      const derived = yield* read({ VJ_LEASE_SECONDS: "12" })
      expect(derived._tag === "Right" && derived.right.lease).toEqual({ seconds: 12, heartbeatSeconds: 4 })
      const explicit = yield* read({ VJ_LEASE_SECONDS: "10", VJ_HEARTBEAT_SECONDS: "2.5" })
      expect(explicit._tag === "Right" && explicit.right.lease).toEqual({ seconds: 10, heartbeatSeconds: 2.5 })
      for (const heartbeat of ["10", "11", "0", "-1"]) {
        const bad = yield* read({ VJ_LEASE_SECONDS: "10", VJ_HEARTBEAT_SECONDS: heartbeat })
        expect(bad._tag === "Left" && String(bad.left)).toContain("VJ_HEARTBEAT_SECONDS")
      }
      expect((yield* read({ VJ_LEASE_SECONDS: "0" }))._tag).toBe("Left")
    }))
})

describe("audio left behind by a crash", () => {
  it.scopedLive("an orphaned blob older than the sweep age is removed at server start; a fresh orphan and a blob with a row are kept", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir("vj-orphans-")
      const audioDir = path.join(dir, "audio")
      const storage = { dataDir: dir, database: { kind: "sqlite" as const, filename: path.join(dir, "journal.db") }, audioDir }
      // a first run stores one real recording
      const first = yield* Effect.scoped(Effect.gen(function*() {
        const s = yield* start(storage)
        const key = yield* s.key("alice")
        const created = yield* call(s.url, key, "/entries", { method: "POST", body: audioBytes("wav"), headers: { "content-type": "audio/wav" } })
        expect(created.status).toBe(201)
        return { key, id: created.body.id as string, blob: filesIn(audioDir).find((f) => !f.startsWith("."))! }
      }))
      const entryBlob = first.blob
      // what a SIGKILL between the blob's rename and the row's insert leaves: a complete blob, no row
      const oldOrphan = uuid()
      const freshOrphan = uuid()
      fs.writeFileSync(path.join(audioDir, oldOrphan), audioBytes("wav"))
      fs.writeFileSync(path.join(audioDir, freshOrphan), audioBytes("wav"))
      age(path.join(audioDir, oldOrphan), 2)
      age(path.join(audioDir, entryBlob), 2) // just as old: only its row keeps it
      const s = yield* start(storage)
      yield* waitFor(async () => (fs.existsSync(path.join(audioDir, oldOrphan)) ? undefined : true), 20_000)
      expect(fs.existsSync(path.join(audioDir, freshOrphan))).toBe(true)
      expect(fs.existsSync(path.join(audioDir, entryBlob))).toBe(true)
      // the entry's audio is still served
      expect((yield* call(s.url, first.key, `/entries/${first.id}/audio`)).status).toBe(200)
    }), { timeout: 120_000 })
})

describe("several nodes on PostgreSQL", () => {
  it.scopedLive("a node starting beside another node's live upload leaves its partial file alone (the upload completes intact) and removes a stale one", () =>
    Effect.gen(function*() {
      const databaseUrl = yield* PgTestDatabase.freshDatabase()
      const audioDir = path.join(yield* tempDir("vj-nodes-audio-"), "audio")
      const transcription = yield* FakeOpenAi.make({ instantText: "hello world this is a test" })
      const ollama = yield* FakeOllama.make()
      const [portA, portB] = [yield* Effect.promise(freePort), yield* Effect.promise(freePort)]
      const env = (port: number) =>
        Effect.map(tempDir("vj-node-"), (dataDir) =>
          nodeEnv({ port, dataDir, databaseUrl, audioDir, transcribeUrl: transcription.url, ollamaUrl: ollama.url }))
      yield* serve(yield* env(portA), portA)
      const key = yield* pgUserKey(databaseUrl, audioDir)

      // an upload to A, half sent: its bytes sit in a `.partial-*` file
      const audio = audioBytes("wav")
      const half = 16 * 1024
      let sendRest!: () => void
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(audio.slice(0, half))
          sendRest = () => {
            controller.enqueue(audio.slice(half))
            controller.close()
          }
        }
      })
      const response = fetch(`http://127.0.0.1:${portA}/entries`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "audio/wav" },
        body,
        duplex: "half"
      } as RequestInit)
      const partial = yield* waitFor(async () => filesIn(audioDir).find((f) => f.startsWith(".partial-")), 20_000)
      // a partial left by an upload that died two hours ago
      const stale = path.join(audioDir, `.partial-${uuid()}-deadbeef`)
      fs.writeFileSync(stale, audio.slice(0, half))
      age(stale, 2)

      yield* serve(yield* env(portB), portB) // B's blob store has swept by the time it answers /healthz
      expect(fs.existsSync(path.join(audioDir, partial))).toBe(true)
      expect(fs.existsSync(stale)).toBe(false)

      sendRest()
      const created = yield* Effect.promise(() => response.then(async (r) => ({ status: r.status, body: await r.json() as any })))
      expect(created.status).toBe(201)
      const stored = yield* Effect.promise(() =>
        fetch(`http://127.0.0.1:${portB}/entries/${created.body.id}/audio`, { headers: { authorization: `Bearer ${key}` } })
          .then(async (r) => ({ status: r.status, bytes: new Uint8Array(await r.arrayBuffer()) }))
      )
      expect(stored.status).toBe(200)
      expect(Buffer.from(stored.bytes).equals(Buffer.from(audio))).toBe(true)
    }), { timeout: 120_000 })

  it.scopedLive("VJ_LEASE_SECONDS=4: a SIGKILLed node's stage is taken over by another node within seconds, not after the 30 s lease of before", () =>
    Effect.gen(function*() {
      const databaseUrl = yield* PgTestDatabase.freshDatabase()
      const audioDir = path.join(yield* tempDir("vj-nodes-audio-"), "audio")
      const transcription = yield* FakeOpenAi.make({ instantText: "hello world this is a test" })
      const ollama = yield* FakeOllama.make()
      const [portA, portB] = [yield* Effect.promise(freePort), yield* Effect.promise(freePort)]
      const env = (port: number) =>
        Effect.map(tempDir("vj-node-"), (dataDir) =>
          nodeEnv({
            port,
            dataDir,
            databaseUrl,
            audioDir,
            transcribeUrl: transcription.url,
            ollamaUrl: ollama.url,
            extra: { VJ_LEASE_SECONDS: "4" }
          }))
      ollama.failNext({ kind: "hang" }) // A's cleanup will be in flight when A dies
      const a: ChildProcess = yield* serve(yield* env(portA), portA)
      const key = yield* pgUserKey(databaseUrl, audioDir)
      const created = yield* call(`http://127.0.0.1:${portA}`, key, "/entries", {
        method: "POST",
        body: audioBytes("wav"),
        headers: { "content-type": "audio/wav" }
      })
      expect(created.status).toBe(201)
      const cleanupRow = () =>
        onDatabase(databaseUrl, (sql) =>
          sql<{ status: string; attempts: number | string; leaseOwner: string | null; leaseExpiresAt: string | null }>`
            SELECT status, attempts, lease_owner AS "leaseOwner", lease_expires_at AS "leaseExpiresAt"
            FROM cleaned_entries WHERE entry_id = ${created.body.id}`)
      const held = yield* waitFor(async () => {
        const [row] = await Effect.runPromise(cleanupRow())
        return row?.status === "processing" ? row : undefined
      }, 30_000)
      expect(held.leaseOwner).toContain(`-${a.pid}-`)
      // the lease A holds is (at most) 4 s long: a stored value, not a timing
      expect(new Date(held.leaseExpiresAt!).getTime() - Date.now()).toBeLessThanOrEqual(4_500)

      yield* serve(yield* env(portB), portB)
      a.kill("SIGKILL")
      yield* Effect.promise(() => exitOf(a))
      // with the old fixed lease (30 s, heartbeat 10 s) B could not claim the row for at least 20 s
      const done = yield* waitFor(async () => {
        const [row] = await Effect.runPromise(cleanupRow())
        return row?.status === "completed" ? row : undefined
      }, 15_000)
      expect(Number(done.attempts)).toBe(2) // A's attempt, then B's
    }), { timeout: 120_000 })
})
