/**
 * The server as its own process. Shutdown is bounded by the grace period,
 * always: SIGTERM during a slow stage, a stage sleeping in its retry
 * backoff, a keep-alive client reusing its socket, a stalled upload; and
 * `voice-journal migrate` exits on both databases.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Option } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as net from "node:net"
import * as path from "node:path"
import { SqlClient } from "@effect/sql"
import { PgJournalStore, PgTestDatabase } from "@voice-journal/adapter-postgres"
import { SqliteJournalStore } from "@voice-journal/adapter-sqlite"
import { audioBytes } from "../../core/test/support/Audio.js"
import * as FakeOllama from "../../core/test/support/FakeOllama.js"
import * as FakeOpenAi from "../../core/test/support/FakeOpenAiTranscription.js"
import { cli, exitOf, filesIn, freePort, packageDir, serve, serverEnv, tempDir } from "./support/TestServer.js"

type Db = "sqlite" | "postgres"

/** A data directory, loopback engines and (for PostgreSQL) a fresh database: the env of one server. */
const setup = (db: Db, extra: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const dir = yield* tempDir("vj-shutdown-")
    const ollama = yield* FakeOllama.make()
    const transcription = yield* FakeOpenAi.make({ instantText: "hello world this is a test" })
    const port = yield* Effect.promise(freePort)
    const databaseUrl = db === "postgres" ? yield* PgTestDatabase.freshDatabase() : undefined
    const env = serverEnv({ port, dataDir: dir, transcribeUrl: transcription.url, ollamaUrl: ollama.url, databaseUrl, extra })
    return { dir, ollama, port, env, databaseUrl }
  })

/** Runs SQL on the server's database (SQLite file or PostgreSQL) from the test. */
const onDatabase = <A>(s: { readonly dir: string; readonly databaseUrl: string | undefined }, query: (sql: SqlClient.SqlClient) => Effect.Effect<A, unknown>) =>
  Effect.scoped(Effect.flatMap(SqlClient.SqlClient, query).pipe(Effect.provide(
    s.databaseUrl !== undefined
      ? PgJournalStore.layer({ url: s.databaseUrl, maxConnections: 2 }) // 2: migrating holds one for its lock
      : SqliteJournalStore.layer({ filename: path.join(s.dir, "journal.db") })
  ))).pipe(Effect.orDie)

/** Sends SIGTERM and resolves with the exit code and the seconds it took. */
const terminate = (child: ChildProcess) =>
  Effect.promise(async () => {
    const sent = Date.now()
    child.kill("SIGTERM")
    const code = await exitOf(child)
    return { code, seconds: (Date.now() - sent) / 1000 }
  })

/**
 * A raw keep-alive HTTP/1.1 connection: requests are written by hand, so a
 * test can stop halfway through a body and later reuse the socket.
 */
const rawConnection = (port: number) =>
  Effect.acquireRelease(
    Effect.async<net.Socket>((resume) => {
      const socket = net.connect(port, "127.0.0.1", () => resume(Effect.succeed(socket)))
      socket.on("error", () => {}) // a reset after close is expected here; results are read from `responses`
    }),
    (socket) => Effect.sync(() => socket.destroy())
  ).pipe(Effect.map((socket) => {
    let buffer = Buffer.alloc(0)
    let ended = false
    socket.on("data", (d: Buffer) => (buffer = Buffer.concat([buffer, d])))
    socket.on("close", () => (ended = true))
    /** The next complete response on the socket (status, headers, body), or None once the server closed it. */
    const nextResponse = Effect.promise(async () => {
      while (true) {
        const head = buffer.indexOf("\r\n\r\n")
        if (head >= 0) {
          const lines = buffer.subarray(0, head).toString("latin1").split("\r\n")
          const headers = Object.fromEntries(lines.slice(1).map((l) => {
            const i = l.indexOf(":")
            return [l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim()]
          }))
          const length = Number(headers["content-length"] ?? 0)
          if (buffer.length >= head + 4 + length) {
            const body = buffer.subarray(head + 4, head + 4 + length).toString("utf8")
            buffer = buffer.subarray(head + 4 + length)
            return Option.some({ status: Number(lines[0]!.split(" ")[1]), headers, body })
          }
        }
        if (ended) return Option.none()
        await new Promise((r) => setTimeout(r, 20))
      }
    })
    return {
      socket,
      write: (data: string | Uint8Array) => Effect.sync(() => socket.writable && socket.write(data)),
      nextResponse,
      closed: () => ended
    }
  }))

