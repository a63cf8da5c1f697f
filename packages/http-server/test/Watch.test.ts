/**
 * The watch folder where users meet it: `serve` with `VJ_WATCH_DIR` +
 * `VJ_WATCH_USER` (entries go through the pipeline like uploads), and the
 * `voice-journal watch` command as its own process against the configured
 * database (with `--move-to`), failing at start for an unknown user.
 * Conditions are waited for, never timed.
 */
import { describe, expect, it } from "@effect/vitest"
import { SqliteJournalStore } from "@voice-journal/adapter-sqlite"
import { BlobStore, VoiceJournal, WorkSignal } from "@voice-journal/core"
import { ConfigProvider, Effect, Layer, Redacted } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { audioBytes, pngBytes } from "../../core/test/support/Audio.js"
import { config as serverConfig } from "../src/Config.js"
import { call, cli, exitOf, packageDir, start, tempDir, waitFor } from "./support/TestServer.js"

/** A user (id and API key) in the SQLite database at `filename`, made before any server starts. */
const makeUser = (filename: string, audioDir: string, name: string) =>
  Effect.flatMap(VoiceJournal.VoiceJournal, (j) => j.createUser(name)).pipe(
    Effect.provide(VoiceJournal.layer().pipe(Layer.provide(Layer.mergeAll(
      SqliteJournalStore.layer({ filename }),
      BlobStore.layerFileSystem({ directory: audioDir }),
      WorkSignal.layer
    )))),
    Effect.map(({ apiKey, user }) => ({ userId: user.id as string, apiKey: Redacted.value(apiKey) })),
    Effect.orDie
  )

/** The CLI on SQLite in `dir` (whatever the test run's own environment says). */
const cliEnv = (dir: string): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = { ...process.env, VJ_DATA_DIR: dir, INIT_CWD: dir }
  delete env.VJ_DATABASE_URL
  delete env.VJ_AUDIO_DIR
  return env
}

describe("watch folder", () => {
  it.scopedLive("serve with VJ_WATCH_DIR/VJ_WATCH_USER: a dropped recording becomes an entry that runs through the pipeline; the file stays", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir("vj-watch-serve-")
      const inbox = path.join(dir, "inbox")
      fs.mkdirSync(inbox)
      const database = { kind: "sqlite" as const, filename: path.join(dir, "journal.db") }
      const audioDir = path.join(dir, "audio")
      const { apiKey, userId } = yield* makeUser(database.filename, audioDir, "watcher")
      const s = yield* start({ database, audioDir, watch: { directory: inbox, userId, settleSeconds: 0.3 } })
      const bytes = audioBytes("m4a")
      fs.writeFileSync(path.join(inbox, "memo.m4a"), bytes)
      const entry = yield* waitFor(async () => {
        const list = await Effect.runPromise(call(s.url, apiKey, "/entries"))
        const id = list.body.items?.[0]?.id as string | undefined
        if (id === undefined) return undefined
        const got = await Effect.runPromise(call(s.url, apiKey, `/entries/${id}`))
        return got.body.cleanup?.status === "completed" ? got.body : undefined
      })
      expect(entry.originalFilename).toBe("memo.m4a")
      expect(entry.sizeBytes).toBe(bytes.length)
      expect(entry.transcription.status).toBe("completed")
      expect((yield* call(s.url, apiKey, "/entries")).body.total).toBe(1)
      expect(new Uint8Array(fs.readFileSync(path.join(inbox, "memo.m4a")))).toEqual(bytes)
    }))

  it.scopedLive("voice-journal watch <dir> --user <id> --move-to <dir>: ingests into the configured database, moves the file after, prints it", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir("vj-watch-cli-")
      const inbox = path.join(dir, "inbox")
      const done = path.join(dir, "done")
      fs.mkdirSync(inbox)
      const env = cliEnv(dir)
      const created = cli(env, ["users", "create", "watcher"])
      const userId = /user (\S+) /.exec(created)![1]!
      let stdout = ""
      let stderr = ""
      const child = yield* Effect.acquireRelease(
        Effect.sync(() => {
          const c = spawn(process.execPath, [
            "--import", "tsx", "--conditions=source", "src/bin.ts",
            "watch", inbox, "--user", userId, "--move-to", done, "--settle-seconds", "0.3"
          ], { cwd: packageDir, env, stdio: "pipe" })
          c.stdout.on("data", (d: Buffer) => (stdout += d.toString()))
          c.stderr.on("data", (d: Buffer) => (stderr += d.toString()))
          return c
        }),
        (c: ChildProcess) => Effect.sync(() => c.exitCode === null && c.kill("SIGKILL"))
      )
      const bytes = audioBytes("mp3")
      fs.writeFileSync(path.join(inbox, "walk.mp3"), bytes)
      fs.writeFileSync(path.join(inbox, "photo.m4a"), pngBytes())
      yield* waitFor(async () => (/walk\.mp3 → entry /.test(stdout) && /skipped photo\.m4a/.test(stderr) ? true : undefined))
      expect(fs.readdirSync(done)).toEqual(["walk.mp3"])
      expect(new Uint8Array(fs.readFileSync(path.join(done, "walk.mp3")))).toEqual(bytes)
      expect(fs.readdirSync(inbox)).toEqual(["photo.m4a"])
      child.kill("SIGTERM")
      yield* Effect.promise(() => exitOf(child))
      // the entry is in the configured database, for that user
      const list = yield* Effect.flatMap(VoiceJournal.VoiceJournal, (j) => j.listEntries(userId as never, { limit: 10, offset: 0 })).pipe(
        Effect.provide(VoiceJournal.layer().pipe(Layer.provide(Layer.mergeAll(
          SqliteJournalStore.layer({ filename: path.join(dir, "journal.db") }),
          BlobStore.layerFileSystem({ directory: path.join(dir, "audio") }),
          WorkSignal.layer
        )))),
        Effect.orDie
      )
      expect(list.items.map((e) => e.originalFilename)).toEqual(["walk.mp3"])
    }))

  it.scopedLive("watch or serve with an unknown user stops at start with a clear message; VJ_WATCH_DIR needs VJ_WATCH_USER", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir("vj-watch-bad-")
      const error = yield* Effect.sync(() => {
        try {
          cli(cliEnv(dir), ["watch", dir, "--user", "no-such-user"])
          return undefined
        } catch (e) {
          return e as { status: number; stderr: string; stdout: string }
        }
      })
      expect(error?.status).not.toBe(0)
      expect(`${error?.stderr}${error?.stdout}`).toMatch(/user no-such-user does not exist/)
      const bad = yield* Effect.flip(Effect.withConfigProvider(serverConfig, ConfigProvider.fromMap(new Map([["VJ_WATCH_DIR", dir]]))))
      expect(String(bad)).toMatch(/VJ_WATCH_USER/)
      // serve: the watch folder's check fails the server's start
      const failed = yield* Effect.scoped(start({ watch: { directory: dir, userId: "no-such-user" } })).pipe(Effect.flip)
      expect(String(failed)).toMatch(/user no-such-user does not exist/)
    }))
})
