/**
 * Browser sessions on the real server: `POST /session` trades a key for an
 * HttpOnly, SameSite=Strict cookie (Secure only over https), the cookie is a
 * second credential beside Bearer keys (same rate-limit budget as its key),
 * sign-out, key revocation and expiry end it, and cookie-authenticated state
 * changes need the server's Origin (CSRF).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as https from "node:https"
import * as path from "node:path"
import { audioBytes } from "../../core/test/support/Audio.js"
import * as FakeOllama from "../../core/test/support/FakeOllama.js"
import * as FakeOpenAi from "../../core/test/support/FakeOpenAiTranscription.js"
import { redactSessionCookie } from "../src/RequestLog.js"
import { call, cli, freePort, serveHttps, serverEnv, start, tempDir } from "./support/TestServer.js"
import { revokeKey, signIn, userKey } from "./support/WebClient.js"

const withCookie = (cookie: string, extra: Record<string, string> = {}) => ({ headers: { cookie, ...extra } })

describe("browser sessions", () => {
  it.scopedLive("sign in: 200 {user}, an HttpOnly SameSite=Strict cookie without Secure over http; it signs requests in; sign-out ends it on the server", () =>
    Effect.gen(function*() {
      const server = yield* start({ sessionSeconds: 3600 })
      const alice = yield* userKey(server.config.database, server.config.audioDir, "alice")
      const session = yield* signIn(server.url, alice.apiKey)
      expect(session.status).toBe(200)
      expect(session.body).toEqual({ user: { id: alice.userId, name: "alice" } })
      const attributes = session.setCookie!.split(";").map((a) => a.trim())
      expect(attributes[0]).toMatch(/^vj_session=[A-Za-z0-9_-]{43}$/)
      expect(attributes.slice(1).sort()).toEqual(["HttpOnly", "Max-Age=3600", "Path=/", "SameSite=Strict"])
      // the id is not the key, and the key is not in the answer
      expect(session.sessionId).not.toContain(alice.apiKey.slice(3))
      expect(JSON.stringify(session.body)).not.toContain(alice.apiKey)

      const me = yield* call(server.url, undefined, "/session", withCookie(session.cookie))
      expect(me.status).toBe(200)
      expect(me.body.user.id).toBe(alice.userId)
      const list = yield* call(server.url, undefined, "/entries", withCookie(session.cookie))
      expect(list.status).toBe(200)
      expect(list.body.total).toBe(0)

      const out = yield* call(server.url, undefined, "/session", { method: "DELETE", ...withCookie(session.cookie, { origin: server.url }) })
      expect(out.status).toBe(204)
      expect(out.headers.get("set-cookie")).toMatch(/^vj_session=; .*Max-Age=0/)
      // the same cookie, replayed after sign-out, is refused: the session is gone on the server
      expect((yield* call(server.url, undefined, "/session", withCookie(session.cookie))).status).toBe(401)
      const refused = yield* call(server.url, undefined, "/entries", withCookie(session.cookie))
      expect(refused.status).toBe(401)
      expect(refused.body.error).toBe("unauthorized")
      // Bearer keys keep working
      expect((yield* call(server.url, alice.apiKey, "/entries")).status).toBe(200)
    }))

  it.scopedLive("a bad key is 401 in the error envelope with no cookie; GET /session without a cookie is 401", () =>
    Effect.gen(function*() {
      const server = yield* start()
      const bad = yield* signIn(server.url, "vj_not-a-real-key")
      expect(bad.status).toBe(401)
      expect(bad.body.error).toBe("unauthorized")
      expect(typeof bad.body.message).toBe("string")
      expect(bad.setCookie).toBeNull()
      const missing = yield* call(server.url, undefined, "/session", { method: "POST", headers: { "content-type": "application/json" }, body: "{}" })
      expect(missing.status).toBe(400)
      expect(missing.body.message).toContain("apiKey")
      expect((yield* call(server.url, undefined, "/session")).status).toBe(401)
      expect((yield* call(server.url, undefined, "/session", withCookie("vj_session=forged"))).status).toBe(401)
    }))

  it.scopedLive("failed sign-ins count against the address like failed bearer keys (429 with Retry-After)", () =>
    Effect.gen(function*() {
      const server = yield* start({ limits: { perMinute: 1000, uploadsPerMinute: 1000, authFailuresPerMinute: 2 } })
      const statuses: Array<number> = []
      for (let i = 0; i < 3; i++) statuses.push((yield* signIn(server.url, `vj_guess-${i}`)).status)
      expect(statuses).toEqual([401, 401, 429])
    }))

  it.scopedLive("revoking the API key ends the sessions made from it (and only those)", () =>
    Effect.gen(function*() {
      const server = yield* start()
      const alice = yield* userKey(server.config.database, server.config.audioDir, "alice")
      const bob = yield* userKey(server.config.database, server.config.audioDir, "bob")
      const a = yield* signIn(server.url, alice.apiKey)
      const b = yield* signIn(server.url, bob.apiKey)
      expect((yield* call(server.url, undefined, "/entries", withCookie(a.cookie))).status).toBe(200)
      yield* revokeKey(server.config.database, server.config.audioDir, alice.userId, alice.keyId)
      expect((yield* call(server.url, undefined, "/entries", withCookie(a.cookie))).status).toBe(401)
      expect((yield* call(server.url, undefined, "/session", withCookie(a.cookie))).status).toBe(401)
      expect((yield* call(server.url, undefined, "/entries", withCookie(b.cookie))).status).toBe(200)
    }))

  it.scopedLive("an expired session is refused", () =>
    Effect.gen(function*() {
      const server = yield* start({ sessionSeconds: 1 })
      const alice = yield* userKey(server.config.database, server.config.audioDir, "alice")
      const session = yield* signIn(server.url, alice.apiKey)
      expect(session.setCookie).toContain("Max-Age=1")
      expect((yield* call(server.url, undefined, "/session", withCookie(session.cookie))).status).toBe(200)
      yield* Effect.sleep("1500 millis")
      expect((yield* call(server.url, undefined, "/session", withCookie(session.cookie))).status).toBe(401)
      expect((yield* call(server.url, undefined, "/entries", withCookie(session.cookie))).status).toBe(401)
    }))

  it.scopedLive("cookie requests spend the budget of the key they came from", () =>
    Effect.gen(function*() {
      const server = yield* start({ limits: { perMinute: 4, uploadsPerMinute: 1000, authFailuresPerMinute: 1000 } })
      const alice = yield* userKey(server.config.database, server.config.audioDir, "alice")
      const session = yield* signIn(server.url, alice.apiKey) // counts one
      const statuses: Array<number> = []
      statuses.push((yield* call(server.url, alice.apiKey, "/entries")).status)
      statuses.push((yield* call(server.url, undefined, "/entries", withCookie(session.cookie))).status)
      statuses.push((yield* call(server.url, alice.apiKey, "/entries")).status)
      const limited = yield* call(server.url, undefined, "/entries", withCookie(session.cookie))
      statuses.push(limited.status)
      expect(statuses).toEqual([200, 200, 200, 429])
      expect(Number(limited.headers.get("retry-after"))).toBeGreaterThan(0)
    }))
})

describe("CSRF: cookie-authenticated state changes need this server's Origin", () => {
  it.scopedLive("missing or foreign Origin → 403 and nothing changes; same origin → ok; GET and Bearer requests are exempt", () =>
    Effect.gen(function*() {
      const server = yield* start()
      const alice = yield* userKey(server.config.database, server.config.audioDir, "alice")
      const session = yield* signIn(server.url, alice.apiKey, server.url)
      expect(session.status).toBe(200)
      const wav = audioBytes("wav")
      const upload = (headers: Record<string, string>) =>
        call(server.url, undefined, "/entries", { method: "POST", body: wav, headers: { "content-type": "audio/wav", cookie: session.cookie, ...headers } })

      const noOrigin = yield* upload({})
      expect(noOrigin.status).toBe(403)
      expect(noOrigin.body.error).toBe("forbidden")
      expect(noOrigin.body.message).toContain("Origin")
      const foreign = yield* upload({ origin: "https://evil.example" })
      expect(foreign.status).toBe(403)
      expect(foreign.body.message).toContain("https://evil.example")
      // another port on the same host is another origin
      const otherPort = yield* upload({ origin: "http://127.0.0.1:1" })
      expect(otherPort.status).toBe(403)
      expect((yield* call(server.url, alice.apiKey, "/entries")).body.total).toBe(0)

      const same = yield* upload({ origin: server.url })
      expect(same.status).toBe(201)
      const entryId = same.body.id as string
      // deleting with the cookie: the same rule
      expect((yield* call(server.url, undefined, `/entries/${entryId}`, { method: "DELETE", ...withCookie(session.cookie) })).status).toBe(403)
      // reads need no Origin
      expect((yield* call(server.url, undefined, `/entries/${entryId}`, withCookie(session.cookie))).status).toBe(200)
      // Bearer requests are exempt (no ambient credential), whatever the Origin
      expect((yield* call(server.url, alice.apiKey, `/entries/${entryId}/transcriptions`, { method: "POST", headers: { origin: "https://evil.example" } })).status)
        .toBe(202)
      expect((yield* call(server.url, undefined, `/entries/${entryId}`, { method: "DELETE", ...withCookie(session.cookie, { origin: server.url }) })).status)
        .toBe(204)
      // sign-out with a cookie checks Origin too
      expect((yield* call(server.url, undefined, "/session", { method: "DELETE", ...withCookie(session.cookie) })).status).toBe(403)
      expect((yield* call(server.url, undefined, "/session", withCookie(session.cookie))).status).toBe(200)
    }))

  it.scopedLive("sign-in with a foreign Origin is refused (login CSRF); without one (non-browser clients) it is allowed", () =>
    Effect.gen(function*() {
      const server = yield* start()
      const alice = yield* userKey(server.config.database, server.config.audioDir, "alice")
      const foreign = yield* signIn(server.url, alice.apiKey, "https://evil.example")
      expect(foreign.status).toBe(403)
      expect(foreign.body.error).toBe("forbidden")
      expect(foreign.setCookie).toBeNull()
      expect((yield* signIn(server.url, alice.apiKey)).status).toBe(200)
    }))

  it.scopedLive("behind a reverse proxy: VJ_PUBLIC_ORIGIN is the origin to match, and an https one makes the cookie Secure", () =>
    Effect.gen(function*() {
      const server = yield* start({ publicOrigin: "https://journal.example.org" })
      const alice = yield* userKey(server.config.database, server.config.audioDir, "alice")
      const session = yield* signIn(server.url, alice.apiKey, "https://journal.example.org")
      expect(session.status).toBe(200)
      expect(session.setCookie!.split(";").map((a) => a.trim())).toContain("Secure")
      const retranscribe = (origin: string) =>
        call(server.url, undefined, "/entries/x/transcriptions", { method: "POST", ...withCookie(session.cookie, { origin }) })
      // the address the proxy reaches is not the origin browsers use
      expect((yield* retranscribe(server.url)).status).toBe(403)
      expect((yield* retranscribe("https://journal.example.org")).status).toBe(404)
    }))
})

describe("sessions over https", () => {
  it.scopedLive("the cookie is Secure when the server speaks TLS, its Origin is https://…, and the session id never reaches the log", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir("vj-session-tls-")
      const ollama = yield* FakeOllama.make()
      const transcription = yield* FakeOpenAi.make({ instantText: "hello" })
      const port = yield* Effect.promise(freePort)
      const env = serverEnv({ port, dataDir: dir, transcribeUrl: transcription.url, ollamaUrl: ollama.url })
      const tlsDir = path.join(dir, "certs")
      cli(env, ["tls", "self-signed", "--host", "127.0.0.1", "--out", tlsDir])
      const apiKey = cli(env, ["users", "create", "alice"]).trim().split("\n").at(-1)!
      expect(apiKey).toMatch(/^vj_/)
      const ca = fs.readFileSync(path.join(tlsDir, "ca.pem"), "utf8")
      const server = yield* serveHttps({ ...env, VJ_TLS_CERT: path.join(tlsDir, "cert.pem"), VJ_TLS_KEY: path.join(tlsDir, "key.pem") }, port, ca)
      const request = (pathname: string, method: string, headers: Record<string, string>, body?: string) =>
        Effect.promise(() =>
          new Promise<{ status: number; headers: Record<string, any>; body: string }>((resolve, reject) => {
            const r = https.request({ host: "127.0.0.1", port, path: pathname, method, headers, ca, agent: false }, (res) => {
              let text = ""
              res.on("data", (c: Buffer) => (text += c.toString("utf8")))
              res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body: text }))
            })
            r.on("error", reject)
            r.end(body)
          })
        )
      const origin = `https://127.0.0.1:${port}`
      const signedIn = yield* request("/session", "POST", { "content-type": "application/json", origin }, JSON.stringify({ apiKey }))
      expect(signedIn.status).toBe(200)
      const setCookie = String(signedIn.headers["set-cookie"])
      expect(setCookie.split(";").map((a) => a.trim())).toEqual(expect.arrayContaining(["HttpOnly", "SameSite=Strict", "Path=/", "Secure"]))
      const cookie = setCookie.split(";")[0]!
      const sessionId = cookie.split("=")[1]!
      // over https the http:// origin of the same host is another origin
      expect((yield* request("/entries/x", "DELETE", { cookie, origin: `http://127.0.0.1:${port}` })).status).toBe(403)
      expect((yield* request("/entries/x", "DELETE", { cookie, origin })).status).toBe(404)
      expect((yield* request("/entries?limit=zz", "GET", { cookie })).status).toBe(400)
      expect((yield* request("/no-such-route", "GET", { cookie })).status).toBe(404)
      expect((yield* request("/session", "DELETE", { cookie, origin })).status).toBe(204)
      yield* Effect.sleep("300 millis") // let the last log lines arrive
      expect(server.output()).toContain("Sent HTTP response")
      expect(server.output()).not.toContain(sessionId)
      expect(server.output()).not.toContain(apiKey)
    }), { timeout: 180_000 })

  it("the log redaction replaces session ids wherever a message quotes the cookie", () => {
    expect(redactSessionCookie(`bad header "cookie: a=1; vj_session=abc_DEF-123; b=2"`)).toBe(`bad header "cookie: a=1; vj_session=REDACTED; b=2"`)
  })
})
