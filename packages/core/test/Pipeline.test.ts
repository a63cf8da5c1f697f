import { describe, expect, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import type { UserId } from "../src/Domain.js"
import * as VoiceJournal from "../src/VoiceJournal.js"
import { type AudioFormat, audioBytes, RECOGNISED_WORDS } from "./support/Audio.js"
import { eventually, fastPipeline, type Harness, make, statusCounts, type StoreKind } from "./support/PipelineHarness.js"

const upload = (h: Harness, userId: UserId, format: AudioFormat = "mp3") =>
  h.journal.ingest(userId, Stream.make(audioBytes(format)), { originalFilename: `note.${format}` })

/** Waits until the entry's Notion sync (or cleanup, without Notion) reached a final state. */
const settled = (h: Harness, userId: UserId, entryId: VoiceJournal.EntryDetails["entry"]["id"], stage: "cleanup" | "notion" = "notion") =>
  eventually(
    h.journal.getEntry(userId, entryId).pipe(Effect.map((d) => {
      const row = stage === "notion" ? d.notionSync : d.cleanup
      return row !== null && ["success", "completed", "failed"].includes(row.status) ? d : undefined
    }))
  )

for (const kind of ["sqlite", "postgres"] as const satisfies ReadonlyArray<StoreKind>) {
  describe(`Pipeline on ${kind}`, () => {
    it.scopedLive("real speech goes all the way: transcript, cleaned entry, one Notion page", () =>
      Effect.gen(function*() {
        const h = yield* make({ kind })
        const { user } = yield* h.journal.createUser("alice")
        yield* h.startPipeline()
        const { entry } = yield* upload(h, user.id, "mp3")
        const done = yield* settled(h, user.id, entry.id)
        expect(done.transcription!.status).toBe("completed")
        expect(done.transcription!.isPrimary).toBe(true)
        for (const word of RECOGNISED_WORDS) expect(done.transcription!.text!.toLowerCase()).toContain(word)
        expect(done.cleanup!.status).toBe("completed")
        expect(done.cleanup!.text!.charAt(0)).toMatch(/[A-Z]/)
        expect(done.notionSync!.status).toBe("success")
        const pages = h.notion.pages()
        expect(pages.length).toBe(1)
        expect(pages[0]!.id).toBe(done.notionSync!.notionPageId)
        expect(pages[0]!.entryId).toBe(entry.id)
        expect(pages[0]!.title).toBe(done.cleanup!.title)
      }))

    it.scopedLive("Ollama down for a while, then up: the entry completes and nothing is failed", () =>
      Effect.gen(function*() {
        const h = yield* make({ kind, instantTranscription: true })
        const { user } = yield* h.journal.createUser("u")
        yield* Effect.promise(() => h.ollama.down())
        yield* h.startPipeline()
        const { entry } = yield* upload(h, user.id, "wav")
        // the cleanup keeps failing (in-process retries, then durable `retrying`)…
        yield* eventually(h.journal.getEntry(user.id, entry.id).pipe(
          Effect.map((d) => d.cleanup !== null && d.cleanup.status === "retrying" ? d : undefined)
        ))
        // …until Ollama is back
        yield* Effect.promise(() => h.ollama.up())
        const done = yield* settled(h, user.id, entry.id)
        expect(done.cleanup!.status).toBe("completed")
        expect(done.cleanup!.attempts).toBeGreaterThan(1)
        expect(done.notionSync!.status).toBe("success")
        for (const table of ["transcriptions", "cleaned_entries", "deliveries"] as const) {
          expect((yield* statusCounts(h.sql, table)).failed).toBeUndefined()
        }
      }))

    it.scopedLive("a Notion 429 storm: completes, waiting as long as Retry-After says", () =>
      Effect.gen(function*() {
        const h = yield* make({ kind, instantTranscription: true })
        const { user } = yield* h.journal.createUser("u")
        h.notion.failNext({ kind: "status", status: 429, headers: { "retry-after": "1" }, body: { object: "error", status: 429, code: "rate_limited", message: "slow down" } }, 3)
        yield* h.startPipeline()
        const { entry } = yield* upload(h, user.id, "wav")
        const done = yield* settled(h, user.id, entry.id)
        expect(done.notionSync!.status).toBe("success")
        expect(h.notion.pages().length).toBe(1)
        // 3 refused + the successful calls; the retries came no sooner than Retry-After (a lower bound: never flaky)
        const times = h.notion.requests.map((r) => r.at)
        for (let i = 1; i <= 3; i++) expect(times[i]! - times[i - 1]!).toBeGreaterThanOrEqual(950)
      }))

    it.scopedLive("Notion 401: the sync fails after one attempt with the reason stored; the rest of the entry is fine", () =>
      Effect.gen(function*() {
        const h = yield* make({ kind, instantTranscription: true })
        const { user } = yield* h.journal.createUser("u")
        h.notion.failNext({ kind: "status", status: 401, body: { object: "error", status: 401, code: "unauthorized", message: "API token is invalid." } }, 1)
        yield* h.startPipeline()
        const { entry } = yield* upload(h, user.id, "wav")
        const done = yield* settled(h, user.id, entry.id)
        expect(done.notionSync!.status).toBe("failed")
        expect(done.notionSync!.attempts).toBe(1)
        expect(done.notionSync!.lastError).toContain("401")
        expect(done.notionSync!.lastError).not.toContain(h.notion.token)
        expect(h.notion.requests.length).toBe(1)
        expect(done.cleanup!.status).toBe("completed")
        // a person fixes the token and retries: one page
        const retried = yield* h.journal.retryNotionSync(user.id, done.notionSync!.id)
        expect(retried.status).toBe("pending")
        yield* eventually(h.journal.getEntry(user.id, entry.id).pipe(Effect.map((d) => d.notionSync?.status === "success" ? d : undefined)))
        expect(h.notion.pages().length).toBe(1)
      }))

    it.scopedLive("a missing Ollama model: the cleanup fails after one attempt and says `ollama pull`", () =>
      Effect.gen(function*() {
        const h = yield* make({ kind, instantTranscription: true })
        const { user } = yield* h.journal.createUser("u")
        h.ollama.failNext({ kind: "status", status: 404, body: { error: "model 'llama3.2' not found" } })
        yield* h.startPipeline()
        const { entry } = yield* upload(h, user.id, "wav")
        const done = yield* settled(h, user.id, entry.id, "cleanup")
        expect(done.cleanup!.status).toBe("failed")
        expect(done.cleanup!.attempts).toBe(1)
        expect(done.cleanup!.lastError).toContain("ollama pull llama3.2")
        expect(h.ollama.requests.length).toBe(1)
        expect(done.notionSync).toBeNull()
      }))

    it.scopedLive("shutdown during a slow stage: no row left processing; the next runtime finishes it", () =>
      Effect.gen(function*() {
        const h = yield* make({ kind, instantTranscription: true })
        const { user } = yield* h.journal.createUser("u")
        h.ollama.failNext({ kind: "hang" })
        const first = yield* h.startPipeline({ ...fastPipeline, shutdownGrace: "300 millis", lease: "1 minute" })
        const { entry } = yield* upload(h, user.id, "wav")
        yield* eventually(h.journal.getEntry(user.id, entry.id).pipe(
          Effect.map((d) => d.cleanup?.status === "processing" ? d : undefined)
        ))
        yield* h.stopPipeline(first)
        const after = yield* h.journal.getEntry(user.id, entry.id)
        expect(after.cleanup!.status).toBe("pending")
        expect(after.cleanup!.leaseOwner).toBeNull()
        expect(after.cleanup!.attempts).toBe(0) // an interrupted attempt does not count
        for (const table of ["transcriptions", "cleaned_entries", "deliveries"] as const) {
          expect((yield* statusCounts(h.sql, table)).processing).toBeUndefined()
        }
        // a lease of one minute would still block it: release made it claimable at once
        yield* h.startPipeline({ ...fastPipeline, lease: "1 minute" })
        const done = yield* settled(h, user.id, entry.id)
        expect(done.notionSync!.status).toBe("success")
      }))

    it.scopedLive("re-running a stage: a new transcription made primary replaces the old one atomically", () =>
      Effect.gen(function*() {
        const h = yield* make({ kind, notion: false, instantTranscription: true })
        const { user } = yield* h.journal.createUser("u")
        yield* h.startPipeline()
        const { entry } = yield* upload(h, user.id, "wav")
        yield* settled(h, user.id, entry.id, "cleanup")
        const rerun = yield* h.journal.retranscribe(user.id, entry.id, { makePrimary: true })
        yield* eventually(h.journal.listTranscriptions(user.id, entry.id).pipe(
          Effect.map((ts) => ts.find((t) => t.id === rerun.id && t.status === "completed"))
        ))
        const ts = yield* h.journal.listTranscriptions(user.id, entry.id)
        expect(ts.filter((t) => t.isPrimary).map((t) => t.id)).toEqual([rerun.id])
        // its cleanup follows and becomes the primary cleanup
        const cleanups = yield* eventually(h.journal.listCleanups(user.id, entry.id).pipe(
          Effect.map((cs) => cs.length === 2 && cs.every((c) => c.status === "completed") ? cs : undefined)
        ))
        expect(cleanups.filter((c) => c.isPrimary).map((c) => c.transcriptionId)).toEqual([rerun.id])
        expect((yield* Effect.flip(h.journal.syncToNotion(user.id, entry.id)))._tag).toBe("InvalidState")
      }))
  })
}
