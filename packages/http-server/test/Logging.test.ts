/**
 * `VJ_LOG_FORMAT=json`: the server as its own process logs one JSON object
 * per line (what log collectors ingest), request logs included; a bad value
 * stops the command naming the variable.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFileSync } from "node:child_process"
import { exitOf, freePort, packageDir, serve, tempDir } from "./support/TestServer.js"

describe("log format", () => {
  it.scopedLive("VJ_LOG_FORMAT=json: every line the server logs is a JSON object, request logs included", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir("vj-logs-")
      const port = yield* Effect.promise(freePort)
      const env = { ...process.env, VJ_DATA_DIR: dir, VJ_PORT: String(port), VJ_LOG_FORMAT: "json", VJ_SHUTDOWN_GRACE_SECONDS: "1" }
      const child = yield* serve(env, port, "pipe")
      let out = ""
      child.stdout!.on("data", (d: Buffer) => (out += d.toString()))
      const answer = yield* Effect.promise(() => fetch(`http://127.0.0.1:${port}/entries?api_key=vj_secret`))
      expect(answer.status).toBe(401)
      child.kill("SIGTERM")
      expect(yield* Effect.promise(() => exitOf(child))).toBe(0)
      const lines = out.split("\n").filter((line) => line.trim() !== "")
      const entries = lines.map((line) => JSON.parse(line) as { message: unknown; logLevel: string })
      expect(entries.some((e) => String(e.message).includes(`Listening on http://127.0.0.1:${port}`))).toBe(true)
      expect(entries.some((e) => JSON.stringify(e).includes("/entries?api_key=REDACTED"))).toBe(true)
      expect(out).not.toContain("vj_secret")
    }), { timeout: 60_000 })

  it.scopedLive("an unknown VJ_LOG_FORMAT stops the command with a message naming it", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir("vj-logs-")
      const failure = yield* Effect.sync(() => {
        try {
          execFileSync(process.execPath, ["--import", "tsx", "--conditions=source", "src/bin.ts", "migrate"], {
            cwd: packageDir,
            env: { ...process.env, VJ_DATA_DIR: dir, VJ_LOG_FORMAT: "xml" },
            encoding: "utf8",
            stdio: "pipe"
          })
          return undefined
        } catch (e) {
          return e as { status: number; stderr: string; stdout: string }
        }
      })
      expect(failure?.status).toBe(1)
      expect(`${failure?.stdout}${failure?.stderr}`).toContain("VJ_LOG_FORMAT")
    }), { timeout: 60_000 })
})
