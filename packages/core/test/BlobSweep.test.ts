/**
 * The audio directory's garbage: `.partial-*` files of dead uploads and
 * complete blobs no entry points to. Only what is old enough to be
 * certainly dead goes; everything a live upload or an entry may still need
 * stays. Real files, a real SQLite store.
 */
import { describe, expect, it } from "@effect/vitest"
import { SqliteJournalStore } from "@voice-journal/adapter-sqlite"
import { Context, Effect, Layer, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as BlobStore from "../src/BlobStore.js"
import * as BlobSweeper from "../src/BlobSweeper.js"
import * as JournalStore from "../src/JournalStore.js"

const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "vj-blob-sweep-"))),
  (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
)

/** Sets a file's mtime (and atime) `hours` into the past. */
const age = (file: string, hours: number) => {
  const then = new Date(Date.now() - hours * 3_600_000)
  fs.utimesSync(file, then, then)
}

const bytes = (n: number) => new Uint8Array(n).map((_, i) => i % 251)

describe("BlobStore start-up", () => {
  it.scopedLive("removes only stale partial files: a fresh one may be another node's live upload", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const fresh = path.join(dir, `.partial-${BlobStore.makeKey()}-aaaaaaaa`)
      const stale = path.join(dir, `.partial-${BlobStore.makeKey()}-bbbbbbbb`)
      fs.writeFileSync(fresh, bytes(100))
      fs.writeFileSync(stale, bytes(100))
      age(stale, 2)
      yield* BlobStore.layerFileSystem({ directory: dir }).pipe(Layer.build)
      expect(fs.existsSync(fresh)).toBe(true)
      expect(fs.existsSync(stale)).toBe(false)
    }))
})

describe("BlobSweeper", () => {
  it.scopedLive("removes old blobs no entry points to; keeps fresh ones, referenced ones and partials", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const audio = path.join(dir, "audio")
      const ctx = yield* Layer.build(Layer.merge(
        BlobStore.layerFileSystem({ directory: audio }),
        SqliteJournalStore.layer({ filename: path.join(dir, "journal.db") })
      ))
      const blobs = Context.get(ctx, BlobStore.BlobStore)
      const store = Context.get(ctx, JournalStore.JournalStore)
      const [referenced, oldOrphan, freshOrphan] = [BlobStore.makeKey(), BlobStore.makeKey(), BlobStore.makeKey()]
      for (const key of [referenced, oldOrphan, freshOrphan]) yield* blobs.write(key, Stream.make(bytes(1000)))
      const user = yield* store.createUser("u")
      yield* store.createEntry({
        userId: user.id,
        blobKey: referenced,
        originalFilename: null,
        mimeType: "audio/wav",
        sizeBytes: 1000,
        sha256: "0".repeat(64)
      })
      // a partial being written right now (another node's upload); not a blob, never listed
      const partial = path.join(audio, `.partial-${BlobStore.makeKey()}-cccccccc`)
      fs.writeFileSync(partial, bytes(10))
      age(path.join(audio, referenced), 2)
      age(path.join(audio, oldOrphan), 2)

      const listed = yield* Stream.runCollect(blobs.list)
      expect([...listed].map((b) => b.key).sort()).toEqual([referenced, oldOrphan, freshOrphan].sort())

      const result = yield* BlobSweeper.sweep({ minAge: "1 hour" }).pipe(Effect.provide(ctx))
      expect(result.removed).toEqual([oldOrphan])
      expect(fs.existsSync(path.join(audio, oldOrphan))).toBe(false)
      expect(fs.existsSync(path.join(audio, referenced))).toBe(true)
      expect(fs.existsSync(path.join(audio, freshOrphan))).toBe(true)
      expect(fs.existsSync(partial)).toBe(true)
    }))

  it.scopedLive("existingBlobKeys answers in batches, whatever the number of keys", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const ctx = yield* Layer.build(SqliteJournalStore.layer({ filename: path.join(dir, "journal.db") }))
      const store = Context.get(ctx, JournalStore.JournalStore)
      const user = yield* store.createUser("u")
      const keys = Array.from({ length: 1200 }, () => BlobStore.makeKey())
      for (const key of [keys[3]!, keys[999]!, keys[1100]!]) {
        yield* store.createEntry({ userId: user.id, blobKey: key, originalFilename: null, mimeType: "audio/wav", sizeBytes: 1, sha256: "0".repeat(64) })
      }
      expect([...(yield* store.existingBlobKeys(keys))].sort()).toEqual([keys[3]!, keys[999]!, keys[1100]!].sort())
      expect((yield* store.existingBlobKeys([])).size).toBe(0)
    }))
})
