/**
 * Wake-ups across nodes on a real PostgreSQL: a notification sent by one
 * process reaches another, and sending hints (even failing ones) never costs
 * a connection.
 */
import { describe, expect, it } from "@effect/vitest"
import { SqlClient } from "@effect/sql"
import { WorkSignal } from "@voice-journal/core"
import { Context, Effect, Layer, Schedule } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { PgJournalStore, PgTestDatabase } from "../src/index.js"

const listenerScript = path.join(path.dirname(fileURLToPath(import.meta.url)), "support", "listener-process.ts")

/** Starts the other node; resolves once it listens. Killed when the scope closes. */
const otherNode = (url: string) =>
  Effect.acquireRelease(
    Effect.async<{ readonly child: ChildProcess; readonly output: () => string }>((resume) => {
      const child = spawn(process.execPath, ["--import", "tsx", "--conditions=source", listenerScript, url], {
        stdio: ["ignore", "pipe", "inherit"]
      })
      let out = ""
      child.stdout!.on("data", (d: Buffer) => {
        out += d.toString()
        if (out.includes("ready")) resume(Effect.succeed({ child, output: () => out }))
      })
      child.on("exit", (code) => resume(Effect.dieMessage(`listener exited early (${code}): ${out}`)))
    }),
    ({ child }) => Effect.sync(() => child.exitCode === null && child.kill("SIGKILL"))
  )

/** This node: the store and its LISTEN/NOTIFY work signal on `url`. */
const thisNode = (url: string) =>
  Layer.build(PgJournalStore.layerWorkSignal.pipe(Layer.provideMerge(PgJournalStore.layer({ url, maxConnections: 4 }))))

/** Backend pids of this test database's client connections. */
const backends = (sql: SqlClient.SqlClient) =>
  sql<{ pid: number }>`SELECT pid FROM pg_stat_activity
    WHERE datname = current_database() AND backend_type = 'client backend'`.pipe(
    Effect.map((rows) => rows.map((r) => Number(r.pid)).sort())
  )

/** Waits until this database has a connection that has issued LISTEN. */
const listening = (sql: SqlClient.SqlClient) =>
  sql<{ n: number }>`SELECT CAST(count(*) AS INTEGER) AS n FROM pg_stat_activity
    WHERE datname = current_database() AND query LIKE 'LISTEN%'`.pipe(
    Effect.filterOrFail((rows) => rows[0]!.n > 0),
    Effect.retry({ times: 200, schedule: Schedule.spaced("25 millis") })
  )

describe("PostgreSQL work signal", () => {
  it.scopedLive("a wake-up sent by one node reaches a node in another process (its own timeout is an hour)", () =>
    Effect.gen(function*() {
      const url = yield* PgTestDatabase.freshDatabase()
      const ctx = yield* thisNode(url)
      const other = yield* otherNode(url)
      const signal = Context.get(ctx, WorkSignal.WorkSignal)
      yield* signal.notify("cleanup")
      yield* Effect.promise(() =>
        new Promise<void>((resolve) => {
          const check = () => (other.output().includes("woke cleanup") ? resolve() : setTimeout(check, 20))
          check()
        })
      )
      expect(other.output()).toContain("woke cleanup")
      expect(other.output()).not.toContain("woke transcription")
    }), { timeout: 60_000 })

  it.scopedLive("sending hints opens no connection, and a failing one neither fails the caller nor costs a connection", () =>
    Effect.gen(function*() {
      const url = yield* PgTestDatabase.freshDatabase()
      const ctx = yield* thisNode(url)
      const sql = Context.get(ctx, SqlClient.SqlClient)
      const signal = Context.get(ctx, WorkSignal.WorkSignal)
      yield* listening(sql) // the LISTEN connection is opened by a background fiber: count it in "before"
      // hints are sent in the background, beside other queries: open the whole pool (4) first,
      // so a new pid can only mean a connection that was dropped and replaced
      yield* Effect.all(Array.from({ length: 4 }, () => sql`SELECT pg_sleep(0.2)`), { concurrency: "unbounded" })
      const before = yield* backends(sql)
      expect(before.length).toBe(5)

      for (let i = 0; i < 20; i++) yield* signal.notify("transcription")
      // PostgreSQL refuses payloads of 8000 bytes or more: a real failure of the hint itself
      for (let i = 0; i < 5; i++) yield* PgJournalStore.sendWorkHint(sql, "x".repeat(9000))
      yield* Effect.sleep("200 millis") // the background sends end
      const after = yield* backends(sql)
      expect(after).toEqual(before)
    }))
})