/** The head of a raw upload of `size` bytes of audio on a keep-alive connection. */
const uploadHead = (key: string, size: number) =>
  `POST /entries HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\nAuthorization: Bearer ${key}\r\n` +
  `Content-Type: audio/wav\r\nX-Filename: note.wav\r\nContent-Length: ${size}\r\n\r\n`

/** Runs the CLI as its own process; None if it has not exited within `limit` (then it is killed). */
const cliExit = (env: NodeJS.ProcessEnv, args: Array<string>, limit: Duration.DurationInput) =>
  Effect.acquireRelease(
    Effect.sync(() => spawn(process.execPath, ["--import", "tsx", "--conditions=source", "src/bin.ts", ...args], { cwd: packageDir, env, stdio: ["ignore", "pipe", "pipe"] })),
    (child) => Effect.sync(() => child.exitCode === null && child.kill("SIGKILL"))
  ).pipe(Effect.flatMap((child) => {
    let output = ""
    child.stdout!.on("data", (d: Buffer) => (output += d.toString()))
    child.stderr!.on("data", (d: Buffer) => (output += d.toString()))
    return Effect.promise(() => exitOf(child)).pipe(
      Effect.timeoutOption(limit),
      Effect.map((code) => ({ code, output: () => output }))
    )
  }))

/** A user and its API key through the CLI (`users create`), which must exit on its own. */
const createKey = (env: NodeJS.ProcessEnv) =>
  cliExit(env, ["users", "create", "alice"], "60 seconds").pipe(Effect.map(({ code, output }) => {
    expect(code).toStrictEqual(Option.some(0))
    return output().trim().split("\n").at(-1)!
  }))

