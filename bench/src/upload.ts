/**
 * bench/upload — the server's upload path against a bare Node server that
 * pipes the request to a file, in the same run: throughput and peak RSS
 * (VmHWM of the server process, above its idle RSS) for 1 and 8 concurrent
 * 100 MB uploads. Both servers run as separate processes; the client streams
 * a valid WAV header followed by 100 MB of samples, never holding it.
 *
 * Run: pnpm bench:upload   (SIZE_MB=100, CONCURRENCY="1,8")
 */
import { execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const SIZE = Number(process.env.SIZE_MB ?? 100) * 1024 * 1024
const LEVELS = (process.env.CONCURRENCY ?? "1,8").split(",").map(Number)
const here = path.dirname(fileURLToPath(import.meta.url))
const serverPackage = path.resolve(here, "../../packages/http-server")

const wavHeader = (dataBytes: number) => {
  const h = Buffer.alloc(44)
  h.write("RIFF", 0)
  h.writeUInt32LE(36 + dataBytes, 4)
  h.write("WAVEfmt ", 8)
  h.writeUInt32LE(16, 16)
  h.writeUInt16LE(1, 20) // PCM
  h.writeUInt16LE(1, 22) // mono
  h.writeUInt32LE(16000, 24)
  h.writeUInt32LE(32000, 28)
  h.writeUInt16LE(2, 32)
  h.writeUInt16LE(16, 34)
  h.write("data", 36)
  h.writeUInt32LE(dataBytes, 40)
  return h
}

const memory = (pid: number) => {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8")
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)![1])
  return { rss: kb("VmRSS") / 1024, peak: kb("VmHWM") / 1024 }
}

/** Resets the peak-RSS counter of a process (Linux: write 5 to clear_refs). */
const resetPeak = (pid: number) => fs.writeFileSync(`/proc/${pid}/clear_refs`, "5")

const upload = (port: number, key: string) =>
  new Promise<void>((resolve, reject) => {
    const req = http.request({
      host: "127.0.0.1",
      port,
      path: "/entries",
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "audio/wav", "content-length": String(SIZE + 44) }
    }, (res) => {
      res.resume()
      res.on("end", () => (res.statusCode === 201 || res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`))))
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

const measure = async (name: string, pid: number, port: number, key: string, baseline: Record<number, number>) => {
  for (const n of LEVELS) {
    await new Promise((r) => setTimeout(r, 500))
    const idle = memory(pid).rss
    resetPeak(pid)
    const t0 = performance.now()
    await Promise.all(Array.from({ length: n }, () => upload(port, key)))
    const seconds = (performance.now() - t0) / 1000
    const mbps = (n * SIZE) / 1024 / 1024 / seconds
    const growth = memory(pid).peak - idle
    const ratio = baseline[n] !== undefined ? `  (${(mbps / baseline[n]!).toFixed(2)}× the bare server's throughput)` : ""
    console.log(`${name.padEnd(22)} ${n} × ${SIZE / 1048576} MB: ${mbps.toFixed(0).padStart(5)} MB/s, peak RSS ${growth.toFixed(0).padStart(4)} MB above idle (${idle.toFixed(0)} MB)${ratio}`)
    baseline[n] ??= mbps
  }
}

const main = async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vj-bench-upload-"))
  const children: Array<ReturnType<typeof spawn>> = []
  try {
    console.log(`bench/upload: node ${process.version}, ${os.cpus().length} cores`)
    // the baseline: a bare Node server piping each request to a file
    const barePort = 4310
    const bare = spawn(process.execPath, ["-e", `
      const http = require("http"), fs = require("fs"), path = require("path");
      let n = 0;
      http.createServer((req, res) => {
        const file = path.join(${JSON.stringify(dir)}, "bare-" + (n++));
        req.pipe(fs.createWriteStream(file)).on("finish", () => { fs.rmSync(file, { force: true }); res.writeHead(201).end("{}") });
      }).listen(${barePort}, "127.0.0.1");`], { stdio: "inherit" })
    children.push(bare)
    await new Promise((r) => setTimeout(r, 500))
    const baseline: Record<number, number> = {}
    await measure("bare Node pipe-to-file", bare.pid!, barePort, "none", baseline)

    // voice-journal's server: auth, rate limit, streaming ingest (limit, sniff, sha256), blob store, row
    const env = {
      ...process.env,
      VJ_DATA_DIR: path.join(dir, "vj"),
      VJ_PORT: "4311",
      VJ_MAX_UPLOAD_BYTES: String(SIZE + 1024 * 1024),
      VJ_UPLOADS_PER_MINUTE: "1000",
      VJ_TRANSCRIBE_COMMAND: "true {input}",
      VJ_TRANSCRIBE_CONVERT: "none",
      VJ_SHUTDOWN_GRACE_SECONDS: "1"
    }
    const cli = (args: Array<string>) =>
      execFileSync(process.execPath, ["--import", "tsx", "--conditions=source", "src/bin.ts", ...args], { cwd: serverPackage, env, encoding: "utf8" })
    const key = cli(["users", "create", "bench"]).trim().split("\n").at(-1)!
    const server = spawn(process.execPath, ["--import", "tsx", "--conditions=source", "src/bin.ts", "serve"], { cwd: serverPackage, env, stdio: "ignore" })
    children.push(server)
    await waitForPort(4311)
    await measure("voice-journal server", server.pid!, 4311, key, baseline)
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
