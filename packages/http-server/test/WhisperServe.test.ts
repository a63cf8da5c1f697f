/**
 * `serve` with local Whisper, as its own process: `VJ_TRANSCRIBER=auto`
 * takes the model in VJ_DATA_DIR/models; SIGTERM during a long
 * transcription ends the whisper child and the server within the grace and
 * hands the row back; without the model the server says once which command
 * gets one and transcribes with pocketsphinx, finishing the handed-back entry.
 * The model has random weights (made here): it runs the real binding, so
 * the run is real work, but hears nothing useful.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { SqlClient } from "@effect/sql"
import { SqliteJournalStore } from "@voice-journal/adapter-sqlite"
import { audioFile } from "../../core/test/support/Audio.js"
import * as FakeOllama from "../../core/test/support/FakeOllama.js"
import { tinyShape, writeRandomModel } from "../../core/test/support/GgmlModel.js"
import { cli, exitOf, freePort, serve, serverEnv, tempDir } from "./support/TestServer.js"

/** Child processes of `pid` (Linux /proc), with their command lines. */
const childrenOf = (pid: number) =>
  fs.readdirSync("/proc").filter((d) => /^\d+$/.test(d)).flatMap((d) => {
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, "utf8")
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1])
      return ppid === pid ? [{ pid: Number(d), cmdline: fs.readFileSync(`/proc/${d}/cmdline`, "utf8").split("\0") }] : []
    } catch {
      return [] // the process ended while we looked
    }
  })

const isAlive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

describe("serve with local Whisper (server process)", () => {
  it.scopedLive("SIGTERM during a long transcription: the whisper child and the server end within the grace, the row is due again, the next start finishes it", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir("vj-whisper-serve-")
      const ollama = yield* FakeOllama.make()
      const port = yield* Effect.promise(freePort)
      const env = serverEnv({
        port,
        dataDir: dir,
        transcribeUrl: "http://127.0.0.1:9", // not used: VJ_TRANSCRIBER=auto below
        ollamaUrl: ollama.url,
        extra: { VJ_TRANSCRIBER: "auto", VJ_SHUTDOWN_GRACE_SECONDS: "1", VJ_WHISPER_THREADS: "1", VJ_LANGUAGE: "en" }
      })
      const model = path.join(dir, "models", "ggml-base.bin")
      fs.mkdirSync(path.dirname(model), { recursive: true })
      writeRandomModel(model, tinyShape)
      // half a minute of real speech: whisper works on it for a while, pocketsphinx still finishes it in the test
      const long = path.join(dir, "long.wav")
      execFileSync("ffmpeg", ["-loglevel", "error", "-y", "-stream_loop", "8", "-i", audioFile("wav"), "-c:a", "pcm_s16le", long])
      const key = cli(env, ["users", "create", "alice"]).trim().split("\n").at(-1)!

      const first = yield* serve(env, port)
      const created = yield* Effect.promise(() =>
        fetch(`http://127.0.0.1:${port}/entries`, {
          method: "POST",
          headers: { authorization: `Bearer ${key}`, "content-type": "audio/wav" },
          body: fs.readFileSync(long)
        }).then((r) => r.json() as Promise<{ id: string }>)
      )
      const entry = () =>
        fetch(`http://127.0.0.1:${port}/entries/${created.id}`, { headers: { authorization: `Bearer ${key}` } }).then((r) => r.json() as Promise<any>)
      let whisper: { pid: number } | undefined
      for (let i = 0; i < 600 && whisper === undefined; i++) {
        whisper = childrenOf(first.pid!).find((c) => c.cmdline.includes("-e"))
        if (whisper === undefined) yield* Effect.sleep("100 millis")
      }
      expect(whisper).toBeDefined()
      expect((yield* Effect.promise(entry)).transcription.status).toBe("processing")

      first.kill("SIGTERM")
      const code = yield* Effect.promise(() => exitOf(first))
      expect(code).toBe(0)
      expect(isAlive(whisper!.pid)).toBe(false)
      const rows = yield* Effect.scoped(Effect.flatMap(SqlClient.SqlClient, (sql) =>
        sql<{ status: string; attempts: number; lease_owner: string | null }>`SELECT status, attempts, lease_owner FROM transcriptions`
      ).pipe(Effect.provide(SqliteJournalStore.layer({ filename: path.join(dir, "journal.db") }))))
      expect(rows).toStrictEqual([{ status: "pending", attempts: 0, lease_owner: null }])

      // without the model: one warning naming the command, and pocketsphinx finishes the handed-back entry
      fs.rmSync(model)
      const second = yield* serve(env, port, "pipe")
      let output = ""
      second.stdout!.on("data", (d: Buffer) => (output += d.toString()))
      second.stderr!.on("data", (d: Buffer) => (output += d.toString()))
      let done: any
      for (let i = 0; i < 3000; i++) {
        done = yield* Effect.promise(entry)
        if (["completed", "failed"].includes(done.transcription?.status)) break
        yield* Effect.sleep("100 millis")
      }
      expect(done.transcription.status).toBe("completed")
      expect(done.transcription.engine).toBe("pocketsphinx_continuous")
      expect(done.transcription.attempts).toBe(1) // the interrupted attempt was handed back, not counted
      const warnings = output.split("\n").filter((l) => l.includes("voice-journal models pull base"))
      expect(warnings).toHaveLength(1)
      expect(warnings[0]).toContain(`no Whisper model at ${model}: transcribing with pocketsphinx`)
      expect(warnings[0]).toContain("141 MiB")
    }), { timeout: 480_000 })
})