describe("server process", () => {
  it.scopedLive("SIGTERM during a slow stage: exit 0 within the grace period, nothing left processing, a restart finishes the entry", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir("vj-shutdown-")
      const ollama = yield* FakeOllama.make()
      const transcription = yield* FakeOpenAi.make({ instantText: "hello world this is a test" })
      const port = yield* Effect.promise(freePort)
      const env = serverEnv({
        port,
        dataDir: dir,
        transcribeUrl: transcription.url,
        ollamaUrl: ollama.url,
        extra: { VJ_SHUTDOWN_GRACE_SECONDS: "1" }
      })
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

  it.scopedLive("SIGTERM while a stage sleeps in its retry backoff: exits at once (not after the 30 s grace), row due again, attempt not counted, a restart completes it", () =>
    Effect.gen(function*() {
      const s = yield* setup("sqlite") // VJ_SHUTDOWN_GRACE_SECONDS unset: the default 30 s
      const key = yield* createKey(s.env)
      // Ollama is busy: 503 with Retry-After 20 s puts the cleanup in a 20 s in-process sleep
      s.ollama.failNext({ kind: "status", status: 503, headers: { "retry-after": "20" }, body: { error: "server busy" } })
      const first = yield* serve(s.env, s.port)
      const created = yield* Effect.promise(() =>
        fetch(`http://127.0.0.1:${s.port}/entries`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "audio/wav" }, body: audioBytes("wav") })
          .then((r) => r.json() as Promise<{ id: string }>)
      )
      for (let i = 0; i < 300 && s.ollama.requests.length < 1; i++) yield* Effect.sleep("100 millis")
      yield* Effect.sleep("300 millis") // the 503 is answered: the stage sleeps
      const { code, seconds } = yield* terminate(first)
      expect(code).toBe(0)
      expect(seconds).toBeLessThan(15) // generous; untouched, it waits for the retry (20 s) or the grace (30 s)
      const rows = yield* onDatabase(s, (sql) => sql<{ status: string; attempts: number; lease_owner: string | null }>`
        SELECT status, attempts, lease_owner FROM cleaned_entries`)
      expect(rows).toStrictEqual([{ status: "pending", attempts: 0, lease_owner: null }])
      expect(s.ollama.requests.length).toBe(1)
      yield* serve(s.env, s.port)
      let done: any
      for (let i = 0; i < 300; i++) {
        done = yield* Effect.promise(() =>
          fetch(`http://127.0.0.1:${s.port}/entries/${created.id}`, { headers: { authorization: `Bearer ${key}` } }).then((r) => r.json() as Promise<any>)
        )
        if (done.cleanup?.status === "completed") break
        yield* Effect.sleep("100 millis")
      }
      expect(done.cleanup.status).toBe("completed")
      expect(done.cleanup.attempts).toBe(1)
    }), { timeout: 120_000 })

  for (const db of ["sqlite", "postgres"] as const) {
    it.scopedLive(`${db}: a keep-alive client finishes a half-sent upload after SIGTERM and reuses its socket: Connection: close, exit within grace + 2 s`, () =>
      Effect.gen(function*() {
        const grace = 3
        const s = yield* setup(db, { VJ_SHUTDOWN_GRACE_SECONDS: String(grace) })
        const key = yield* createKey(s.env)
        const child = yield* serve(s.env, s.port)
        const audio = audioBytes("wav")
        const half = Math.floor(audio.length / 2)
        const conn = yield* rawConnection(s.port)
        // one request answered before SIGTERM: the connection is an ordinary keep-alive one
        yield* conn.write(`GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n`)
        const before = yield* conn.nextResponse
        expect(Option.getOrThrow(before).headers.connection).toBe("keep-alive")
        yield* conn.write(uploadHead(key, audio.length))
        yield* conn.write(audio.subarray(0, half))
        yield* Effect.sleep("300 millis")
        const sent = Date.now()
        child.kill("SIGTERM")
        const exited = Effect.promise(() => exitOf(child))
        yield* Effect.sleep("500 millis") // shutdown has begun
        yield* conn.write(audio.subarray(half))
        const response = Option.getOrThrow(yield* conn.nextResponse)
        expect(response.status).toBe(201)
        expect(response.headers.connection).toBe("close")
        // the client reuses its socket anyway: nobody must be left waiting on it
        yield* conn.write(`GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`)
        const code = yield* exited.pipe(Effect.timeoutOption(`${grace + 30} seconds`))
        const seconds = (Date.now() - sent) / 1000
        expect(code).toStrictEqual(Option.some(0))
        expect(seconds).toBeLessThan(grace + 2)
        expect(conn.closed()).toBe(true)
        // the upload that was answered 201 is stored, and nothing is left processing
        const rows = yield* onDatabase(s, (sql) => sql<{ n: number | string }>`SELECT count(*) AS n FROM voice_entries`)
        expect(Number(rows[0]!.n)).toBe(1)
      }), { timeout: 120_000 })

    it.scopedLive(`${db}: a stalled upload (half sent, then nothing) does not hold SIGTERM: exit within grace + 2 s, no partial file left`, () =>
      Effect.gen(function*() {
        const grace = 2
        const s = yield* setup(db, { VJ_SHUTDOWN_GRACE_SECONDS: String(grace) })
        const key = yield* createKey(s.env)
        const child = yield* serve(s.env, s.port)
        const audio = audioBytes("wav")
        const conn = yield* rawConnection(s.port)
        yield* conn.write(uploadHead(key, audio.length))
        yield* conn.write(audio.subarray(0, Math.floor(audio.length / 2)))
        const audioDir = path.join(s.dir, "audio")
        for (let i = 0; i < 100 && !filesIn(audioDir).some((f) => f.startsWith(".partial-")); i++) yield* Effect.sleep("50 millis")
        expect(filesIn(audioDir).some((f) => f.startsWith(".partial-"))).toBe(true) // the upload is streaming to disk
        const sent = Date.now()
        child.kill("SIGTERM")
        const code = yield* Effect.promise(() => exitOf(child)).pipe(Effect.timeoutOption(`${grace + 30} seconds`))
        const seconds = (Date.now() - sent) / 1000
        expect(code).toStrictEqual(Option.some(0))
        expect(seconds).toBeLessThan(grace + 2)
        expect(filesIn(audioDir)).toStrictEqual([])
        const rows = yield* onDatabase(s, (sql) => sql<{ n: number | string }>`SELECT count(*) AS n FROM voice_entries`)
        expect(Number(rows[0]!.n)).toBe(0)
      }), { timeout: 120_000 })

    it.scopedLive(`${db}: voice-journal migrate exits 0 on its own`, () =>
      Effect.gen(function*() {
        const s = yield* setup(db)
        for (let run = 0; run < 2; run++) { // fresh database, then already up to date
          const { code, output } = yield* cliExit(s.env, ["migrate"], "30 seconds")
          expect(output()).toContain("up to date")
          expect(code).toStrictEqual(Option.some(0))
        }
      }), { timeout: 120_000 })
  }
})
