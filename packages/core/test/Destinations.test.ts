/**
 * The three destinations against real receivers — the loopback Notion, a
 * real folder, a loopback webhook receiver verifying with `standardwebhooks`
 * — and then through the pipeline's delivery stage.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Redacted, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as YAML from "yaml"
import type { Document, Previous } from "../src/Destination.js"
import type { DeliveryId, EntryId, UserId } from "../src/Domain.js"
import * as MarkdownFolder from "../src/MarkdownFolder.js"
import * as NotionPublisher from "../src/NotionPublisher.js"
import * as Webhook from "../src/Webhook.js"
import { audioBytes } from "./support/Audio.js"
import * as FakeNotion from "./support/FakeNotion.js"
import * as FakeWebhookReceiver from "./support/FakeWebhookReceiver.js"
import { eventually, type Harness, make, type StoreKind } from "./support/PipelineHarness.js"

const document = (overrides: Partial<Document> = {}): Document => ({
  deliveryId: globalThis.crypto.randomUUID() as DeliveryId,
  entryId: globalThis.crypto.randomUUID() as EntryId,
  userId: "u" as UserId,
  title: "Market day",
  text: "Today I went to the market.\n\nThe weather was nice.",
  transcript: "today i went to the market the weather was nice",
  summary: "A trip to the market.",
  actionItems: ["Buy apples", "Call Sam"],
  tags: ["errands", "food"],
  sections: { Mood: "Cheerful" },
  createdAt: new Date("2026-03-04T08:00:00Z"),
  durationSeconds: 12.5,
  ...overrides
})

/** A `Previous` that keeps what is recorded, as the delivery row would. */
const remembering = (externalRef: string | null = null) => {
  const recorded: Array<string> = []
  const previous: Previous = { externalRef, record: (ref) => Effect.sync(() => void recorded.push(ref)) }
  return { previous, recorded }
}

const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "vj-dest-"))),
  (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
)

const notionDestination = (notion: FakeNotion.FakeNotion) =>
  NotionPublisher.make({ token: Redacted.make(notion.token), databaseId: notion.databaseId, baseUrl: notion.url, requestsPerSecond: 1000 }).pipe(
    Effect.map(NotionPublisher.toDestination)
  )

describe("Notion destination (loopback Notion)", () => {
  it.scoped("structured sections map to the database's Summary and Tags properties; action items are to-do blocks", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make({ properties: { Summary: "rich_text", Tags: "multi_select" } })
      const destination = yield* notionDestination(notion)
      const doc = document()
      const { previous, recorded } = remembering()
      const { externalRef } = yield* destination.deliver(doc, previous)
      const [page] = notion.pages()
      expect(page!.id).toBe(externalRef)
      expect(recorded).toEqual([externalRef])
      expect(page!.properties).toEqual({ Summary: "A trip to the market.", Tags: ["errands", "food"] })
      expect(page!.blocks.map((b) => b.type)).toEqual(["paragraph", "paragraph", "to_do", "to_do", "toggle"])
      expect(page!.blocks.filter((b) => b.type === "to_do").map((b) => b.text)).toEqual(["Buy apples", "Call Sam"])
      // the schema is read once per publisher
      yield* destination.deliver(document(), remembering().previous)
      expect(notion.requests.filter((r) => r.method === "GET" && r.path.startsWith("/v1/data_sources/")).length).toBe(1)
    }))

  it.scoped("a database without those properties (or with another type) still gets the page, without them", () =>
    Effect.gen(function*() {
      for (const properties of [{}, { Tags: "rich_text", Summary: "select" }]) {
        const notion = yield* FakeNotion.make({ properties })
        const destination = yield* notionDestination(notion)
        yield* destination.deliver(document(), remembering().previous)
        const [page] = notion.pages()
        expect(page!.properties).toEqual({})
        expect(page!.blocks.filter((b) => b.type === "to_do").length).toBe(2)
      }
    }))

  it.scoped("the loopback Notion refuses a property its schema lacks (the check above can fail)", () =>
    Effect.gen(function*() {
      const notion = yield* FakeNotion.make()
      const response = yield* Effect.promise(() =>
        fetch(`${notion.url}/v1/pages`, {
          method: "POST",
          headers: { authorization: `Bearer ${notion.token}`, "notion-version": "2025-09-03", "content-type": "application/json" },
          body: JSON.stringify({ parent: { database_id: notion.databaseId }, properties: { Summary: { rich_text: [] } } })
        })
      )
      expect(response.status).toBe(400)
    }))
})

