/**
 * Several nodes share Notion's rate limit: three server processes on one
 * PostgreSQL database push 30 entries to ONE loopback Notion that enforces
 * 3 requests per second. With one shared budget every entry gets exactly
 * one page and (almost) no request is refused (0 of 64 when written); with
 * a budget per process the three nodes send up to 9 requests per second and
 * Notion answered 14 of them with 429.
 */
import { describe, expect, it } from "@effect/vitest"
import { SqlClient } from "@effect/sql"
import { PgJournalStore, PgTestDatabase } from "@voice-journal/adapter-postgres"
import { BlobStore, VoiceJournal, WorkSignal } from "@voice-journal/core"
import { ConfigProvider, Effect, Layer, Option, Redacted } from "effect"
import * as path from "node:path"
import { audioBytes } from "../../core/test/support/Audio.js"
import * as FakeNotion from "../../core/test/support/FakeNotion.js"
import * as FakeOllama from "../../core/test/support/FakeOllama.js"
import * as FakeOpenAi from "../../core/test/support/FakeOpenAiTranscription.js"
import { config } from "../src/Config.js"
import { freePort, serve, tempDir } from "./support/TestServer.js"

const nodes = 3
const entriesPerNode = 10
const requestsPerSecond = 3

describe("Notion budget across nodes (PostgreSQL)", () => {
  it.scopedLive("three processes stay under one shared Notion budget: one page per entry, (almost) no 429", () =>
    Effect.gen(function*() {
      const url = yield* PgTestDatabase.freshDatabase()
      const dir = yield* tempDir("vj-notion-budget-")
      const ollama = yield* FakeOllama.make()
      const transcription = yield* FakeOpenAi.make({ instantText: "hello world this is a test" })
      const notion = yield* FakeNotion.make()
      // Notion's documented limit: an average of 3 requests per second, some bursts allowed; one
      // token of burst more than the budget's own, for requests that reach the fake late
      notion.limitRate({ perSecond: requestsPerSecond, burst: requestsPerSecond + 2 })

      // the user is made in-process (the CLI is not what this test is about)
      const services = Layer.mergeAll(
        PgJournalStore.layer({ url, maxConnections: 2 }),
        BlobStore.layerFileSystem({ directory: path.join(dir, "audio") }),
        WorkSignal.layer
      )
      const db = yield* Layer.build(Layer.merge(VoiceJournal.layer(), services).pipe(Layer.provideMerge(services)))
      const { apiKey } = yield* Effect.flatMap(VoiceJournal.VoiceJournal, (j) => j.createUser("alice")).pipe(Effect.provide(db))
      const key = Redacted.value(apiKey)

      const ports: Array<number> = []
      for (let i = 0; i < nodes; i++) ports.push(yield* Effect.promise(freePort))
      const envFor = (port: number, i: number) => ({
        ...process.env,
        VJ_DATABASE_URL: url,
        VJ_DATA_DIR: path.join(dir, `node-${i}`),
        VJ_AUDIO_DIR: path.join(dir, "audio"), // shared, as on real nodes: any node may run any stage
        VJ_PORT: String(port),
        VJ_TRANSCRIBER: "openai",
        VJ_TRANSCRIBE_URL: transcription.url,
        OLLAMA_HOST: ollama.url,
        NOTION_TOKEN: notion.token,
        VJ_NOTION_DATABASE_ID: notion.databaseId,
        VJ_NOTION_BASE_URL: notion.url,
        VJ_NOTION_REQUESTS_PER_SECOND: String(requestsPerSecond),
        VJ_UPLOADS_PER_MINUTE: "1000",
        VJ_RATE_LIMIT_PER_MINUTE: "10000",
        VJ_SHUTDOWN_GRACE_SECONDS: "1"
      })
      yield* Effect.all(ports.map((port, i) => serve(envFor(port, i), port)), { concurrency: "unbounded" })

      // 30 uploads spread over the three nodes
      const ids = yield* Effect.forEach(
        Array.from({ length: nodes * entriesPerNode }, (_, i) => ports[i % nodes]!),
        (port) =>
          Effect.promise(() =>
            fetch(`http://127.0.0.1:${port}/entries`, {
              method: "POST",
              headers: { authorization: `Bearer ${key}`, "content-type": "audio/wav" },
              body: audioBytes("wav")
            }).then(async (r) => {
              if (r.status !== 201 && r.status !== 202) throw new Error(`upload: ${r.status} ${await r.text()}`)
              return ((await r.json()) as { id: string }).id
            })
          ),
        { concurrency: 6 }
      )

      // every sync finished (or gave up): counted in the database, not timed
      const sql = yield* SqlClient.SqlClient.pipe(Effect.provide(db))
      let open = ids.length
      for (let i = 0; i < 1200 && open > 0; i++) {
        yield* Effect.sleep("250 millis")
        const rows = yield* sql<{ n: number }>`SELECT CAST(count(*) AS INTEGER) AS n FROM deliveries WHERE status = 'success'`
        open = ids.length - rows[0]!.n
      }
      const perEntry = new Map<string, number>()
      for (const page of notion.pages()) perEntry.set(page.entryId, (perEntry.get(page.entryId) ?? 0) + 1)

      expect({ open, rateLimited: notion.rateLimited() }).toEqual({ open: 0, rateLimited: expect.any(Number) })
      expect([...perEntry.keys()].sort()).toEqual([...ids].sort())
      expect([...perEntry.values()].every((n) => n === 1)).toBe(true)
      // with one budget per process the fake refused 14 (3 nodes × 3/s against 3/s)
      expect(notion.rateLimited()).toBeLessThanOrEqual(2)
      expect(notion.requests.length).toBeGreaterThanOrEqual(2 * ids.length) // a query and a create per entry
    }), { timeout: 360_000 })
})

describe("VJ_NOTION_REQUESTS_PER_SECOND", () => {
  const load = (env: Record<string, string>) =>
    config.pipe(
      Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries({ NOTION_TOKEN: "t", VJ_NOTION_DATABASE_ID: "db", ...env })))),
      Effect.map((c) => Option.getOrThrow(c.notion).requestsPerSecond)
    )

  it.effect("defaults to 3, takes fractions; 0 or junk stop the start-up naming the variable", () =>
    Effect.gen(function*() {
      expect(yield* load({})).toBe(3)
      expect(yield* load({ VJ_NOTION_REQUESTS_PER_SECOND: "2.5" })).toBe(2.5)
      for (const bad of ["0", "-1", "fast"]) {
        const error = yield* Effect.flip(load({ VJ_NOTION_REQUESTS_PER_SECOND: bad }))
        expect(String(error)).toContain("VJ_NOTION_REQUESTS_PER_SECOND")
      }
    }))
})
