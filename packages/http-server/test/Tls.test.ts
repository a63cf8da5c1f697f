/**
 * HTTPS served directly: `voice-journal tls self-signed` makes a CA and a
 * server certificate for the LAN address, `serve` with `VJ_TLS_CERT` /
 * `VJ_TLS_KEY` speaks TLS, and Node's `https` client trusting only the
 * generated CA completes a real handshake (no `rejectUnauthorized: false`).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as http from "node:http"
import * as https from "node:https"
import * as path from "node:path"
import { audioBytes } from "../../core/test/support/Audio.js"
import * as FakeOllama from "../../core/test/support/FakeOllama.js"
import * as FakeOpenAi from "../../core/test/support/FakeOpenAiTranscription.js"
import { cli, exitOf, freePort, packageDir, serveHttps, serverEnv, tempDir } from "./support/TestServer.js"

interface Answer {
  readonly status: number
  readonly body: string
}

/** One HTTPS request with Node's client; `ca` undefined = the system's trust store only. */
const httpsRequest = (
  port: number,
  ca: string | undefined,
  pathname: string,
  init: { readonly method?: string; readonly headers?: Record<string, string>; readonly body?: Uint8Array } = {}
) =>
  new Promise<Answer>((resolve, reject) => {
    const request = https.request({
      host: "127.0.0.1",
      port,
      path: pathname,
      method: init.method ?? "GET",
      headers: init.headers,
      agent: false,
      ...(ca !== undefined ? { ca } : {})
    }, (response) => {
      const chunks: Array<Buffer> = []
      response.on("data", (c: Buffer) => chunks.push(c))
      response.on("end", () => resolve({ status: response.statusCode!, body: Buffer.concat(chunks).toString("utf8") }))
      response.on("error", reject)
    })
    request.on("error", reject)
    request.end(init.body)
  })

/** A data directory, loopback engines and a generated certificate: the env of one HTTPS server. */
const setup = Effect.gen(function*() {
  const dir = yield* tempDir("vj-tls-")
  const tlsDir = path.join(dir, "certs")
  const ollama = yield* FakeOllama.make()
  const transcription = yield* FakeOpenAi.make({ instantText: "hello world this is a test" })
  const port = yield* Effect.promise(freePort)
  const env = serverEnv({ port, dataDir: dir, transcribeUrl: transcription.url, ollamaUrl: ollama.url })
  const printed = cli(env, ["tls", "self-signed", "--host", "127.0.0.1", "--out", tlsDir])
  return { dir, tlsDir, port, env, printed }
})

/** Runs `serve` expecting it to stop at start-up; resolves with its exit code and output. */
const failedStart = (env: NodeJS.ProcessEnv) =>
  Effect.promise(async () => {
    const child = spawn(process.execPath, ["--import", "tsx", "--conditions=source", "src/bin.ts", "serve"], { cwd: packageDir, env, stdio: "pipe" })
    let output = ""
    child.stdout!.on("data", (c: Buffer) => (output += c.toString("utf8")))
    child.stderr!.on("data", (c: Buffer) => (output += c.toString("utf8")))
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000)
    const code = await exitOf(child)
    clearTimeout(timer)
    return { code, output }
  })

