/**
 * Workers in separate processes, killed with SIGKILL at the worst moments,
 * and many workers sharing one queue.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Redacted, Stream } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as YAML from "yaml"
import * as AudioPieces from "../src/AudioPieces.js"
import * as BlobStore from "../src/BlobStore.js"
import { audioBytes, longRecording } from "./support/Audio.js"
import * as FakeOpenAi from "./support/FakeOpenAiTranscription.js"
import { eventually, fastPipeline, type Harness, make, statusCounts, type StoreKind } from "./support/PipelineHarness.js"
import type { WorkerConfig } from "./support/worker-process.js"

const script = path.join(path.dirname(fileURLToPath(import.meta.url)), "support", "worker-process.ts")

/** Starts a worker process; killed (SIGKILL) when the test's scope closes, if still alive. */
const spawnWorker = (config: WorkerConfig) =>
  Effect.acquireRelease(
    Effect.async<ChildProcess>((resume) => {
      const child = spawn(process.execPath, ["--import", "tsx", "--conditions=source", script, JSON.stringify(config)], {
        cwd: path.dirname(script),
        stdio: ["ignore", "pipe", "inherit"]
      })
      let out = ""
      child.stdout!.on("data", (d: Buffer) => {
        out += d.toString()
        if (out.includes("ready")) resume(Effect.succeed(child))
      })
      child.on("exit", (code) => resume(Effect.dieMessage(`worker exited early (${code}): ${out}`)))
    }),
    (child) => Effect.sync(() => child.exitCode === null && child.kill("SIGKILL"))
  )

const killHard = (child: ChildProcess) =>
  Effect.async<void>((resume) => {
    child.once("exit", () => resume(Effect.void))
    child.kill("SIGKILL")
  })

const workerConfig = (h: Harness, extra: Partial<WorkerConfig> = {}): WorkerConfig => ({
  kind: h.kind,
  storeLocation: h.storeLocation,
  blobDir: h.blobDir,
  lease: "2 seconds",
  ollamaUrl: h.ollama.url,
  transcribeUrl: h.transcription.url,
  notion: { url: h.notion.url, token: h.notion.token, databaseId: h.notion.databaseId },
  ...extra
})

