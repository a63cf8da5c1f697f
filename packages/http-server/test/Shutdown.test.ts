/**
 * The server as its own process: SIGTERM during a slow stage exits 0 within
 * the grace period, leaves nothing `processing`, and a restarted server
 * finishes the entry.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as path from "node:path"
import { SqlClient } from "@effect/sql"
import { SqliteJournalStore } from "@voice-journal/adapter-sqlite"
import { audioBytes } from "../../core/test/support/Audio.js"
import * as FakeOllama from "../../core/test/support/FakeOllama.js"
import * as FakeOpenAi from "../../core/test/support/FakeOpenAiTranscription.js"
import { cli, exitOf, freePort, serve, tempDir } from "./support/TestServer.js"

describe("server process", () => {
  it.scopedLive("SIGTERM during a slow stage: exit 0 within the grace period, nothing left processing, a restart finishes the entry", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir("vj-shutdown-")
      const ollama = yield* FakeOllama.make()
      const transcription = yield* FakeOpenAi.make({ instantText: "hello world this is a test" })
      const port = yield* Effect.promise(freePort)
      const env = {
        ...process.env,
        VJ_DATA_DIR: dir,
        VJ_PORT: String(port),
        VJ_TRANSCRIBER: "openai",
        VJ_TRANSCRIBE_URL: transcription.url,
        OLLAMA_HOST: ollama.url,
        VJ_SHUTDOWN_GRACE_SECONDS: "1"
      }
      const key = cli(env, ["users", "create", "alice"]).trim().split("\n").at(-1)!
      ollama.failNext({ kind: "hang" }) // the cleanup stage will still be running at SIGTERM
      const first = yield* serve(env, port)
      const created = yield* Effect.promise(() =>
        fetch(`http://127.0.0.1:${port}/entries`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "audio/wav" }, body: audioBytes("wav") })
          .then((r) => r.json() as Promise<{ id: string }>)
      )
      const entry = () => fetch(`http://127.0.0.1:${port}/entries/${created.id}`, { headers: { authorization: `Bearer ${key}` } }).then((r) => r.json() as Promise<any>)
      for (let i = 0; i < 300 && (yield* Effect.promise(() => entry())).cleanup?.status !== "processing"; i++) yield* Effect.sleep("100 millis")
      // the stage hangs forever: only the grace period lets the process end (else the test times out)
      first.kill("SIGTERM")
      const code = yield* Effect.promise(() => exitOf(first))
      expect(code).toBe(0)
      const processing = yield* Effect.scoped(Effect.flatMap(SqlClient.SqlClient, (sql) =>
        sql<{ n: number }>`SELECT (SELECT count(*) FROM transcriptions WHERE status = 'processing')
          + (SELECT count(*) FROM cleaned_entries WHERE status = 'processing') AS n`
      ).pipe(Effect.provide(SqliteJournalStore.layer({ filename: path.join(dir, "journal.db") }))))
      expect(processing[0]!.n).toBe(0)
      yield* serve(env, port)
      let done: any
      for (let i = 0; i < 300; i++) {
        done = yield* Effect.promise(() => entry())
        if (done.cleanup?.status === "completed") break
        yield* Effect.sleep("100 millis")
      }
      expect(done.cleanup.status).toBe("completed")
      expect(done.cleanup.attempts).toBe(1) // the interrupted attempt was handed back, not counted
    }), { timeout: 120_000 })
})
