/**
 * A `201` means the audio survives a machine crash: the blob's bytes are
 * fsynced before the temp file is renamed into place, the directory (which
 * holds the new name) is fsynced after, and only then is the entry row
 * written. The duration probe reads the complete temp file while it is
 * fsynced, so a refused recording is never renamed into place. Proved with
 * the real Node file system wrapped so it records the operations (an fsync
 * with the size the file has by then), the real ffprobe and a real SQLite
 * store, wrapped so they record the probe and the insert.
 */
import { FileSystem } from "@effect/platform"
import { NodeContext, NodeFileSystem } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { SqliteJournalStore } from "@voice-journal/adapter-sqlite"
import { Effect, Layer, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as AudioProbe from "../src/AudioProbe.js"
import * as BlobStore from "../src/BlobStore.js"
import * as JournalStore from "../src/JournalStore.js"
import * as VoiceJournal from "../src/VoiceJournal.js"
import * as WorkSignal from "../src/WorkSignal.js"
import { audioBytes } from "./support/Audio.js"

const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "vj-durable-"))),
  (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
)

/** What a path is, for the log: the audio directory, an in-progress temp file, a blob, or something else. */
const labelOf = (directory: string) => (p: string) =>
  path.resolve(p) === directory ? "dir" : path.basename(p).startsWith(".partial-") ? "temp" : path.dirname(path.resolve(p)) === directory ? "blob" : p

/** The real Node file system, recording every write, fsync and rename (after it succeeded). */
const recordingFileSystem = (directory: string, log: Array<string>) =>
  Layer.effect(
    FileSystem.FileSystem,
    Effect.gen(function*() {
      const real = yield* FileSystem.FileSystem
      const label = labelOf(directory)
      const record = (op: string) => Effect.sync(() => void log.push(op))
      const wrap = (file: FileSystem.File, name: string): FileSystem.File => ({
        [FileSystem.FileTypeId]: FileSystem.FileTypeId,
        fd: file.fd,
        get stat() {
          return file.stat
        },
        seek: (offset, from) => file.seek(offset, from),
        // how many bytes the file holds when it is fsynced: all of them must be written by then
        get sync() {
          return Effect.flatMap(file.stat, (info) =>
            Effect.zipRight(file.sync, record(name === "dir" ? "fsync dir" : `fsync ${name} (${info.size} bytes)`)))
        },
        read: (buffer) => file.read(buffer),
        readAlloc: (size) => file.readAlloc(size),
        truncate: (length) => file.truncate(length),
        write: (buffer) => Effect.tap(file.write(buffer), () => record(`write ${name}`)),
        writeAll: (buffer) => Effect.zipRight(file.writeAll(buffer), record(`write ${name}`))
      })
      return FileSystem.make({
        ...real,
        open: (p, options) => Effect.map(real.open(p, options), (file) => wrap(file, label(p))),
        rename: (from, to) => Effect.zipRight(real.rename(from, to), record(`rename ${label(from)} → ${label(to)}`)),
        writeFile: (p, data, options) => Effect.zipRight(real.writeFile(p, data, options), record(`writeFile ${label(p)}`))
      })
    })
  ).pipe(Layer.provide(NodeFileSystem.layer))

/** The SQLite store, recording when an entry row is written. */
const recordingStore = (filename: string, log: Array<string>) =>
  Layer.effect(
    JournalStore.JournalStore,
    Effect.map(JournalStore.JournalStore, (store) => ({
      ...store,
      createEntry: (input: Parameters<typeof store.createEntry>[0]) =>
        Effect.zipRight(Effect.sync(() => void log.push("insert entry row")), store.createEntry(input))
    }))
  ).pipe(Layer.provide(SqliteJournalStore.layer({ filename })))

/** Consecutive repeats of one operation (a write per chunk) as one. */
const collapse = (log: ReadonlyArray<string>) => log.filter((op, i) => op !== log[i - 1])

