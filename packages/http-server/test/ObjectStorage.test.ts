/**
 * `VJ_BLOB_URL=s3://…`: the server as its own process keeps recordings in
 * S3-compatible object storage (s3rver on loopback), configured only through
 * the environment, as an operator would: upload → transcription (the engine
 * reads a local copy) → cleanup, audio served back with `Range`, nothing in
 * the local audio directory, and the secret key in no output. A bad
 * `VJ_BLOB_URL` or an unusable bucket stops the server with a clear message.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFile, spawn } from "node:child_process"
import { promisify } from "node:util"
import * as path from "node:path"
import * as LoopbackS3 from "../../adapter-s3/test/support/LoopbackS3.js"
import { audioBytes, RECOGNISED_WORDS } from "../../core/test/support/Audio.js"
import * as FakeOllama from "../../core/test/support/FakeOllama.js"
import * as FakeOpenAi from "../../core/test/support/FakeOpenAiTranscription.js"
import { exitOf, filesIn, freePort, packageDir, serve, serverEnv, tempDir, waitFor } from "./support/TestServer.js"

const run = promisify(execFile)

const s3Env = (s3: LoopbackS3.LoopbackS3, blobUrl: string) => ({
  VJ_BLOB_URL: blobUrl,
  AWS_ENDPOINT_URL: s3.endpoint,
  AWS_REGION: s3.region,
  AWS_ACCESS_KEY_ID: s3.accessKeyId,
  AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
  VJ_SHUTDOWN_GRACE_SECONDS: "1"
})

/** Runs `voice-journal serve` until it exits on its own (it must: start-up fails); its exit code and output. */
const serveUntilExit = (env: NodeJS.ProcessEnv) =>
  Effect.promise(async () => {
    const child = spawn(process.execPath, ["--import", "tsx", "--conditions=source", "src/bin.ts", "serve"], { cwd: packageDir, env, stdio: "pipe" })
    let output = ""
    child.stdout.on("data", (d: Buffer) => (output += d.toString()))
    child.stderr.on("data", (d: Buffer) => (output += d.toString()))
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000)
    const code = await exitOf(child)
    clearTimeout(timer)
    return { code, output }
  })

describe("object storage (VJ_BLOB_URL)", () => {
  it.scopedLive("s3://bucket/prefix: upload, transcription and cleanup run on S3; audio comes back with Range; nothing on local disk", () =>
    Effect.gen(function*() {
      const s3 = yield* LoopbackS3.make
      yield* s3.createBucket("journal")
      const transcription = yield* FakeOpenAi.make()
      const ollama = yield* FakeOllama.make()
      const dataDir = yield* tempDir("vj-s3-server-")
      const port = yield* Effect.promise(freePort)
      const env = serverEnv({ port, dataDir, transcribeUrl: transcription.url, ollamaUrl: ollama.url, extra: s3Env(s3, "s3://journal/voice/audio") })
      // not `cli` (execFileSync): the CLI talks to the S3 server in this process, whose event loop must keep running
      const key = (yield* Effect.promise(() =>
        run(process.execPath, ["--import", "tsx", "--conditions=source", "src/bin.ts", "users", "create", "alice"], { cwd: packageDir, env })
      )).stdout.trim().split("\n").at(-1)!
      const child = yield* serve(env, port, "pipe")
      let output = ""
      child.stdout!.on("data", (d: Buffer) => (output += d.toString()))
      child.stderr!.on("data", (d: Buffer) => (output += d.toString()))

      const audio = audioBytes("wav")
      const created = yield* Effect.promise(() =>
        fetch(`http://127.0.0.1:${port}/entries`, {
          method: "POST",
          headers: { authorization: `Bearer ${key}`, "content-type": "audio/wav" },
          body: audio
        }).then(async (r) => ({ status: r.status, body: await r.json() as any }))
      )
      expect(created.status).toBe(201)

      // the recording is an object under the prefix, and only there
      const objects = yield* s3.objects("journal")
      expect(objects.map((o) => [o.key.replace(/[0-9a-f-]{36}$/, "<key>"), o.size])).toEqual([["voice/audio/<key>", audio.byteLength]])
      expect(filesIn(path.join(dataDir, "audio"))).toEqual([])

      // pocketsphinx heard the words: the engine read the bytes from S3 (through a local copy)
      const done = yield* waitFor(async () => {
        const r = await fetch(`http://127.0.0.1:${port}/entries/${created.body.id}`, { headers: { authorization: `Bearer ${key}` } })
        const entry = await r.json() as any
        return entry.cleanup?.status === "completed" ? entry : undefined
      }, 180_000)
      for (const word of RECOGNISED_WORDS) expect(done.transcription.text.toLowerCase()).toContain(word)

      const ranged = yield* Effect.promise(() =>
        fetch(`http://127.0.0.1:${port}/entries/${created.body.id}/audio`, { headers: { authorization: `Bearer ${key}`, range: "bytes=100-1099" } })
          .then(async (r) => ({ status: r.status, contentRange: r.headers.get("content-range"), bytes: new Uint8Array(await r.arrayBuffer()) }))
      )
      expect(ranged.status).toBe(206)
      expect(ranged.contentRange).toBe(`bytes 100-1099/${audio.byteLength}`)
      expect(Buffer.from(ranged.bytes).equals(Buffer.from(audio.subarray(100, 1100)))).toBe(true)
      const whole = yield* Effect.promise(() =>
        fetch(`http://127.0.0.1:${port}/entries/${created.body.id}/audio`, { headers: { authorization: `Bearer ${key}` } })
          .then(async (r) => new Uint8Array(await r.arrayBuffer()))
      )
      expect(Buffer.from(whole).equals(Buffer.from(audio))).toBe(true)

      // deleting the entry removes the object
      const deleted = yield* Effect.promise(() =>
        fetch(`http://127.0.0.1:${port}/entries/${created.body.id}`, { method: "DELETE", headers: { authorization: `Bearer ${key}` } })
      )
      expect(deleted.status).toBe(204)
      expect(yield* s3.objects("journal")).toEqual([])

      child.kill("SIGTERM")
      yield* Effect.promise(() => exitOf(child))
      expect(output).not.toContain(s3.secretAccessKey)
    }), { timeout: 300_000 })

  it.scopedLive("a bad VJ_BLOB_URL, or a bucket that cannot be used, stops the server with a message that says which", () =>
    Effect.gen(function*() {
      const s3 = yield* LoopbackS3.make
      const dataDir = yield* tempDir("vj-s3-bad-")
      const port = yield* Effect.promise(freePort)
      const env = (blobUrl: string) =>
        serverEnv({ port, dataDir, transcribeUrl: "http://127.0.0.1:9", ollamaUrl: "http://127.0.0.1:9", extra: s3Env(s3, blobUrl) })

      const badUrl = yield* serveUntilExit(env("s3:/journal"))
      expect(badUrl.code).toBe(1)
      expect(badUrl.output).toContain("VJ_BLOB_URL")
      expect(badUrl.output).toContain("s3://bucket")

      const noBucket = yield* serveUntilExit(env("s3://no-such-bucket/audio"))
      expect(noBucket.code).toBe(1)
      expect(noBucket.output).toContain(`cannot use bucket "no-such-bucket"`)
      for (const run of [badUrl, noBucket]) expect(run.output).not.toContain(s3.secretAccessKey)
    }), { timeout: 120_000 })
})