for (const kind of ["sqlite", "postgres"] as const satisfies ReadonlyArray<StoreKind>) {
  describe(`Crash recovery on ${kind}`, () => {
    it.scopedLive("a worker SIGKILLed mid-stage: after the lease expires another worker completes it, once", () =>
      Effect.gen(function*() {
        const h = yield* make({ kind, instantTranscription: true })
        const { user } = yield* h.journal.createUser("u")
        h.ollama.failNext({ kind: "hang" }) // the cleanup will be in flight when the worker dies
        const worker = yield* spawnWorker(workerConfig(h))
        const { entry } = yield* h.journal.ingest(user.id, Stream.make(audioBytes("wav")))
        const inFlight = yield* eventually(h.journal.getEntry(user.id, entry.id).pipe(
          Effect.map((d) => d.cleanup?.status === "processing" ? d.cleanup : undefined)
        ))
        yield* killHard(worker)
        expect((yield* h.journal.getEntry(user.id, entry.id)).cleanup!.status).toBe("processing") // stranded…
        yield* h.startPipeline(fastPipeline)
        const done = yield* eventually(h.journal.getEntry(user.id, entry.id).pipe(
          Effect.map((d) => d.notionSync?.status === "success" ? d : undefined)
        ))
        expect(done.cleanup!.id).toBe(inFlight.id) // …and then taken over, not re-created
        expect(done.cleanup!.attempts).toBe(2)
        const cleanups = yield* h.journal.listCleanups(user.id, entry.id)
        expect(cleanups.filter((c) => c.isPrimary).length).toBe(1)
        expect(cleanups.length).toBe(1)
        expect(h.notion.pages().length).toBe(1)
        expect((yield* statusCounts(h.sql, "cleaned_entries")).processing).toBeUndefined()
      }))

    it.scopedLive("a worker SIGKILLed during piece 4 of a long recording: after restart, pieces 1-3 are not sent again", () =>
      Effect.gen(function*() {
        const recording = longRecording(180)
        const h = yield* make({ kind, notion: false, transcription: { sentences: yield* Effect.promise(FakeOpenAi.longSentences) } })
        const { user } = yield* h.journal.createUser("u")
        h.transcription.failAfter(3, { kind: "hang" }) // piece 4 is in flight when the worker dies
        // one piece at a time, so pieces 1-3 are done and stored when piece 4 is sent
        const worker = yield* spawnWorker(workerConfig(h, { chunkSeconds: 40, pieceConcurrency: 1 }))
        const { entry } = yield* h.journal.ingest(user.id, Stream.make(new Uint8Array(fs.readFileSync(recording.file))))
        const stranded = yield* eventually(h.journal.getEntry(user.id, entry.id).pipe(
          Effect.map((d) => h.transcription.requests.length === 4 && d.transcription?.piecesDone === 3 ? d.transcription : undefined)
        ))
        yield* killHard(worker)
        expect(stranded.status).toBe("processing")
        const n = stranded.piecesTotal!
        expect(n).toBeGreaterThanOrEqual(5)
        expect(fs.existsSync(AudioPieces.piecesDirectory(stranded.id))).toBe(true) // what the killed worker left behind…
        yield* h.startPipeline({ ...fastPipeline, chunkSeconds: 40, pieceConcurrency: 1 })
        const done = yield* eventually(h.journal.getEntry(user.id, entry.id).pipe(
          Effect.map((d) => d.transcription?.status === "completed" ? d.transcription : undefined)
        ))
        expect(done.id).toBe(stranded.id)
        expect(done.text).toBe(recording.spoken.join(" "))
        expect(done.piecesDone).toBe(n)
        // pieces 1-3 once, piece 4 twice (its first answer never came), the rest once
        expect(h.transcription.requests.length).toBe(n + 1)
        expect(h.transcription.requests.filter((r) => r.answer !== undefined).length).toBe(n)
        expect(fs.existsSync(AudioPieces.piecesDirectory(stranded.id))).toBe(false) // …removed when the run resumed here
      }), { timeout: 300_000 })

    it.scopedLive("a worker SIGKILLed between Notion's 'page created' and the row update: no second page", () =>
      Effect.gen(function*() {
        const h = yield* make({ kind, instantTranscription: true })
        const { user } = yield* h.journal.createUser("u")
        h.notion.applyThenHang("POST /v1/pages") // Notion creates the page; the worker never hears back
        const worker = yield* spawnWorker(workerConfig(h))
        const { entry } = yield* h.journal.ingest(user.id, Stream.make(audioBytes("wav")))
        yield* eventually(Effect.sync(() => h.notion.pages().length === 1 ? true : undefined))
        yield* killHard(worker)
        const stranded = (yield* h.journal.getEntry(user.id, entry.id)).notionSync!
        expect(stranded.status).toBe("processing")
        expect(stranded.notionPageId).toBeNull() // the row never learned the page id
        yield* h.startPipeline(fastPipeline)
        const done = yield* eventually(h.journal.getEntry(user.id, entry.id).pipe(
          Effect.map((d) => d.notionSync?.status === "success" ? d : undefined)
        ))
        const pages = h.notion.pages()
        expect(pages.length).toBe(1)
        expect(done.notionSync!.notionPageId).toBe(pages[0]!.id)
        expect(pages[0]!.blocks.map((b) => b.type)).toEqual(["paragraph", "toggle"])
      }))
  })
}