describe("HTTPS", () => {
  it.scopedLive("tls self-signed writes a CA, a certificate for the address and a private key only its owner reads", () =>
    Effect.gen(function*() {
      const { printed, tlsDir } = yield* setup
      for (const f of ["ca.pem", "cert.pem", "key.pem"]) expect(fs.existsSync(path.join(tlsDir, f))).toBe(true)
      expect(fs.statSync(path.join(tlsDir, "key.pem")).mode & 0o777).toBe(0o600)
      const ca = new crypto.X509Certificate(fs.readFileSync(path.join(tlsDir, "ca.pem")))
      const leaf = new crypto.X509Certificate(fs.readFileSync(path.join(tlsDir, "cert.pem")))
      expect(ca.ca).toBe(true)
      expect(leaf.ca).toBe(false)
      expect(leaf.verify(ca.publicKey)).toBe(true) // signed by the CA
      expect(leaf.checkIP("127.0.0.1")).toBe("127.0.0.1")
      expect(leaf.checkHost("localhost")).toBe("localhost")
      expect(crypto.createPublicKey(crypto.createPrivateKey(fs.readFileSync(path.join(tlsDir, "key.pem")))).export({ type: "spki", format: "pem" }))
        .toBe(leaf.publicKey.export({ type: "spki", format: "pem" }))
      // the exact env lines, and how to trust the CA on a phone
      expect(printed).toContain(`VJ_TLS_CERT=${path.join(tlsDir, "cert.pem")}`)
      expect(printed).toContain(`VJ_TLS_KEY=${path.join(tlsDir, "key.pem")}`)
      expect(printed).toContain("Certificate Trust Settings")
      expect(printed).toContain("CA certificate")
      expect(printed).not.toContain("PRIVATE KEY")
    }), { timeout: 60_000 })

  it.scopedLive("serve with VJ_TLS_CERT/VJ_TLS_KEY speaks HTTPS to a client trusting the generated CA; plain HTTP and untrusting clients fail", () =>
    Effect.gen(function*() {
      const { env, port, tlsDir } = yield* setup
      const key = cli(env, ["users", "create", "alice"]).trim().split("\n").at(-1)!
      const ca = fs.readFileSync(path.join(tlsDir, "ca.pem"), "utf8")
      const server = yield* serveHttps({
        ...env,
        VJ_TLS_CERT: path.join(tlsDir, "cert.pem"),
        VJ_TLS_KEY: path.join(tlsDir, "key.pem")
      }, port, ca)

      const health = yield* Effect.promise(() => httpsRequest(port, ca, "/healthz"))
      expect(health.status).toBe(200)
      const upload = yield* Effect.promise(() =>
        httpsRequest(port, ca, "/entries", {
          method: "POST",
          headers: { authorization: `Bearer ${key}`, "content-type": "audio/wav", "x-filename": "note.wav" },
          body: audioBytes("wav")
        })
      )
      expect(upload.status).toBe(201)
      expect(JSON.parse(upload.body).id).toEqual(expect.any(String))
      // the address is logged as https
      expect(server.output()).toContain(`https://127.0.0.1:${port}`)

      // plain HTTP to the TLS port gets no answer from the API
      const plain = yield* Effect.promise(() =>
        new Promise<string>((resolve) => {
          const r = http.get({ host: "127.0.0.1", port, path: "/healthz", agent: false }, (res) => {
            res.resume()
            resolve(`status ${res.statusCode}`)
          })
          r.on("error", (e: NodeJS.ErrnoException) => resolve(`error ${e.code ?? e.message}`))
          r.setTimeout(10_000, () => r.destroy(new Error("timeout")))
        })
      )
      expect(plain).not.toBe("status 200")
      expect(plain).toMatch(/^error|^status 4/)

      // a client that does not trust the CA refuses the certificate
      const untrusted = yield* Effect.promise(() =>
        httpsRequest(port, undefined, "/healthz").then(
          (a) => `status ${a.status}`,
          (e: NodeJS.ErrnoException) => String(e.code)
        )
      )
      expect(untrusted).toMatch(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT_LOCALLY/)
    }), { timeout: 120_000 })

  it.scopedLive("SIGTERM with an idle keep-alive TLS client still exits within the grace period", () =>
    Effect.gen(function*() {
      const { env, port, tlsDir } = yield* setup
      const ca = fs.readFileSync(path.join(tlsDir, "ca.pem"), "utf8")
      const { child } = yield* serveHttps({
        ...env,
        VJ_TLS_CERT: path.join(tlsDir, "cert.pem"),
        VJ_TLS_KEY: path.join(tlsDir, "key.pem"),
        VJ_SHUTDOWN_GRACE_SECONDS: "1"
      }, port, ca)
      const agent = new https.Agent({ keepAlive: true, ca })
      yield* Effect.addFinalizer(() => Effect.sync(() => agent.destroy()))
      const answered = yield* Effect.promise(() =>
        new Promise<{ status: number; connection: string | undefined }>((resolve, reject) => {
          https.get({ host: "127.0.0.1", port, path: "/healthz", agent }, (res) => {
            res.resume()
            res.on("end", () => resolve({ status: res.statusCode!, connection: res.headers.connection }))
          }).on("error", reject)
        })
      )
      expect(answered).toEqual({ status: 200, connection: "keep-alive" }) // the TLS socket stays open, idle
      const sent = Date.now()
      child.kill("SIGTERM")
      const code = yield* Effect.promise(() => exitOf(child))
      expect(code).toBe(0)
      expect((Date.now() - sent) / 1000).toBeLessThan(1 + 5) // grace + 5 s: does not hang on the idle socket
    }), { timeout: 120_000 })

  it.scopedLive("one TLS variable alone, or an unreadable file, stops start-up naming the variable", () =>
    Effect.gen(function*() {
      const { env, tlsDir } = yield* setup
      const certOnly = yield* failedStart({ ...env, VJ_TLS_CERT: path.join(tlsDir, "cert.pem") })
      expect(certOnly.code).not.toBe(0)
      expect(certOnly.output).toContain("VJ_TLS_KEY")
      const keyOnly = yield* failedStart({ ...env, VJ_TLS_KEY: path.join(tlsDir, "key.pem") })
      expect(keyOnly.code).not.toBe(0)
      expect(keyOnly.output).toContain("VJ_TLS_CERT")
      const missing = yield* failedStart({ ...env, VJ_TLS_CERT: path.join(tlsDir, "nope.pem"), VJ_TLS_KEY: path.join(tlsDir, "key.pem") })
      expect(missing.code).not.toBe(0)
      expect(missing.output).toContain("VJ_TLS_CERT")
      expect(missing.output).not.toContain("PRIVATE KEY") // the key's contents never appear
    }), { timeout: 120_000 })
})
