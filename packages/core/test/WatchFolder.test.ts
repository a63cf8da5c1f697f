/**
 * The watch folder on the real parts: a SQLite file, the filesystem blob
 * store, the real streaming ingest, real recordings. Nothing is timed: each
 * test waits for a condition (events seen, entries stored) with a generous
 * timeout, and "not ingested early" is checked by the stored entry being
 * the complete file.
 */
import { describe, expect, it } from "@effect/vitest"
import { SqliteJournalStore } from "@voice-journal/adapter-sqlite"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as BlobStore from "../src/BlobStore.js"
import type { UserId } from "../src/Domain.js"
import * as JournalStore from "../src/JournalStore.js"
import * as VoiceJournal from "../src/VoiceJournal.js"
import * as WatchFolder from "../src/WatchFolder.js"
import * as WorkSignal from "../src/WorkSignal.js"
import { audioBytes, pngBytes } from "./support/Audio.js"

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex")

interface Setup {
  readonly root: string
  readonly watched: string
  readonly userId: UserId
  /** Builds the journal on the same database and audio folder (a new one each time: a "restart"). */
  readonly journal: Layer.Layer<VoiceJournal.VoiceJournal | JournalStore.JournalStore, unknown>
}

const setup = Effect.gen(function*() {
  const root = yield* Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "vj-watch-"))),
    (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
  )
  const watched = path.join(root, "inbox")
  fs.mkdirSync(watched)
  const journal = VoiceJournal.layer().pipe(Layer.provideMerge(Layer.mergeAll(
    SqliteJournalStore.layer({ filename: path.join(root, "journal.db") }),
    BlobStore.layerFileSystem({ directory: path.join(root, "audio") }),
    WorkSignal.layer
  )), Layer.fresh)
  const user = yield* Effect.flatMap(VoiceJournal.VoiceJournal, (j) => j.createUser("watcher")).pipe(
    Effect.provide(journal),
    Effect.orDie
  )
  return { root, watched, userId: user.user.id, journal } satisfies Setup
})

/** A running watcher (stopped when `scope` closes) and what it reported. */
const watch = (s: Setup, scope: Scope.Scope, options: Partial<WatchFolder.WatchFolderConfig> = {}) =>
  Effect.gen(function*() {
    const events: Array<WatchFolder.WatchEvent> = []
    const ctx = yield* Layer.buildWithScope(s.journal, scope).pipe(Effect.orDie)
    yield* WatchFolder.start({
      directory: s.watched,
      userId: s.userId,
      settle: "300 millis",
      interval: "50 millis",
      onEvent: (e) => Effect.sync(() => events.push(e)),
      ...options
    }).pipe(Effect.provide(ctx), Scope.extend(scope), Effect.orDie)
    const journal = Context.get(ctx, VoiceJournal.VoiceJournal)
    const entries = journal.listEntries(s.userId, { limit: 100, offset: 0 }).pipe(Effect.orDie)
    const of = (tag: WatchFolder.WatchEvent["_tag"]) => events.filter((e) => e._tag === tag)
    return { events, of, entries, journal }
  })

/** Waits (polling) until `check` holds; fails after a generous minute. */
const until = (check: () => Effect.Effect<boolean> | boolean) =>
  Effect.gen(function*() {
    const deadline = Date.now() + 60_000
    while (Date.now() < deadline) {
      const r = check()
      if (typeof r === "boolean" ? r : yield* r) return
      yield* Effect.sleep("50 millis")
    }
    return yield* Effect.dieMessage("condition not met within 60 s")
  })

