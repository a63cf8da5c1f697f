/**
 * Test support: the real server on loopback, in-process (`start`) or as its
 * own process (`serve`), and small HTTP helpers. Shared by every server test.
 */
import { HttpServer } from "@effect/platform"
import { Context, Effect, Layer, Option, Redacted } from "effect"
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as FakeNotion from "../../../core/test/support/FakeNotion.js"
import * as FakeOllama from "../../../core/test/support/FakeOllama.js"
import * as FakeOpenAi from "../../../core/test/support/FakeOpenAiTranscription.js"
import type { ServerConfig } from "../../src/Config.js"
import * as Server from "../../src/Server.js"

export const maxUploadBytes = 2 * 1024 * 1024

export interface Running {
  readonly url: string
  readonly dir: string
  readonly notion: FakeNotion.FakeNotion
  readonly ollama: FakeOllama.FakeOllama
  readonly key: (name: string) => Effect.Effect<string>
  readonly config: ServerConfig
}

/** Starts the real server on a free port with everything on loopback. */
export const start = (overrides: Partial<ServerConfig> = {}) =>
  Effect.gen(function*() {
    const dir = yield* Effect.acquireRelease(
      Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "vj-server-"))),
      (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
    )
    const transcription = yield* FakeOpenAi.make()
    const ollama = yield* FakeOllama.make()
    const notion = yield* FakeNotion.make()
    const config: ServerConfig = {
      host: "127.0.0.1",
      port: 0,
      dataDir: dir,
      database: { kind: "sqlite", filename: path.join(dir, "journal.db") },
      audioDir: path.join(dir, "audio"),
      maxUploadBytes,
      transcription: { kind: "openai", url: transcription.url, apiKey: Option.none(), model: "whisper-1" },
      ollama: { host: ollama.url, model: "llama3.2", numCtx: 4096 },
      notion: Option.some({ token: Redacted.make(notion.token), databaseId: notion.databaseId, baseUrl: notion.url, maxRetries: 3 }),
      shutdownGraceSeconds: 2,
      limits: { perMinute: 1000, uploadsPerMinute: 1000, authFailuresPerMinute: 1000 },
      ...overrides
    }
    const ctx = yield* Layer.build(Server.layer(config))
    const address = Context.get(ctx, HttpServer.HttpServer).address
    const url = `http://127.0.0.1:${address._tag === "TcpAddress" ? address.port : 0}`
    const key = (name: string) => Effect.promise(() => createUserKey(config, name)).pipe(Effect.map((r) => r.apiKey))
    return { url, dir, notion, ollama, key, config } satisfies Running
  })

/** Creates a user through the CLI's own code path (users create). */
export const createUserKey = async (config: ServerConfig, name: string) => {
  const { VoiceJournal } = await import("@voice-journal/core")
  const { SqliteJournalStore } = await import("@voice-journal/adapter-sqlite")
  const { BlobStore, WorkSignal } = await import("@voice-journal/core")
  const layer = VoiceJournal.layer().pipe(Layer.provide(Layer.mergeAll(
    SqliteJournalStore.layer({ filename: (config.database as { filename: string }).filename }),
    BlobStore.layerFileSystem({ directory: config.audioDir }),
    WorkSignal.layer
  )))
  const { apiKey } = await Effect.runPromise(Effect.flatMap(VoiceJournal.VoiceJournal, (j) => j.createUser(name)).pipe(Effect.provide(layer)))
  return { apiKey: Redacted.value(apiKey) }
}

/** A response as tests read it: status, headers, and the body parsed as JSON when it is JSON. */
export interface CallResult {
  readonly status: number
  readonly headers: Headers
  readonly body: any
}

export const call = (url: string, key: string | undefined, pathname: string, init: RequestInit = {}): Effect.Effect<CallResult> =>
  Effect.promise(async () => {
    const response = await fetch(url + pathname, {
      ...init,
      headers: { ...(key !== undefined ? { authorization: `Bearer ${key}` } : {}), ...init.headers }
    })
    const text = await response.text()
    let body: any = text
    try {
      body = JSON.parse(text)
    } catch {
      // not JSON
    }
    return { status: response.status, headers: response.headers, body }
  })

export const multipart = (bytes: Uint8Array, field = "file", filename = "note.bin"): FormData => {
  const form = new FormData()
  form.append(field, new Blob([bytes]), filename)
  return form
}

export const filesIn = (dir: string) => (fs.existsSync(dir) ? fs.readdirSync(dir) : [])

export const waitFor = <A>(check: () => Promise<A | undefined>, timeoutMs = 60_000) =>
  Effect.promise(async () => {
    const until = Date.now() + timeoutMs
    while (Date.now() < until) {
      const a = await check()
      if (a !== undefined) return a
      await new Promise((r) => setTimeout(r, 100))
    }
    throw new Error("condition not met in time")
  })


// --- the server as its own process ----------------------------------------

/** The http-server package directory (where `src/bin.ts` lives). */
export const packageDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")