describe("Crash recovery of deliveries", () => {
  it.scopedLive("a worker SIGKILLed after the webhook received the message but before the row update: redelivered with the same webhook-id", () =>
    Effect.gen(function*() {
      const h = yield* make({ kind: "sqlite", notion: false, instantTranscription: true })
      const { user } = yield* h.journal.createUser("u")
      yield* h.destinations.add(user.id, { kind: "webhook", name: "hook", config: { url: h.webhook.url }, secret: Redacted.make(h.webhook.secret) })
      h.webhook.applyThenHang() // the receiver has the message; the worker never hears back
      // no server-wide Notion in this worker: the webhook is the entry's only destination
      const worker = yield* spawnWorker(workerConfig(h, { notion: undefined, destinations: { markdownRoot: h.markdownRoot } }))
      const { entry } = yield* h.journal.ingest(user.id, Stream.make(audioBytes("wav")))
      yield* eventually(Effect.sync(() => h.webhook.received().length === 1 ? true : undefined))
      yield* killHard(worker)
      const deliveries = (yield* h.journal.getEntry(user.id, entry.id)).deliveries
      expect(deliveries.length).toBe(1)
      const stranded = deliveries[0]
      expect(stranded!.status).toBe("processing")
      expect(stranded!.externalRef).toBe(stranded!.id) // the message id was recorded before sending
      yield* h.startPipeline(fastPipeline)
      const done = yield* eventually(h.journal.getEntry(user.id, entry.id).pipe(
        Effect.map((d) => d.deliveries[0]?.status === "success" ? d : undefined)
      ))
      const messages = h.webhook.received()
      expect(messages.map((m) => [m.id, m.verified])).toEqual([[stranded!.id, true], [stranded!.id, true]])
      expect(done.deliveries[0]!.id).toBe(stranded!.id)
    }), { timeout: 240_000 })

  it.scopedLive("a worker SIGKILLed after the Markdown file was written but before the row update: the restarted worker rewrites the same file, no second one", () =>
    Effect.gen(function*() {
      const h = yield* make({ kind: "sqlite", notion: false, instantTranscription: true })
      const { user } = yield* h.journal.createUser("u")
      yield* h.destinations.add(user.id, { kind: "markdown", name: "vault", config: { folder: "v" } })
      const folder = path.join(h.markdownRoot, "v")
      const delivered = path.join(h.dir, "delivered") // the worker writes it once the file is written, then hangs before the row update
      const destinations = { markdownRoot: h.markdownRoot }
      const worker = yield* spawnWorker(workerConfig(h, { notion: undefined, destinations, holdAfterDelivery: delivered }))
      const { entry } = yield* h.journal.ingest(user.id, Stream.make(audioBytes("wav")))
      yield* eventually(Effect.sync(() => fs.existsSync(delivered) ? true : undefined))
      const written = fs.readdirSync(folder)
      expect(written.length).toBe(1)
      const name = written[0]!
      const before = fs.readFileSync(path.join(folder, name), "utf8")
      yield* killHard(worker)
      const deliveries = (yield* h.journal.getEntry(user.id, entry.id)).deliveries
      expect(deliveries.length).toBe(1)
      const stranded = deliveries[0]!
      expect(stranded.status).toBe("processing")
      expect(stranded.externalRef).toBe(name) // the file name was recorded before the write
      // restart: a new worker process on the same database and folder
      yield* spawnWorker(workerConfig(h, { notion: undefined, destinations }))
      const done = (yield* eventually(h.journal.getEntry(user.id, entry.id).pipe(
        Effect.map((d) => d.deliveries[0]?.status === "success" ? d : undefined)
      ))).deliveries[0]!
      expect(done.id).toBe(stranded.id)
      expect(done.attempts).toBe(2)
      expect(done.externalRef).toBe(name)
      expect(fs.readdirSync(folder)).toEqual([name]) // one file, the same name, no temporary files left
      const text = fs.readFileSync(path.join(folder, name), "utf8")
      expect(text).toBe(before)
      const front = YAML.parse(/^---\n([\s\S]*?)\n---\n/.exec(text)![1]!)
      expect(front.entry_id).toBe(entry.id)
      expect(name).toBe(`${front.date.slice(0, 10)} ${front.title}.md`)
      expect(text.endsWith("## Transcript\n\nhello world this is a test\n")).toBe(true) // whole, to the last section
    }), { timeout: 240_000 })

  it.live("a Markdown write SIGKILLed mid-write leaves the old file or the new one, whole, never a part", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vj-atomic-"))
      try {
        const writer = path.join(path.dirname(script), "markdown-writer.ts")
        const { version } = yield* Effect.promise(() => import("./support/markdown-writer.js"))
        for (let round = 0; round < 5; round++) {
          const child = spawn(process.execPath, ["--import", "tsx", "--conditions=source", writer, dir, "note.md"], { cwd: path.dirname(script), stdio: ["ignore", "pipe", "inherit"] })
          yield* Effect.async<void>((resume) => {
            child.stdout!.on("data", (d: Buffer) => d.toString().includes("ready") && resume(Effect.void))
          })
          // kill it while a temporary file is being written (a write is in flight)
          yield* eventually(Effect.sync(() => fs.readdirSync(dir).some((n) => n.endsWith(".tmp")) ? true : undefined), "30 seconds")
          yield* killHard(child)
          const text = fs.readFileSync(path.join(dir, "note.md"), "utf8")
          expect([version("A"), version("B")]).toContain(text)
          for (const n of fs.readdirSync(dir).filter((n) => n.endsWith(".tmp"))) fs.rmSync(path.join(dir, n)) // what a crash leaves (hidden, swept later)
        }
        expect(fs.readdirSync(dir)).toEqual(["note.md"])
      } finally {
        fs.rmSync(dir, { recursive: true, force: true })
      }
    }), { timeout: 300_000 })
})

