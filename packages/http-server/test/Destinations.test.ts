/**
 * Destinations through the real server: configured per user over HTTP and
 * with the CLI, secrets sealed and never answered, the delivery log and its
 * retry route, and the start-up error when sealed secrets need a missing key.
 */
import { describe, expect, it } from "@effect/vitest"
import { SqliteJournalStore } from "@voice-journal/adapter-sqlite"
import { Domain, JournalStore, Webhook } from "@voice-journal/core"
import { Effect, Option, Redacted } from "effect"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { audioBytes } from "../../core/test/support/Audio.js"
import * as FakeWebhookReceiver from "../../core/test/support/FakeWebhookReceiver.js"
import { call, freePort, packageDir, start, tempDir, waitFor } from "./support/TestServer.js"

const secretKey = "22".repeat(32)

/** The CLI as its own process, without blocking this process's event loop (the server under test runs in it). */
const cliAsync = (env: NodeJS.ProcessEnv, args: Array<string>) =>
  Effect.async<{ code: number; stdout: string; stderr: string }>((resume) => {
    execFile(process.execPath, ["--import", "tsx", "--conditions=source", "src/bin.ts", ...args], { cwd: packageDir, env }, (error, stdout, stderr) =>
      resume(Effect.succeed({ code: error === null ? 0 : Number((error as { code?: number }).code ?? 1), stdout, stderr })))
  })