export const freePort = () =>
  new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo
      s.close(() => resolve(port))
    })
  })

/** Runs the CLI to completion and returns its stdout. */
export const cli = (env: NodeJS.ProcessEnv, args: Array<string>) =>
  execFileSync(process.execPath, ["--import", "tsx", "--conditions=source", "src/bin.ts", ...args], { cwd: packageDir, env, encoding: "utf8" })

/** Starts `voice-journal serve` as a child process and waits for /healthz; SIGKILLed when the scope closes. */
export const serve = (env: NodeJS.ProcessEnv, port: number, stdio: "ignore" | "pipe" = "ignore") =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const child = spawn(process.execPath, ["--import", "tsx", "--conditions=source", "src/bin.ts", "serve"], { cwd: packageDir, env, stdio })
      for (let i = 0; i < 300; i++) {
        const up = await fetch(`http://127.0.0.1:${port}/healthz`).then(() => true, () => false)
        if (up) return child
        if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`)
        await new Promise((r) => setTimeout(r, 100))
      }
      throw new Error("server did not start")
    }),
    (child) => Effect.sync(() => child.exitCode === null && child.kill("SIGKILL"))
  )

export const exitOf = (child: ChildProcess) =>
  new Promise<number | null>((resolve) => child.exitCode !== null ? resolve(child.exitCode) : child.once("exit", (code) => resolve(code)))

/** A temporary directory removed when the scope closes. */
export const tempDir = (prefix: string) =>
  Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), prefix))),
    (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
  )

/** Like `Running.key`, but also returns the key's id (what rate-limit logs name instead of the key). */
export const keyWithId = (running: Running, name: string) =>
  Effect.promise(async () => {
    const { VoiceJournal, BlobStore, WorkSignal } = await import("@voice-journal/core")
    const { SqliteJournalStore } = await import("@voice-journal/adapter-sqlite")
    const layer = VoiceJournal.layer().pipe(Layer.provide(Layer.mergeAll(
      SqliteJournalStore.layer({ filename: (running.config.database as { filename: string }).filename }),
      BlobStore.layerFileSystem({ directory: running.config.audioDir }),
      WorkSignal.layer
    )))
    const created = await Effect.runPromise(Effect.flatMap(VoiceJournal.VoiceJournal, (j) => j.createUser(name)).pipe(Effect.provide(layer)))
    return { apiKey: Redacted.value(created.apiKey), keyId: created.key.id as string }
  })

/**
 * Like `serve`, for a server speaking HTTPS: waits for /healthz over TLS
 * trusting `ca` (not skipping verification). `output()` is what it logged
 * so far (stdout and stderr). SIGKILLed when the scope closes.
 */
export const serveHttps = (env: NodeJS.ProcessEnv, port: number, ca: string) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const https = await import("node:https")
      const child = spawn(process.execPath, ["--import", "tsx", "--conditions=source", "src/bin.ts", "serve"], { cwd: packageDir, env, stdio: "pipe" })
      let output = ""
      child.stdout!.on("data", (c: Buffer) => (output += c.toString("utf8")))
      child.stderr!.on("data", (c: Buffer) => (output += c.toString("utf8")))
      const healthy = () =>
        new Promise<boolean>((resolve) => {
          const r = https.get({ host: "127.0.0.1", port, path: "/healthz", ca, agent: false }, (res) => {
            res.resume()
            resolve(res.statusCode === 200)
          })
          // not up yet (refused) or not speaking TLS yet: try again
          r.on("error", () => resolve(false))
        })
      for (let i = 0; i < 300; i++) {
        if (await healthy()) return { child, output: () => output }
        if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}: ${output}`)
        await new Promise((r) => setTimeout(r, 100))
      }
      child.kill("SIGKILL")
      throw new Error(`server did not start: ${output}`)
    }),
    ({ child }) => Effect.sync(() => child.exitCode === null && child.kill("SIGKILL"))
  )

/** The environment of one `voice-journal serve` process on loopback engines (a fresh PostgreSQL when `databaseUrl` is given). */
export const serverEnv = (options: {
  readonly port: number
  readonly dataDir: string
  readonly transcribeUrl: string
  readonly ollamaUrl: string
  readonly databaseUrl?: string | undefined
  readonly audioDir?: string | undefined
  readonly extra?: Record<string, string> | undefined
}): NodeJS.ProcessEnv => ({
  ...process.env,
  VJ_PORT: String(options.port),
  VJ_DATA_DIR: options.dataDir,
  VJ_TRANSCRIBER: "openai",
  VJ_TRANSCRIBE_URL: options.transcribeUrl,
  OLLAMA_HOST: options.ollamaUrl,
  ...(options.databaseUrl !== undefined ? { VJ_DATABASE_URL: options.databaseUrl } : {}),
  ...(options.audioDir !== undefined ? { VJ_AUDIO_DIR: options.audioDir } : {}),
  ...options.extra
})
