/**
 * bench/upload — the server's upload path against a bare Node server that
 * pipes the request to a file, in the same run: throughput and peak RSS
 * (VmHWM of the server process, above its idle RSS) for 1 and 8 concurrent
 * 100 MB uploads. Every server runs as its own process; the client streams
 * a valid WAV header followed by 100 MB of samples, never holding it.
 *
 * voice-journal answers `201` only once the file and its directory are
 * fsynced, so it is compared with two bare peers: one that does not fsync
 * (the page cache; what a plain pipe-to-file does) and one that fsyncs the
 * file and the directory before answering (the same promise).
 *
 * Each server takes one upload before the rounds (not counted), so the
 * first round does not carry its JIT compilation and heap growth.
 *
 * Every server keeps what it stored until its round ends; then, outside
 * the timing, the bench removes it (voice-journal's entries through the
 * API, the bare servers' files from their directory), so each round starts
 * with the same page cache: on this VM a bare server that kept its files
 * over three rounds of 8 × 100 MB went from 144 to 324–335 ms CPU per
 * 100 MB, writing into an ever larger page cache.
 * Server CPU is user + system time of all its threads (main, libuv pool,
 * V8's GC helpers) per 100 MB. Peak RSS is the highest of the rounds.
 *
 * Run: pnpm bench:upload   (SIZE_MB=100, CONCURRENCY="1,8", ROUNDS=3;
 * CPU_PROF=<dir> writes a V8 CPU profile of the voice-journal server)
 */
import { BlobStore, Ingest } from "@voice-journal/core"
import { Duration, Effect, Stream } from "effect"
import { execFileSync, spawn } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as http from "node:http"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { wavHeader } from "./wav.js"

const SIZE = Number(process.env.SIZE_MB ?? 100) * 1024 * 1024
const LEVELS = (process.env.CONCURRENCY ?? "1,8").split(",").map(Number)
/** Rounds per level and server; the median round is reported (the machine's 2 cores are shared). */
const ROUNDS = Number(process.env.ROUNDS ?? 3)
const here = path.dirname(fileURLToPath(import.meta.url))
const serverPackage = path.resolve(here, "../../packages/http-server")


const memory = (pid: number) => {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8")
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)![1])
  return { rss: kb("VmRSS") / 1024, peak: kb("VmHWM") / 1024 }
}

/** Resets the peak-RSS counter of a process (Linux: write 5 to clear_refs). */
const resetPeak = (pid: number) => fs.writeFileSync(`/proc/${pid}/clear_refs`, "5")

/** One upload; the created entry's id (voice-journal answers with the entry; the bare servers with `{}`). */
const upload = (port: number, key: string) =>
  new Promise<string | undefined>((resolve, reject) => {
    const req = http.request({
      host: "127.0.0.1",
      port,
      path: "/entries",
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "audio/wav", "content-length": String(SIZE + 44) }
    }, (res) => {
      let text = ""
      res.setEncoding("utf8")
      res.on("data", (part: string) => (text += part))
      res.on("end", () =>
        res.statusCode === 201 || res.statusCode === 200
          ? resolve((JSON.parse(text) as { id?: string }).id)
          : reject(new Error(`status ${res.statusCode}: ${text}`))
      )
    })
    req.on("error", reject)
    req.write(wavHeader(SIZE))
    const chunk = Buffer.alloc(1024 * 1024, 7)
    let sent = 0
    const pump = () => {
      while (sent < SIZE) {
        const n = Math.min(chunk.length, SIZE - sent)
        sent += n
        if (!req.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void req.once("drain", pump)
      }
      req.end()
    }
    pump()
  })

/** Deletes an entry (and with it its audio) through the API. */
const remove = (port: number, key: string, id: string) =>
  new Promise<void>((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path: `/entries/${id}`, method: "DELETE", headers: { authorization: `Bearer ${key}` } }, (res) => {
      res.resume()
      res.on("end", () => (res.statusCode === 204 ? resolve() : reject(new Error(`DELETE status ${res.statusCode}`))))
    })
    req.on("error", reject)
    req.end()
  })

const waitForPort = async (port: number) => {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>((r) => {
      const s = http.get({ host: "127.0.0.1", port, path: "/healthz" }, (res) => (res.resume(), r(true)))
      s.on("error", () => r(false))
    })
    if (ok) return
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`server on ${port} did not start`)
}

interface Server {
  readonly name: string
  readonly pid: number
  readonly port: number
  readonly key: string
  /** Where a bare server writes its files (`bare-<port>-<n>`). */
  readonly dir?: string
}

