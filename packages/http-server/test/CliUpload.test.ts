/**
 * `voice-journal upload a b c …` gets through a server that says "not now":
 * it waits for `Retry-After` on 429/503, retries a connection the server
 * reset (bounded), re-sends the whole file each time, says on stderr when and
 * why it waits, and never retries a 4xx.
 *
 * The real server's upload window is one minute, so a loopback gate in front
 * of it plays the busy server: it answers the first attempts itself (429 and
 * 503 with `Retry-After: 1`, one reset connection) and forwards the rest to
 * the started server unchanged.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as path from "node:path"
import { audioBytes } from "../../core/test/support/Audio.js"
import { call, packageDir, start } from "./support/TestServer.js"

type Verdict = "429" | "503" | "reset" | "forward"

/** A gate in front of `target`: the n-th upload attempt gets `script[n]` (then "forward"). */
const gate = (target: string, script: ReadonlyArray<Verdict>) =>
  Effect.acquireRelease(
    Effect.promise(() =>
      new Promise<{ url: string; attempts: Array<{ file: string; verdict: Verdict; bytes: number }>; close: () => void }>((resolve) => {
        const attempts: Array<{ file: string; verdict: Verdict; bytes: number }> = []
        const server = http.createServer((req, res) => {
          const isUpload = req.method === "POST" && req.url === "/entries"
          const verdict: Verdict = isUpload ? script[attempts.length] ?? "forward" : "forward"
          const attempt = { file: String(req.headers["x-filename"] ?? ""), verdict, bytes: 0 }
          if (isUpload) attempts.push(attempt)
          req.on("data", (chunk: Buffer) => (attempt.bytes += chunk.length))
          if (verdict === "429") {
            // like the rate limiter: answered before the body is read
            res.writeHead(429, { "content-type": "application/json", "retry-after": "1" })
            res.end(JSON.stringify({ error: "rate_limited", message: "too many uploads; try again later" }))
            req.resume()
            return
          }
          if (verdict === "reset") {
            req.socket.destroy()
            return
          }
          req.once("end", () => {
            if (verdict === "503") {
              res.writeHead(503, { "content-type": "application/json", "retry-after": "1" })
              res.end(JSON.stringify({ error: "unavailable", message: "the database is busy (locked by another process); retry shortly" }))
            }
          })
          if (verdict === "503") return req.resume()
          const upstream = http.request(target + req.url, { method: req.method, headers: req.headers }, (answer) => {
            res.writeHead(answer.statusCode ?? 502, answer.headers)
            answer.pipe(res)
          })
          req.pipe(upstream)
        })
        server.listen(0, "127.0.0.1", () =>
          resolve({
            url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
            attempts,
            close: () => {
              server.closeAllConnections()
              server.close()
            }
          })
        )
      })
    ),
    (g) => Effect.sync(() => g.close())
  )

/** Runs `voice-journal upload …` to completion. */
const upload = (env: NodeJS.ProcessEnv, args: ReadonlyArray<string>) =>
  Effect.promise(() =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, ["--import", "tsx", "--conditions=source", "src/bin.ts", "upload", ...args], { cwd: packageDir, env })
      let stdout = ""
      let stderr = ""
      child.stdout.on("data", (d) => (stdout += d))
      child.stderr.on("data", (d) => (stderr += d))
      child.on("exit", (code) => resolve({ code, stdout, stderr }))
    })
  )

describe("CLI upload against a busy server", () => {
  it.scopedLive("waits as told on 429 and 503, retries a reset connection, uploads every file exactly once and says when it waits", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const g = yield* gate(s.url, ["429", "429", "503", "reset"])
      const bytes = audioBytes("wav")
      const files = ["note1.wav", "note2.wav", "note3.wav"].map((name) => {
        const file = path.join(s.dir, name)
        fs.writeFileSync(file, bytes)
        return file
      })
      const run = yield* upload({ ...process.env, VJ_URL: g.url, VJ_API_KEY: key }, [...files, "--no-follow"])
      expect(run.code, run.stderr).toBe(0)
      expect(run.stderr).toContain("server busy (429): waiting 1 s before retrying note1.wav")
      expect(run.stderr).toContain("server busy (503): waiting 1 s before retrying note1.wav")
      expect(run.stderr).toMatch(/server unreachable \((ECONNRESET|UND_ERR_SOCKET|EPIPE)\): retrying note1\.wav in \d+ s/)
      for (const name of ["note1.wav", "note2.wav", "note3.wav"]) {
        expect(run.stdout).toMatch(new RegExp(`${name.replace(".", "\\.")} → entry [0-9a-f-]{36}`))
      }
      // every attempt that reached the server carried the whole file (a fresh stream each time)
      const forwarded = g.attempts.filter((a) => a.verdict === "forward")
      expect(forwarded.map((a) => a.file)).toEqual(["note1.wav", "note2.wav", "note3.wav"])
      for (const a of forwarded) expect(a.bytes).toBe(bytes.byteLength)
      // exactly once each on the server
      const list = yield* call(s.url, key, "/entries?limit=100")
      expect(list.body.total).toBe(3)
      expect(list.body.items.map((e: any) => e.originalFilename).sort()).toEqual(["note1.wav", "note2.wav", "note3.wav"])
      for (const e of list.body.items) expect(e.sizeBytes).toBe(bytes.byteLength)
      expect(run.stdout + run.stderr).not.toContain(key)
    }), 120_000)

  it.scopedLive("a 4xx is final: no retry, a clear error, a non-zero exit", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const g = yield* gate(s.url, [])
      const file = path.join(s.dir, "notes.txt")
      fs.writeFileSync(file, "not audio at all, just text\n".repeat(100))
      const run = yield* upload({ ...process.env, VJ_URL: g.url, VJ_API_KEY: key }, [file, "--no-follow"])
      expect(run.code).not.toBe(0)
      expect(run.stdout + run.stderr).toContain("415")
      expect(run.stderr).not.toContain("waiting")
      expect(g.attempts.length).toBe(1)
      const wrongKey = yield* upload({ ...process.env, VJ_URL: g.url, VJ_API_KEY: "vj_wrong" }, [file, "--no-follow"])
      expect(wrongKey.code).not.toBe(0)
      expect(wrongKey.stdout + wrongKey.stderr).toContain("401")
      expect(g.attempts.length).toBe(2)
      expect((yield* call(s.url, key, "/entries")).body.total).toBe(0)
    }), 120_000)
})