describe("Destinations over HTTP", () => {
  it.scopedLive("add (validated, secret sealed, never answered), list, test, the delivery log, retry, remove", () =>
    Effect.gen(function*() {
      const receiver = yield* FakeWebhookReceiver.make()
      const vaults = yield* tempDir("vj-vaults-")
      const s = yield* start({ destinations: { secretKey: Option.some(Redacted.make(secretKey)), markdownRoot: vaults, webhookAllowHosts: ["127.0.0.1"] } })
      const key = yield* s.key("alice")
      const post = (pathname: string, body?: unknown) =>
        call(s.url, key, pathname, { method: "POST", ...(body !== undefined ? { headers: { "content-type": "application/json" }, body: JSON.stringify(body) } : {}) })

      // bad input: 400 saying what is wrong, nothing stored
      for (const bad of [
        { kind: "ftp", name: "x", config: {} },
        { kind: "webhook", name: "x", config: { url: receiver.url }, secret: "not-a-whsec" },
        { kind: "webhook", name: "x", config: { url: "file:///etc/passwd" }, secret: receiver.secret },
        { kind: "markdown", name: "x", config: { folder: "../escape" } },
        { kind: "markdown", name: "x", config: { folder: "ok", extra: 1 } },
        { kind: "notion", name: "x", config: { databaseId: "db" } }
      ]) {
        const r = yield* post("/destinations", bad)
        expect([r.status, r.body.error]).toEqual([400, "bad_request"])
      }
      expect((yield* call(s.url, key, "/destinations")).body).toEqual([])

      const hook = yield* post("/destinations", { kind: "webhook", name: "n8n", config: { url: receiver.url }, secret: receiver.secret })
      expect(hook.status).toBe(201)
      expect(hook.body).toMatchObject({ kind: "webhook", name: "n8n", config: { url: receiver.url }, hasSecret: true, disabledAt: null })
      const folder = yield* post("/destinations", { kind: "markdown", name: "vault", config: { folder: "alice" } })
      expect(folder.status).toBe(201)
      const listed = yield* call(s.url, key, "/destinations")
      expect(listed.body.map((d: { id: string }) => d.id)).toEqual([hook.body.id, folder.body.id])
      const secretPart = receiver.secret.slice(6)
      for (const body of [hook.body, listed.body]) {
        expect(JSON.stringify(body)).not.toContain(secretPart)
        expect(JSON.stringify(body)).not.toContain("sealed")
      }
      // another user sees none of them
      const bob = yield* s.key("bob")
      expect((yield* call(s.url, bob, "/destinations")).body).toEqual([])
      expect((yield* call(s.url, bob, `/destinations/${hook.body.id}/test`, { method: "POST" })).status).toBe(404)

      expect((yield* post(`/destinations/${hook.body.id}/test`)).body).toEqual({ ok: true, error: null })
      expect((yield* post(`/destinations/${folder.body.id}/test`)).body).toEqual({ ok: true, error: null })

      const created = yield* call(s.url, key, "/entries", { method: "POST", body: audioBytes("wav"), headers: { "content-type": "audio/wav" } })
      const done = yield* waitFor(async () => {
        const r = await fetch(`${s.url}/entries/${created.body.id}`, { headers: { authorization: `Bearer ${key}` } })
        const entry = await r.json() as { deliveries: Array<{ status: string }> }
        return entry.deliveries.length === 3 && entry.deliveries.every((d) => d.status === "success") ? entry : undefined
      }, 150_000)
      expect(done.deliveries.length).toBe(3) // the server-wide Notion, the webhook, the folder
      const log = yield* call(s.url, key, `/deliveries?destinationId=${hook.body.id}`)
      expect(log.body.total).toBe(1)
      expect(log.body.items[0]).toMatchObject({ entryId: created.body.id, status: "success", attempts: 1, lastError: null, externalRef: log.body.items[0].id })
      expect(receiver.received().filter((m) => m.id === log.body.items[0].id).map((m) => m.verified)).toEqual([true])
      const fileRef = (yield* call(s.url, key, `/deliveries?destinationId=${folder.body.id}`)).body.items[0].externalRef
      expect(fs.existsSync(path.join(vaults, "alice", fileRef))).toBe(true)
      expect((yield* call(s.url, key, "/deliveries?status=bogus")).status).toBe(400)
      // only failed deliveries can be retried
      expect((yield* post(`/deliveries/${log.body.items[0].id}/retry`)).status).toBe(409)
      // re-deliver on demand: a new delivery per destination
      const again = yield* post(`/entries/${created.body.id}/deliveries`, { destinationIds: [hook.body.id] })
      expect(again.status).toBe(202)
      expect(again.body.map((d: { destinationId: string }) => d.destinationId)).toEqual([hook.body.id])
      yield* waitFor(async () => {
        const r = await fetch(`${s.url}/deliveries?destinationId=${hook.body.id}&status=success`, { headers: { authorization: `Bearer ${key}` } })
        return ((await r.json()) as { total: number }).total === 2 ? true : undefined
      }, 150_000)

      // a 410 from the endpoint: the test says so (the destination is only disabled by a delivery)
      receiver.failNext({ kind: "status", status: 410 })
      expect((yield* post(`/destinations/${hook.body.id}/test`)).body).toEqual({ ok: false, error: "the webhook endpoint answered 410 Gone" })

      expect((yield* call(s.url, key, `/destinations/${hook.body.id}`, { method: "DELETE" })).status).toBe(204)
      expect((yield* call(s.url, key, `/deliveries?destinationId=${hook.body.id}`)).body.total).toBe(0)
      expect((yield* call(s.url, key, "/destinations")).body.map((d: { id: string }) => d.id)).toEqual([folder.body.id])
    }), { timeout: 300_000 })

  it.scopedLive("the CLI: destinations add (a webhook secret made and shown once), list, test, log, remove", () =>
    Effect.gen(function*() {
      const receiver = yield* FakeWebhookReceiver.make()
      const s = yield* start({ destinations: { secretKey: Option.some(Redacted.make(secretKey)), webhookAllowHosts: ["127.0.0.1"] } })
      const key = yield* s.key("alice")
      const env = { ...process.env, VJ_URL: s.url, VJ_API_KEY: key }
      // the secret from the environment (never on the command line): the receiver verifies what the server signs with it
      const added = yield* cliAsync({ ...env, VJ_DESTINATION_SECRET: receiver.secret }, ["destinations", "add", "webhook", "--name", "home", "--hook-url", receiver.url])
      expect(added.code).toBe(0)
      expect(added.stdout).not.toContain(receiver.secret)
      const id = /^destination (\S+)/m.exec(added.stdout)![1]!
      const list = yield* cliAsync(env, ["destinations", "list"])
      expect(list.stdout).toContain(`${id}  webhook  home`)
      expect(list.stdout).toContain("(secret stored)")
      const tested = yield* cliAsync(env, ["destinations", "test", id])
      expect(tested.stdout).toContain(`destination ${id}: ok`)
      expect(receiver.received().map((m) => m.verified)).toEqual([true])
      // without one, the CLI makes a signing secret and prints it once
      const made = yield* cliAsync(env, ["destinations", "add", "webhook", "--name", "other", "--hook-url", receiver.url])
      const secret = /^(whsec_\S+)$/m.exec(made.stdout)![1]!
      expect(Webhook.isSigningSecret(secret)).toBe(true)
      const otherId = /^destination (\S+)/m.exec(made.stdout)![1]!
      expect((yield* cliAsync(env, ["destinations", "remove", otherId])).code).toBe(0)
      expect((yield* cliAsync(env, ["destinations", "remove", id])).stdout).toContain(`destination ${id} removed`)
      expect((yield* cliAsync(env, ["destinations", "list"])).stdout.trim()).toBe("")
      const bad = yield* cliAsync(env, ["destinations", "add", "markdown", "--name", "m"])
      expect(bad.code).not.toBe(0)
      expect(bad.stderr + bad.stdout).toContain("--folder")
    }), { timeout: 900_000 })

  it.scopedLive("serve refuses to start when stored destinations have secrets and VJ_SECRET_KEY is missing, naming it", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir("vj-secret-")
      yield* Effect.gen(function*() {
        const store = yield* JournalStore.JournalStore
        const user = yield* store.createUser("u")
        yield* store.createDestination({ id: "d1" as Domain.DestinationId, userId: user.id, kind: "webhook", name: "h", config: { url: "https://example.com" }, sealedSecret: "v1.AAAA" })
      }).pipe(Effect.provide(SqliteJournalStore.layer({ filename: path.join(dir, "journal.db") })), Effect.orDie)
      const env: NodeJS.ProcessEnv = { ...process.env, VJ_DATA_DIR: dir, VJ_PORT: String(yield* Effect.promise(freePort)), VJ_TRANSCRIBER: "openai" }
      delete env.VJ_SECRET_KEY
      const run = yield* cliAsync(env, ["serve"])
      expect(run.code).not.toBe(0)
      expect(run.stdout + run.stderr).toContain("VJ_SECRET_KEY is not set")
      const badKey = yield* cliAsync({ ...env, VJ_SECRET_KEY: "short" }, ["serve"])
      expect(badKey.code).not.toBe(0)
      expect(badKey.stdout + badKey.stderr).toContain("VJ_SECRET_KEY")
    }), { timeout: 300_000 })
})