/** Removes what `server` stored: voice-journal's entries (and their audio) through the API, a bare server's files. */
const removeAll = async (server: Server, ids: ReadonlyArray<string | undefined>) => {
  for (const id of ids) if (id !== undefined) await remove(server.port, server.key, id)
  if (server.dir !== undefined) {
    for (const name of fs.readdirSync(server.dir)) {
      if (name.startsWith(`bare-${server.port}-`)) fs.rmSync(path.join(server.dir, name), { force: true })
    }
  }
}

/** CPU time (user + system, all threads) the process has used so far, in ms. */
const cpuMs = (pid: number) => {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
  // the fields after the command name (which may hold spaces), from field 3 on: utime and stime are 14 and 15
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100 // clock ticks (USER_HZ = 100)
}

/** One round: `n` concurrent uploads to `server`; throughput, peak RSS growth, CPU per 100 MB. */
const round = async (server: Server, n: number) => {
  await new Promise((r) => setTimeout(r, 500))
  const idle = memory(server.pid).rss
  resetPeak(server.pid)
  const cpu0 = cpuMs(server.pid)
  const t0 = performance.now()
  const ids = await Promise.all(Array.from({ length: n }, () => upload(server.port, server.key)))
  const seconds = (performance.now() - t0) / 1000
  const cpu = cpuMs(server.pid) - cpu0
  // what each server stored goes before the next round (not timed): voice-journal's entries through the API,
  // the bare servers' files from their directory; so every server keeps its files as long (see the header)
  await removeAll(server, ids)
  return {
    mbps: (n * SIZE) / 1024 / 1024 / seconds,
    growth: memory(server.pid).peak - idle,
    idle,
    cpuPer100MB: (cpu / ((n * SIZE) / 1024 / 1024)) * 100
  }
}

/**
 * Every level runs on each server in turn (bare, bare + fsync,
 * voice-journal), {@link ROUNDS} times over, so a change in the machine's
 * load (2 shared cores) hits all of them alike rather than whichever ran
 * last; each server's median round (by throughput) is reported, and the
 * ratios compare the medians of the same level.
 */
const measure = async (servers: ReadonlyArray<Server>) => {
  // one upload each first: code compiled, heap and buffers grown to their working size (not counted)
  for (const server of servers) await removeAll(server, [await upload(server.port, server.key)])
  for (const n of LEVELS) {
    const rounds = servers.map(() => [] as Array<Awaited<ReturnType<typeof round>>>)
    for (let i = 0; i < ROUNDS; i++) {
      for (const [s, server] of servers.entries()) rounds[s]!.push(await round(server, n))
    }
    const medians = rounds.map((rs) => [...rs].sort((a, b) => a.mbps - b.mbps)[Math.floor(rs.length / 2)]!)
    for (const [s, server] of servers.entries()) {
      const r = medians[s]!
      // the last server against each peer before it
      const ratio = s !== servers.length - 1 ? "" : `  (${
        servers.slice(0, -1).map((peer, i) => `${(r.mbps / medians[i]!.mbps).toFixed(2)}× ${peer.name.replace("bare Node pipe-to-file", "bare")}`)
          .join(", ")
      })`
      const all = rounds[s]!.map((x) => x.mbps.toFixed(0)).join("/")
      console.log(
        `${server.name.padEnd(30)} ${n} × ${SIZE / 1048576} MB: ${r.mbps.toFixed(0).padStart(5)} MB/s (rounds ${all}), peak RSS ${
          Math.max(...rounds[s]!.map((x) => x.growth)).toFixed(0).padStart(3)
        } MB above idle (${r.idle.toFixed(0)} MB), CPU ${r.cpuPer100MB.toFixed(0).padStart(4)} ms per 100 MB${ratio}`
      )
    }
  }
}

/**
 * Main-thread CPU (user ms, this process) of the ingest path alone, in
 * process: the body as 64 KiB chunks (what a socket delivers) through
 * `Ingest.ingest` into the filesystem blob store; also with a
 * `Stream.timeoutFail` per pull (how the idle timeout was first built; the
 * server now arms one Node timer only while it waits for the client), and
 * SHA-256 alone for scale. Tells which part of the server's time is ours.
 */