describe("Many workers on one PostgreSQL", () => {
  it.scopedLive("three worker processes share 10,000 no-op stage runs; no row runs twice to completion", () =>
    Effect.gen(function*() {
      const h = yield* make({ kind: "postgres", notion: false, instantTranscription: true })
      const { user } = yield* h.journal.createUser("u")
      // one shared tiny recording; 10,000 entries, each with a pending transcription
      const blobs = yield* Effect.provide(BlobStore.BlobStore, BlobStore.layerFileSystem({ directory: h.blobDir }))
      const blobKey = BlobStore.makeKey()
      yield* blobs.write(blobKey, Stream.make(audioBytes("wav").subarray(0, 2000)))
      const n = 10_000
      yield* h.sql.unsafe(`INSERT INTO voice_entries (id, user_id, blob_key, original_filename, mime_type, size_bytes, sha256, created_at, updated_at)
        SELECT 'e' || g, '${user.id}', '${blobKey}', NULL, 'audio/wav', 2000, 'x', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z'
        FROM generate_series(1, ${n}) g`)
      yield* h.sql.unsafe(`INSERT INTO transcriptions (id, entry_id, user_id, make_primary, status, attempts, next_attempt_at, created_at, updated_at)
        SELECT 't' || g, 'e' || g, '${user.id}', 1, 'pending', 0, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z'
        FROM generate_series(1, ${n}) g`)
      const logs = [0, 1, 2].map((i) => path.join(h.dir, `runs-${i}.log`))
      for (const log of logs) fs.writeFileSync(log, "")
      yield* Effect.all(logs.map((noopLog) => spawnWorker({ ...workerConfig(h), lease: "30 seconds", concurrency: 4, noopLog })), { concurrency: "unbounded" })
      yield* eventually(statusCounts(h.sql, "cleaned_entries").pipe(Effect.map((c) => c.completed === n ? c : undefined)), "8 minutes")
      const runs = logs.map((log) => fs.readFileSync(log, "utf8").split("\n").filter(Boolean))
      const all = runs.flat()
      expect(all.length).toBe(n)
      expect(new Set(all).size).toBe(n)
      for (const r of runs) expect(r.length).toBeGreaterThan(0) // all three took part
      expect(yield* statusCounts(h.sql, "transcriptions")).toEqual({ completed: n })
      const primaries = yield* h.sql.unsafe<{ n: number | string }>(`SELECT count(*) AS n FROM cleaned_entries WHERE is_primary = 1`)
      expect(Number(primaries[0]!.n)).toBe(n)
    }), { timeout: 600_000 })
})