/** The real ffprobe, recording what it probed: the file (temp or blob), its size then, and the duration found. */
const recordingProbe = (directory: string, log: Array<string>) =>
  Layer.effect(
    AudioProbe.AudioProbe,
    Effect.map(AudioProbe.makeFfprobe, (real) => ({
      probe: (p: string) =>
        Effect.tap(real.probe(p), (result) =>
          Effect.sync(() => void log.push(`probe ${labelOf(directory)(p)} (${fs.statSync(p).size} bytes, ${result.durationSeconds} s)`)))
    }))
  ).pipe(Layer.provide(NodeContext.layer))

/** A journal on the recording file system and store (and the recording probe, if asked for), its log and audio directory. */
const recordingJournal = (options: { readonly probe?: boolean; readonly maxAudioSeconds?: number } = {}) =>
  Effect.gen(function*() {
    const dir = yield* tempDir
    const audio = path.join(dir, "audio")
    const log: Array<string> = []
    const context = yield* Layer.build(Layer.mergeAll(
      Layer.effect(BlobStore.BlobStore, BlobStore.makeFileSystem({ directory: audio })).pipe(
        Layer.provide(recordingFileSystem(path.resolve(audio), log))
      ),
      recordingStore(path.join(dir, "journal.db"), log),
      WorkSignal.layer,
      options.probe === true ? recordingProbe(path.resolve(audio), log) : Layer.empty
    ))
    const journal = yield* VoiceJournal.make({ maxUploadBytes: 10_000_000, ...options }).pipe(Effect.provide(context))
    const { user } = yield* journal.createUser("u")
    const bytes = audioBytes("wav")
    const body = Stream.fromIterable(Array.from({ length: Math.ceil(bytes.byteLength / 1000) }, (_, i) => bytes.subarray(i * 1000, (i + 1) * 1000)))
    return { audio, log, bytes, ingest: journal.ingest(user.id, body), journal, user }
  })

describe("durable writes", () => {
  it.scopedLive("the blob is fsynced, renamed, its directory fsynced, and only then the entry row written", () =>
    Effect.gen(function*() {
      const { audio, bytes, ingest, log } = yield* recordingJournal()
      const details = yield* ingest
      log.push("ingest returned")

      expect(collapse(log)).toEqual([
        `fsync temp (${bytes.byteLength} bytes)`,
        "rename temp → blob",
        "fsync dir",
        "insert entry row",
        "ingest returned"
      ])
      expect(new Uint8Array(fs.readFileSync(path.join(audio, details.entry.blobKey)))).toEqual(bytes)
      expect(fs.readdirSync(audio)).toEqual([details.entry.blobKey])
    }))

  it.scopedLive("the duration probe reads the complete temp file alongside its fsync, before the rename; a refused recording leaves no file", () =>
    Effect.gen(function*() {
      const { audio, bytes, ingest, log } = yield* recordingJournal({ probe: true })
      const details = yield* ingest
      const [first, second, ...rest] = collapse(log)
      // the probe and the fsync run at once: either may finish first
      expect([first, second].map((op) => op?.replace(/, [\d.]+ s\)$/, ")")).sort()).toEqual([
        `fsync temp (${bytes.byteLength} bytes)`,
        `probe temp (${bytes.byteLength} bytes)`
      ])
      expect(rest).toEqual(["rename temp → blob", "fsync dir", "insert entry row"])
      expect(fs.readdirSync(audio)).toEqual([details.entry.blobKey])

      const refused = yield* recordingJournal({ probe: true, maxAudioSeconds: 0.1 })
      const error = yield* Effect.flip(refused.ingest)
      expect(error._tag).toBe("AudioTooLong")
      expect(refused.log.some((op) => op.startsWith("probe temp"))).toBe(true)
      expect(refused.log.filter((op) => op.startsWith("rename") || op.startsWith("insert"))).toEqual([])
      expect(fs.readdirSync(refused.audio)).toEqual([])
      expect((yield* refused.journal.listEntries(refused.user.id, { limit: 10, offset: 0 })).total).toBe(0)
    }))
})