describe("Markdown folder destination (a real folder)", () => {
  it.scoped("one file per entry, `YYYY-MM-DD title.md`, YAML front matter that parses back, the sections", () =>
    Effect.gen(function*() {
      const root = yield* tempDir
      const destination = MarkdownFolder.make({ root, folder: "vault/journal" })
      const doc = document()
      const { previous, recorded } = remembering()
      const { externalRef } = yield* destination.deliver(doc, previous)
      expect(externalRef).toBe("2026-03-04 Market day.md")
      expect(recorded).toEqual([externalRef])
      const text = fs.readFileSync(path.join(root, "vault/journal", externalRef), "utf8")
      const front = YAML.parse(/^---\n([\s\S]*?)\n---\n/.exec(text)![1]!)
      expect(front).toEqual({
        title: "Market day",
        date: "2026-03-04T08:00:00.000Z",
        entry_id: doc.entryId,
        tags: ["errands", "food"],
        duration_seconds: 12.5,
        summary: "A trip to the market."
      })
      expect(text).toContain("## Action items\n\n- [ ] Buy apples\n- [ ] Call Sam")
      expect(text).toContain("## Mood\n\nCheerful")
      expect(text).toContain("## Transcript\n\ntoday i went")
      expect(fs.readdirSync(path.join(root, "vault/journal"))).toEqual([externalRef]) // no temp file left
    }))

  it.scoped("a re-sync rewrites the same file, found by entry id even after the title changed; another entry with the same title gets a suffix", () =>
    Effect.gen(function*() {
      const root = yield* tempDir
      const destination = MarkdownFolder.make({ root, folder: "j" })
      const doc = document()
      const first = yield* destination.deliver(doc, remembering().previous)
      // a new delivery that knows nothing (no reference): found by the front matter's entry id
      const again = yield* destination.deliver({ ...doc, title: "Renamed", text: "New text." }, remembering().previous)
      expect(again.externalRef).toBe(first.externalRef)
      expect(fs.readFileSync(path.join(root, "j", first.externalRef), "utf8")).toContain("New text.")
      const other = yield* destination.deliver(document(), remembering().previous)
      expect(other.externalRef).toBe("2026-03-04 Market day (2).md")
      expect(fs.readdirSync(path.join(root, "j")).sort()).toEqual(["2026-03-04 Market day (2).md", "2026-03-04 Market day.md"])
    }))

  it.scoped("safe file names: no separators, traversal, reserved or control characters, leading dots; capped length", () =>
    Effect.gen(function*() {
      const root = yield* tempDir
      const destination = MarkdownFolder.make({ root, folder: "j" })
      const names: Array<string> = []
      for (const title of ["../../etc/passwd", "a<b>c:d\"e|f?g*h\\i", "\u0000\u0007bell", "...hidden", "   ", "ü".repeat(300)]) {
        names.push((yield* destination.deliver(document({ title }), remembering().previous)).externalRef)
      }
      expect(names.slice(0, 5)).toEqual([
        "2026-03-04 etc passwd.md",
        "2026-03-04 a b c d e f g h i.md",
        "2026-03-04 bell.md",
        "2026-03-04 hidden.md",
        "2026-03-04 Voice note.md"
      ])
      expect(Buffer.byteLength(names[5]!)).toBeLessThanOrEqual(200)
      expect(names[5]!.endsWith("ü.md")).toBe(true)
      expect(fs.readdirSync(path.join(root, "j")).sort()).toEqual([...names].sort())
      expect(fs.readdirSync(root)).toEqual(["j"])
    }))

  it.scoped("paths stay inside the root: `..`, absolute paths and a symlink out are refused; nothing is written", () =>
    Effect.gen(function*() {
      const root = yield* tempDir
      const outside = yield* tempDir
      fs.mkdirSync(path.join(root, "inside"))
      fs.symlinkSync(outside, path.join(root, "inside", "escape"))
      for (const folder of ["../x", outside, "inside/escape", "inside/escape/deeper"]) {
        const error = yield* Effect.flip(MarkdownFolder.make({ root, folder }).deliver(document(), remembering().previous))
        expect(error._tag).toBe("PermanentError")
      }
      expect(fs.readdirSync(outside)).toEqual([])
      // a recorded reference that is not a bare name is never used as a path
      const destination = MarkdownFolder.make({ root, folder: "ok" })
      const { externalRef } = yield* destination.deliver(document(), remembering("../../escape.md").previous)
      expect(externalRef).toBe("2026-03-04 Market day.md")
    }))

  it.scoped("remove deletes the entry's file (and only it); removeOnDelete: false keeps it", () =>
    Effect.gen(function*() {
      const root = yield* tempDir
      const destination = MarkdownFolder.make({ root, folder: "j" })
      const doc = document()
      const mine = yield* destination.deliver(doc, remembering().previous)
      const other = yield* destination.deliver(document(), remembering().previous)
      yield* destination.remove!(doc.entryId, mine.externalRef)
      expect(fs.readdirSync(path.join(root, "j"))).toEqual([other.externalRef])
      expect(MarkdownFolder.make({ root, folder: "j", removeOnDelete: false }).remove).toBeUndefined()
    }))
})

