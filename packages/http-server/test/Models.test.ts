import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { createHash, randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as Models from "../src/Models.js"

// a real HTTP server on loopback serving a small "model"; tests never download
const body = randomBytes(256 * 1024 + 17)
const sha256 = createHash("sha256").update(body).digest("hex")

interface Served {
  url: string
  /** `Range` headers received, in order (`null`: none). */
  readonly ranges: Array<string | null>
  /** Cut the connection after this many body bytes, on the next request only. */
  cutAfter: number | undefined
  /** Answer 200 with the whole file even when a range is asked for. */
  ignoreRange: boolean
}

const serve = Effect.acquireRelease(
  Effect.async<{ served: Served; server: http.Server }>((resume) => {
    const served: Served = { url: "", ranges: [], cutAfter: undefined, ignoreRange: false }
    const server = http.createServer((req, res) => {
      const range = req.headers.range ?? null
      served.ranges.push(range)
      const start = range !== null && !served.ignoreRange ? Number(/bytes=(\d+)-/.exec(range)![1]) : 0
      const slice = body.subarray(start)
      res.writeHead(start > 0 ? 206 : 200, {
        "content-length": slice.length,
        ...(start > 0 ? { "content-range": `bytes ${start}-${body.length - 1}/${body.length}` } : {})
      })
      const cut = served.cutAfter
      served.cutAfter = undefined
      if (cut !== undefined) {
        res.write(slice.subarray(0, cut), () => res.destroy()) // the connection dies mid-body
      } else res.end(slice)
    })
    server.listen(0, "127.0.0.1", () => {
      served.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/ggml-test.bin`
      resume(Effect.succeed({ served, server }))
    })
    return Effect.sync(() => {
      server.close()
    })
  }),
  ({ server }) =>
    Effect.async<void>((resume) => {
      server.close(() => resume(Effect.void))
    })
)

const spec = (url: string, overrides: Partial<Models.ModelSpec> = {}): Models.ModelSpec => ({
  name: "test",
  file: "ggml-test.bin",
  url,
  bytes: body.length,
  sha256,
  summary: "a test file",
  ...overrides
})

const tempDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "vj-models-"))

describe("models pull (download against a loopback HTTP server)", () => {
  it.scoped("downloads, verifies and names the file; reports the size first and progress up to it", () =>
    Effect.gen(function*() {
      const { served } = yield* serve
      const dir = tempDir()
      const started: Array<[number, number]> = []
      let last = 0
      const file = yield* Models.pull(spec(served.url), dir, {
        onStart: (total, from) => started.push([total, from]),
        onProgress: (received) => (last = received)
      })
      expect(file).toBe(path.join(dir, "ggml-test.bin"))
      expect(fs.readFileSync(file).equals(body)).toBe(true)
      expect(started).toEqual([[body.length, 0]])
      expect(last).toBe(body.length)
      expect(fs.readdirSync(dir)).toEqual(["ggml-test.bin"])
      // already there: nothing fetched again
      yield* Models.pull(spec(served.url), dir)
      expect(served.ranges).toEqual([null])
    }))

  it.scoped("a cut connection keeps the part; the next pull resumes it with Range and verifies the whole file", () =>
    Effect.gen(function*() {
      const { served } = yield* serve
      const dir = tempDir()
      served.cutAfter = 100_000
      const error = yield* Effect.flip(Models.pull(spec(served.url), dir))
      expect(error._tag).toBe("ModelDownloadError")
      expect(error.message).toMatch(/was cut off at .* MiB of 0\.3 MiB .*run the same command again to resume/)
      expect(fs.existsSync(path.join(dir, "ggml-test.bin"))).toBe(false)
      const partSize = fs.statSync(path.join(dir, "ggml-test.bin.part")).size
      expect(partSize).toBeGreaterThan(0)
      expect(partSize).toBeLessThan(body.length)

      const started: Array<[number, number]> = []
      const file = yield* Models.pull(spec(served.url), dir, { onStart: (total, from) => started.push([total, from]) })
      expect(served.ranges).toEqual([null, `bytes=${partSize}-`])
      expect(started).toEqual([[body.length, partSize]])
      expect(fs.readFileSync(file).equals(body)).toBe(true)
      expect(fs.readdirSync(dir)).toEqual(["ggml-test.bin"])
    }))

  it.scoped("a server that ignores the range sends it all again: the part restarts and the file is still right", () =>
    Effect.gen(function*() {
      const { served } = yield* serve
      const dir = tempDir()
      fs.writeFileSync(path.join(dir, "ggml-test.bin.part"), body.subarray(0, 5000))
      served.ignoreRange = true
      const file = yield* Models.pull(spec(served.url), dir)
      expect(served.ranges).toEqual(["bytes=5000-"])
      expect(fs.readFileSync(file).equals(body)).toBe(true)
    }))

  it.scoped("a wrong checksum fails, and leaves neither the final file nor a part", () =>
    Effect.gen(function*() {
      const { served } = yield* serve
      const dir = tempDir()
      const error = yield* Effect.flip(Models.pull(spec(served.url, { sha256: "0".repeat(64) }), dir))
      expect(error.message).toBe(
        `the download of test does not match its pinned SHA-256 (got ${sha256}): it was deleted; run the command again`
      )
      expect(fs.readdirSync(dir)).toEqual([])
    }))

  it.scoped("a resumed part that does not belong to the file fails the checksum and is deleted", () =>
    Effect.gen(function*() {
      const { served } = yield* serve
      const dir = tempDir()
      fs.writeFileSync(path.join(dir, "ggml-test.bin.part"), randomBytes(5000)) // someone else's bytes
      const error = yield* Effect.flip(Models.pull(spec(served.url), dir))
      expect(error.message).toMatch(/does not match its pinned SHA-256/)
      expect(fs.readdirSync(dir)).toEqual([])
    }))

  it("every named model has a pinned https URL, a size and a SHA-256; the default is one of them", () => {
    expect(Models.find(Models.defaultModel)).toBeDefined()
    for (const m of Models.catalog) {
      expect(m.url).toMatch(/^https:\/\/huggingface\.co\/ggerganov\/whisper\.cpp\/resolve\/[0-9a-f]{40}\/ggml-/)
      expect(m.url.endsWith(`/${m.file}`)).toBe(true)
      expect(m.sha256).toMatch(/^[0-9a-f]{64}$/)
      expect(m.bytes).toBeGreaterThan(50_000_000)
    }
  })
})