describe("WatchFolder", () => {
  it.scopedLive("a file copied in slowly is ingested only once complete: the entry is the whole file", () =>
    Effect.gen(function*() {
      const s = yield* setup
      // a settle time far above the pause between the halves (even on a loaded machine), so the
      // partial file is never "stable"; the watcher is in this process, so each write is seen whole
      const w = yield* watch(s, yield* Effect.scope, { settle: "3 seconds" })
      const bytes = audioBytes("m4a")
      const file = path.join(s.watched, "memo.m4a")
      fs.writeFileSync(file, bytes.subarray(0, Math.floor(bytes.length / 2)))
      const scans = w.of("Scanned").length
      yield* until(() => w.of("Scanned").length >= scans + 2) // the half file was seen by a scan
      fs.appendFileSync(file, bytes.subarray(Math.floor(bytes.length / 2)))
      yield* until(() => w.entries.pipe(Effect.map((p) => p.total === 1)))
      const [summary] = (yield* w.entries).items
      const entry = (yield* w.journal.getEntry(s.userId, summary!.id).pipe(Effect.orDie)).entry
      expect(entry.sizeBytes).toBe(bytes.length)
      expect(entry.sha256).toBe(sha256(bytes))
      expect(entry.originalFilename).toBe("memo.m4a")
      expect(entry.mimeType).toBe("audio/mp4")
    }))

  it.scopedLive("a duplicate copy under another name is one entry (dropped together or later)", () =>
    Effect.gen(function*() {
      const s = yield* setup
      const w = yield* watch(s, yield* Effect.scope)
      const bytes = audioBytes("mp3")
      fs.writeFileSync(path.join(s.watched, "a.mp3"), bytes)
      fs.writeFileSync(path.join(s.watched, "copy of a.mp3"), bytes)
      yield* until(() => w.of("Ingested").length + w.of("AlreadyIngested").length === 2)
      fs.writeFileSync(path.join(s.watched, "again.bin"), bytes)
      yield* until(() => w.of("AlreadyIngested").length === 2)
      expect(w.of("Ingested")).toHaveLength(1)
      expect((yield* w.entries).total).toBe(1)
    }))

  it.scopedLive("a PNG named .m4a and an empty file are skipped with the reason, reported once, not on every scan", () =>
    Effect.gen(function*() {
      const s = yield* setup
      const w = yield* watch(s, yield* Effect.scope)
      fs.writeFileSync(path.join(s.watched, "photo.m4a"), pngBytes())
      fs.writeFileSync(path.join(s.watched, "empty.m4a"), new Uint8Array(0))
      yield* until(() => w.of("Skipped").length === 2)
      const scans = w.of("Scanned").length
      yield* until(() => w.of("Scanned").length >= scans + 10)
      const skipped = w.of("Skipped") as Array<Extract<WatchFolder.WatchEvent, { _tag: "Skipped" }>>
      expect(skipped).toHaveLength(2)
      const reason = (name: string) => skipped.find((e) => path.basename(e.file) === name)?.reason
      expect(reason("photo.m4a")).toMatch(/image\/png/)
      expect(reason("empty.m4a")).toMatch(/empty/)
      expect((yield* w.entries).total).toBe(0)
      // skipped files are the user's: left where they were, unchanged
      expect(new Uint8Array(fs.readFileSync(path.join(s.watched, "photo.m4a")))).toEqual(pngBytes())
    }))

  it.scopedLive("after a restart (new watcher, same folder and database) nothing is ingested again", () =>
    Effect.gen(function*() {
      const s = yield* setup
      fs.writeFileSync(path.join(s.watched, "one.wav"), audioBytes("wav"))
      fs.writeFileSync(path.join(s.watched, "two.flac"), audioBytes("flac"))
      const first = yield* Scope.make()
      const w1 = yield* watch(s, first)
      yield* until(() => w1.of("Ingested").length === 2)
      yield* Scope.close(first, Exit.void)
      const w2 = yield* watch(s, yield* Effect.scope)
      yield* until(() => w2.of("AlreadyIngested").length === 2)
      expect(w2.of("Ingested")).toHaveLength(0)
      expect((yield* w2.entries).total).toBe(2)
    }))

  it.scopedLive("several files dropped at once are all ingested, and by default left untouched", () =>
    Effect.gen(function*() {
      const s = yield* setup
      const formats = ["wav", "mp3", "m4a", "ogg-opus", "flac", "webm-opus"] as const
      const files = formats.map((f) => ({ name: `note-${f}.audio`, bytes: audioBytes(f) }))
      const w = yield* watch(s, yield* Effect.scope, { concurrency: 2 })
      for (const f of files) fs.writeFileSync(path.join(s.watched, f.name), f.bytes)
      yield* until(() => w.entries.pipe(Effect.map((p) => p.total === files.length)))
      const stored = (yield* w.entries).items.map((e) => e.originalFilename).sort()
      expect(stored).toEqual(files.map((f) => f.name).sort())
      for (const f of files) expect(new Uint8Array(fs.readFileSync(path.join(s.watched, f.name)))).toEqual(f.bytes)
    }))

  it.scopedLive("moveTo: moves a file only after it is in the journal; a skipped file stays", () =>
    Effect.gen(function*() {
      const s = yield* setup
      const done = path.join(s.root, "done")
      const w = yield* watch(s, yield* Effect.scope, { moveTo: done })
      const bytes = audioBytes("ogg-opus")
      fs.writeFileSync(path.join(s.watched, "memo.ogg"), bytes)
      fs.writeFileSync(path.join(s.watched, "photo.m4a"), pngBytes())
      yield* until(() => w.of("Ingested").length === 1 && w.of("Skipped").length === 1)
      const ingested = w.of("Ingested")[0] as Extract<WatchFolder.WatchEvent, { _tag: "Ingested" }>
      expect(ingested.movedTo).toBe(path.join(done, "memo.ogg"))
      expect(new Uint8Array(fs.readFileSync(path.join(done, "memo.ogg")))).toEqual(bytes)
      expect(fs.readdirSync(s.watched)).toEqual(["photo.m4a"])
      const entry = (yield* w.journal.getEntry(s.userId, ingested.entryId).pipe(Effect.orDie)).entry
      expect(entry.sha256).toBe(sha256(bytes))
      // the same bytes again, with the first copy already moved: not a second entry, moved beside it
      fs.writeFileSync(path.join(s.watched, "memo.ogg"), bytes)
      yield* until(() => w.of("AlreadyIngested").length === 1)
      expect(fs.readdirSync(done).sort()).toEqual(["memo (2).ogg", "memo.ogg"])
      expect((yield* w.entries).total).toBe(1)
    }))

  it.scopedLive("an unknown user, a missing folder or moving into the watched folder fails at start with a clear message", () =>
    Effect.gen(function*() {
      const s = yield* setup
      const ctx = yield* Layer.build(s.journal).pipe(Effect.orDie)
      const unknownUser = yield* Effect.flip(
        WatchFolder.start({ directory: s.watched, userId: "no-such-user" as UserId }).pipe(Effect.provide(ctx))
      )
      expect(unknownUser.message).toMatch(/user no-such-user does not exist/)
      const missing = yield* Effect.flip(
        WatchFolder.start({ directory: path.join(s.root, "nowhere"), userId: s.userId }).pipe(Effect.provide(ctx))
      )
      expect(missing.message).toMatch(/nowhere/)
      const sameFolder = yield* Effect.flip(
        WatchFolder.start({ directory: s.watched, userId: s.userId, moveTo: s.watched }).pipe(Effect.provide(ctx))
      )
      expect(sameFolder.message).toMatch(/must not be the watch folder/)
    }))
})