describe("Webhook destination (loopback receiver verifying with standardwebhooks)", () => {
  const hook = (receiver: FakeWebhookReceiver.FakeWebhookReceiver, allowHosts: ReadonlyArray<string> = ["127.0.0.1"]) =>
    Webhook.make({ url: receiver.url, secret: Redacted.make(receiver.secret), allowHosts, timeout: "5 seconds" })

  it.scoped("a signed POST that standardwebhooks verifies; webhook-id is the delivery id, the same on every try", () =>
    Effect.gen(function*() {
      const receiver = yield* FakeWebhookReceiver.make()
      const doc = document()
      const { previous, recorded } = remembering()
      const { externalRef } = yield* hook(receiver).deliver(doc, previous)
      yield* hook(receiver).deliver(doc, remembering(externalRef).previous)
      const messages = receiver.received()
      expect(messages.map((m) => [m.id, m.verified])).toEqual([[doc.deliveryId, true], [doc.deliveryId, true]])
      expect(externalRef).toBe(doc.deliveryId)
      expect(recorded).toEqual([doc.deliveryId])
      expect(messages[0]!.payload).toMatchObject({
        type: "journal.entry",
        data: { entryId: doc.entryId, title: "Market day", summary: "A trip to the market.", actionItems: ["Buy apples", "Call Sam"], tags: ["errands", "food"] }
      })
      // a wrong secret fails the receiver's verification (the check can fail)
      const forged = Webhook.make({ url: receiver.url, secret: Redacted.make(Webhook.generateSecret()), allowHosts: ["127.0.0.1"] })
      expect((yield* Effect.flip(forged.deliver(document(), remembering().previous)))._tag).toBe("PermanentError") // 401
      expect(receiver.received()[2]!.verified).toBe(false)
    }))

  it.scopedLive("500 is temporary, 429 carries Retry-After, 410 is DestinationGone, a redirect is not followed", () =>
    Effect.gen(function*() {
      const receiver = yield* FakeWebhookReceiver.make()
      const destination = hook(receiver)
      const attempt = Effect.flip(destination.deliver(document(), remembering().previous))
      receiver.failNext({ kind: "status", status: 500 })
      expect(yield* attempt).toMatchObject({ _tag: "TemporaryError", status: 500 })
      receiver.failNext({ kind: "status", status: 429, headers: { "retry-after": "7" } })
      expect(yield* attempt).toMatchObject({ _tag: "TemporaryError", status: 429, retryAfterMillis: 7000 })
      receiver.failNext({ kind: "status", status: 410 })
      expect(yield* attempt).toMatchObject({ _tag: "DestinationGone" })
      receiver.failNext({ kind: "status", status: 302, headers: { location: "http://169.254.169.254/latest" } })
      expect(yield* attempt).toMatchObject({ _tag: "PermanentError", status: 302 })
      receiver.failNext({ kind: "hang" })
      const slow = Webhook.make({ url: receiver.url, secret: Redacted.make(receiver.secret), allowHosts: ["127.0.0.1"], timeout: "300 millis" })
      expect(yield* Effect.flip(slow.deliver(document(), remembering().previous))).toMatchObject({ _tag: "TemporaryError" })
    }))

  it.scoped("SSRF: loopback, private and link-local targets are refused unless allow-listed; nothing is sent", () =>
    Effect.gen(function*() {
      const receiver = yield* FakeWebhookReceiver.make()
      const port = new URL(receiver.url).port
      for (const url of [receiver.url, `http://localhost:${port}/hook`, `http://[::1]:${port}/hook`, "http://10.1.2.3/x", "http://169.254.169.254/latest"]) {
        const destination = Webhook.make({ url, secret: Redacted.make(receiver.secret), timeout: "2 seconds" })
        const error = yield* Effect.flip(destination.deliver(document(), remembering().previous))
        expect(error._tag).toBe("PermanentError")
        expect(error.message).toContain("VJ_WEBHOOK_ALLOW_HOSTS")
      }
      expect(receiver.received()).toEqual([])
      expect(Webhook.isPrivateAddress("8.8.8.8")).toBe(false)
      expect(Webhook.isPrivateAddress("::ffff:127.0.0.1")).toBe(true)
      expect(Webhook.isPrivateAddress("fd00::1")).toBe(true)
    }))
})