const inProcess = async (dir: string) => {
  const chunkSize = 64 * 1024
  const count = Math.ceil(SIZE / chunkSize)
  // allocated once, outside what is measured (nothing writes into them)
  const chunks = Array.from({ length: count }, (_, i) => {
    const b = Buffer.alloc(chunkSize, 7)
    if (i === 0) wavHeader(SIZE).copy(b)
    return b
  })
  const body = (n = count) => Stream.fromIterable(chunks.slice(0, n)).pipe(Stream.rechunk(1))
  const cpu = async (name: string, run: () => Promise<unknown>) => {
    const before = process.cpuUsage()
    await run()
    console.log(`in process: ${name.padEnd(52)} ${(process.cpuUsage(before).user / 1000).toFixed(0).padStart(5)} ms CPU per ${SIZE / 1048576} MB`)
  }
  const store = BlobStore.layerFileSystem({ directory: path.join(dir, "in-process") })
  const ingest = (stream: Stream.Stream<Uint8Array, string>) =>
    Effect.runPromise(Ingest.ingest(stream, { maxBytes: SIZE * 2 }).pipe(Effect.provide(store)))
  await ingest(body(200)) // warm-up: modules loaded, code compiled
  await cpu("SHA-256 alone", async () => {
    const hash = createHash("sha256")
    const b = Buffer.alloc(chunkSize, 7)
    for (let i = 0; i < count; i++) hash.update(b)
    hash.digest()
  })
  await cpu("ingest (limit + sniff + sha256 + write + fsync)", () => ingest(body()))
  await cpu("ingest + Stream.timeoutFail per pull (not used: for scale)", () =>
    ingest(body().pipe(Stream.timeoutFail(() => "stalled", Duration.seconds(30)))))
}

const main = async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vj-bench-upload-"))
  const children: Array<ReturnType<typeof spawn>> = []
  try {
    console.log(`bench/upload: node ${process.version}, ${os.cpus().length} cores`)
    // the baselines: a bare Node server piping each request to a file, without and with fsync before answering
    const bareServer = (port: number, fsync: boolean) => {
      const child = spawn(process.execPath, ["-e", `
        const http = require("http"), fs = require("fs"), path = require("path");
        const dir = ${JSON.stringify(dir)};
        let n = 0;
        http.createServer((req, res) => {
          const file = path.join(dir, "bare-${port}-" + (n++));
          const done = () => res.writeHead(201).end("{}");
          if (!${fsync}) return void req.pipe(fs.createWriteStream(file)).on("finish", done);
          // flush: fsync before close; then the directory
          req.pipe(fs.createWriteStream(file, { flush: true })).on("close", () => {
            const d = fs.openSync(dir, "r");
            fs.fsync(d, (e) => { fs.closeSync(d); if (e) throw e; done() });
          });
        }).listen(${port}, "127.0.0.1");`], { stdio: "inherit" })
      children.push(child)
      return child
    }
    const bare = bareServer(4310, false)
    const bareSync = bareServer(4312, true)
    await new Promise((r) => setTimeout(r, 500))

    // voice-journal's server: auth, rate limit, streaming ingest (limit, sniff, sha256), blob store, row
    const env = {
      ...process.env,
      VJ_DATA_DIR: path.join(dir, "vj"),
      VJ_PORT: "4311",
      VJ_MAX_UPLOAD_BYTES: String(SIZE + 1024 * 1024),
      VJ_UPLOADS_PER_MINUTE: "1000",
      VJ_TRANSCRIBE_COMMAND: "true {input}",
      VJ_TRANSCRIBE_CONVERT: "none",
      // the uploads are 55-minute WAVs: without this, the transcription stage of the entries already
      // uploaded cuts them into 10-minute pieces with ffmpeg on the same 2 cores while later rounds run
      // (work the bare peers never do); the stage now runs `true` once per entry
      VJ_CHUNK_SECONDS: "86400",
      VJ_SHUTDOWN_GRACE_SECONDS: "1"
    }
    const cli = (args: Array<string>) =>
      execFileSync(process.execPath, ["--import", "tsx", "--conditions=source", "src/bin.ts", ...args], { cwd: serverPackage, env, encoding: "utf8" })
    const key = cli(["users", "create", "bench"]).trim().split("\n").at(-1)!
    // CPU_PROF=<dir>: the server writes a V8 CPU profile there when it exits (open it in Chrome DevTools)
    const profile = process.env.CPU_PROF === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${path.resolve(process.env.CPU_PROF)}`]
    const server = spawn(process.execPath, [...profile, "--import", "tsx", "--conditions=source", "src/bin.ts", "serve"], { cwd: serverPackage, env, stdio: "ignore" })
    children.push(server)
    await waitForPort(4311)
    await measure([
      { name: "bare Node pipe-to-file", pid: bare.pid!, port: 4310, key: "none", dir },
      { name: "bare Node pipe-to-file + fsync", pid: bareSync.pid!, port: 4312, key: "none", dir },
      { name: "voice-journal server", pid: server.pid!, port: 4311, key }
    ])
    await inProcess(dir)
  } finally {
    for (const c of children) c.kill("SIGTERM")
    await new Promise((r) => setTimeout(r, 1500))
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