/** Waits until every delivery of the entry reached a final state. */
const delivered = (h: Harness, userId: UserId, entryId: EntryId, count: number) =>
  eventually(h.journal.getEntry(userId, entryId).pipe(Effect.map((d) =>
    d.deliveries.length === count && d.deliveries.every((x) => x.status === "success" || x.status === "failed") ? d : undefined
  )))

for (const kind of ["sqlite", "postgres"] as const satisfies ReadonlyArray<StoreKind>) {
  describe(`Deliveries through the pipeline on ${kind}`, () => {
    it.scopedLive("an entry goes to the server-wide Notion, a user's webhook and Markdown folder; secrets are sealed at rest", () =>
      Effect.gen(function*() {
        const h = yield* make({ kind, instantTranscription: true })
        const { user } = yield* h.journal.createUser("u")
        const webhook = yield* h.destinations.add(user.id, { kind: "webhook", name: "n8n", config: { url: h.webhook.url }, secret: Redacted.make(h.webhook.secret) })
        const folder = yield* h.destinations.add(user.id, { kind: "markdown", name: "vault", config: { folder: "alice" } })
        yield* h.startPipeline()
        const { entry } = yield* h.journal.ingest(user.id, Stream.make(audioBytes("wav")))
        const done = yield* delivered(h, user.id, entry.id, 3)
        expect(done.deliveries.map((d) => d.status)).toEqual(["success", "success", "success"])
        const byDestination = new Map(done.deliveries.map((d) => [d.destinationId as string, d]))
        // Notion
        expect(h.notion.pages().map((p) => p.id)).toEqual([done.notionSync!.notionPageId])
        // webhook: verified, with the delivery's id
        const hookDelivery = byDestination.get(webhook.id)!
        expect(h.webhook.received().map((m) => [m.id, m.verified])).toEqual([[hookDelivery.id, true]])
        expect(hookDelivery.externalRef).toBe(hookDelivery.id)
        // Markdown: the file named in the log
        const file = path.join(h.markdownRoot, "alice", byDestination.get(folder.id)!.externalRef!)
        expect(MarkdownFolder.frontMatter(fs.readFileSync(file, "utf8"))!.entry_id).toBe(entry.id)
        // the secret is stored sealed, never in clear
        const rows = yield* h.sql.unsafe<{ sealed: string }>(`SELECT sealed_secret AS sealed FROM destinations WHERE kind = 'webhook'`).pipe(Effect.orDie)
        expect(rows[0]!.sealed.startsWith("v1.")).toBe(true)
        expect(rows[0]!.sealed).not.toContain(h.webhook.secret.slice(6))
        // deleting the entry removes its file
        yield* h.journal.deleteEntry(user.id, entry.id)
        expect(fs.existsSync(file)).toBe(false)
      }))

    it.scopedLive("webhook 500, then 429 + Retry-After, then 2xx: delivered, every try with the same webhook-id; 410 disables the endpoint and the log says so", () =>
      Effect.gen(function*() {
        const h = yield* make({ kind, notion: false, instantTranscription: true })
        const { user } = yield* h.journal.createUser("u")
        const webhook = yield* h.destinations.add(user.id, { kind: "webhook", name: "hook", config: { url: h.webhook.url }, secret: Redacted.make(h.webhook.secret) })
        h.webhook.failNext({ kind: "status", status: 500 })
        h.webhook.failNext({ kind: "status", status: 429, headers: { "retry-after": "1" } })
        yield* h.startPipeline()
        const first = (yield* h.journal.ingest(user.id, Stream.make(audioBytes("wav")))).entry
        const done = yield* delivered(h, user.id, first.id, 1)
        expect(done.deliveries[0]!.status).toBe("success")
        expect(h.webhook.received().map((m) => m.answered)).toEqual([500, 429, 204])
        expect(new Set(h.webhook.received().map((m) => m.id))).toEqual(new Set([done.deliveries[0]!.id]))

        h.webhook.failNext({ kind: "status", status: 410 })
        const second = (yield* h.journal.ingest(user.id, Stream.make(audioBytes("wav")))).entry
        const gone = (yield* delivered(h, user.id, second.id, 1)).deliveries[0]!
        expect(gone.status).toBe("failed")
        expect(gone.attempts).toBe(1)
        expect(gone.lastError).toContain("410")
        expect(gone.lastError).toContain("disabled")
        const log = yield* h.journal.listDeliveries(user.id, { limit: 20, offset: 0, destinationId: webhook.id, status: "failed" })
        expect(log.items.map((d) => d.id)).toEqual([gone.id])
        const [stored] = yield* h.destinations.list(user.id)
        expect(stored!.disabledReason).toContain("410")
        // a disabled endpoint gets no new deliveries, and a retry of the old one fails without a request
        const third = (yield* h.journal.ingest(user.id, Stream.make(audioBytes("wav")))).entry
        yield* eventually(h.journal.getEntry(user.id, third.id).pipe(Effect.map((d) => d.cleanup?.status === "completed" ? d : undefined)))
        expect((yield* h.journal.getEntry(user.id, third.id)).deliveries).toEqual([])
        const received = h.webhook.received().length
        yield* h.journal.retryDelivery(user.id, gone.id)
        const again = yield* eventually(h.journal.listDeliveries(user.id, { limit: 1, offset: 0, entryId: second.id }).pipe(
          Effect.map((p) => p.items[0]!.status === "failed" && p.items[0]!.lastError!.includes("is disabled") ? p.items[0] : undefined)
        ))
        expect(again.id).toBe(gone.id)
        expect(h.webhook.received().length).toBe(received)
      }))

    it.scopedLive("a failed delivery is retried through the retry route; a crash after the file was written (row still processing) rewrites the same file", () =>
      Effect.gen(function*() {
        const h = yield* make({ kind, notion: false, instantTranscription: true })
        const { user } = yield* h.journal.createUser("u")
        const folder = yield* h.destinations.add(user.id, { kind: "markdown", name: "vault", config: { folder: "v" } })
        // the folder cannot be made now: a file sits where it should be
        fs.rmdirSync(path.join(h.markdownRoot, "v"))
        fs.writeFileSync(path.join(h.markdownRoot, "v"), "in the way")
        yield* h.startPipeline()
        const { entry } = yield* h.journal.ingest(user.id, Stream.make(audioBytes("wav")))
        const failed = (yield* delivered(h, user.id, entry.id, 1)).deliveries[0]!
        expect(failed.status).toBe("failed")
        fs.rmSync(path.join(h.markdownRoot, "v"))
        yield* h.journal.retryDelivery(user.id, failed.id)
        const ok = (yield* delivered(h, user.id, entry.id, 1)).deliveries[0]!
        expect(ok.status).toBe("success")
        const name = ok.externalRef!
        // what SIGKILL between the write and the row update leaves: reference recorded, row processing, lease expired
        yield* h.sql.unsafe(`UPDATE deliveries SET status = 'processing', lease_owner = 'dead', lease_expires_at = '2000-01-01T00:00:00.000Z' WHERE id = '${ok.id}'`).pipe(Effect.orDie)
        const redone = yield* eventually(h.journal.listDeliveries(user.id, { limit: 1, offset: 0, destinationId: folder.id }).pipe(
          Effect.map((p) => p.items[0]!.status === "success" && p.items[0]!.attempts > ok.attempts ? p.items[0] : undefined)
        ))
        expect(redone.externalRef).toBe(name)
        expect(fs.readdirSync(path.join(h.markdownRoot, "v"))).toEqual([name])
      }))
  })
}

