/**
 * The `BlobStore` conformance suite. Any blob store runs it against itself
 * (the filesystem store and the S3 adapter both do), so "implements the
 * port" means "passes this":
 *
 * ```ts
 * import { BlobStoreSuite } from "@voice-journal/core/testing"
 * BlobStoreSuite.run("my store", { freshStorage: … })
 * ```
 *
 * It checks what the rest of voice-journal relies on: uploads stream in (as
 * a `Stream`, or pushed by a producer such as the server's socket loop) and
 * the audio route streams (ranges of) blobs out without holding whole files;
 * `write`'s `inspect` sees the complete bytes in a local file before the
 * write returns, and a failing one fails it;
 * a failed, interrupted or killed write leaves nothing visible and, once the
 * store restarts, nothing at all; missing blobs and made-up keys are clear
 * errors; and the listing reports complete blobs with the time they were
 * stored, which the orphan sweep (`BlobSweeper`) decides by.
 *
 * It needs `vitest` and `@effect/vitest` (optional peer dependencies).
 *
 * @since 0.1.0
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Chunk, Context, Data, Deferred, type Duration, Effect, Exit, Fiber, Layer, Option, type Scope, Stream } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import { type BlobKey, type BlobProducer, BlobStore, type BlobStoreService, makeKey } from "./BlobStore.js"
import * as BlobSweeper from "./BlobSweeper.js"
import { JournalStore, type JournalStoreService } from "./JournalStore.js"

/**
 * One fresh, empty storage (a directory, a bucket prefix) for one test.
 * @since 0.1.0
 */
export interface Storage {
  /**
   * A new store instance on this storage, as a restart or another node
   * would open it (every build is a new instance). `staleAfter`: unfinished
   * writes older than this are removed at start-up.
   */
  readonly open: (options?: { readonly staleAfter?: Duration.DurationInput | undefined }) => Layer.Layer<BlobStore, unknown>
  /**
   * Everything the backend holds that is not a complete blob of this store:
   * unfinished writes (partial files, pending multipart uploads) and
   * anything outside the store's directory or prefix. Empty whenever the
   * store has left nothing behind.
   */
  readonly leftovers: Effect.Effect<ReadonlyArray<string>, unknown>
  /**
   * Starts another process that writes `key` from a body that never ends
   * and returns once it runs; `kill` SIGKILLs it (so does closing the
   * scope). Without it the SIGKILL test is not registered.
   */
  readonly writeInAnotherProcess?: ((key: BlobKey) => Effect.Effect<{ readonly kill: Effect.Effect<void> }, unknown, Scope.Scope>) | undefined
}

/**
 * How the suite reaches your storage.
 * @since 0.1.0
 */
export interface Harness {
  /** A fresh, empty storage, removed when the scope closes. */
  readonly freshStorage: Effect.Effect<Storage, unknown, Scope.Scope>
  /** Size of the blob that must stream without being held whole. Default 160 MiB. */
  readonly largeBytes?: number | undefined
  /**
   * The most its buffers may hold while that blob streams in or out
   * (default 64 MiB): what a store holds per upload, plus whatever else
   * lives in the test process (a loopback server's buffers).
   */
  readonly maxHeldBytes?: number | undefined
}

class BodyFailed extends Data.TaggedError("BodyFailed")<{}> {}

const MiB = 1024 * 1024

/** Deterministic pseudo-random bytes (a multiplicative hash of the index), so a shifted or reordered byte shows. */
const pattern = (size: number, seed = 1) => {
  const bytes = new Uint8Array(size)
  for (let i = 0; i < size; i++) bytes[i] = ((i + seed) * 2654435761) >>> 24
  return bytes
}

/** Splits bytes into chunks of `size`, as a socket would deliver them. */
const chunked = (bytes: Uint8Array, size: number) =>
  Stream.fromIterable(Array.from({ length: Math.ceil(bytes.byteLength / size) }, (_, i) => bytes.subarray(i * size, (i + 1) * size)))

/**
 * `bytes` pushed into the sink in slices of `size` from event-loop callbacks
 * (as a socket's `data` events bring them), held back whenever the sink
 * answers `false` until it calls back; then `end` (a failure, or nothing).
 */
const pushed = <E = never>(bytes: Uint8Array, size: number, end: Effect.Effect<void, E> = Effect.void): BlobProducer<E, never> => (sink) =>
  Effect.zipRight(
    Effect.async<void>((resume) => {
      let offset = 0
      let stopped = false
      let tick: ReturnType<typeof setImmediate> | undefined
      const later = () => {
        if (!stopped) tick = setImmediate(next)
      }
      const next = () => {
        for (let slices = 0; offset < bytes.byteLength && slices < 8; slices++) {
          const slice = bytes.subarray(offset, offset + size)
          offset += slice.byteLength
          if (!sink.write(slice)) return sink.drained(later)
        }
        if (offset < bytes.byteLength) return later()
        resume(Effect.void)
      }
      later()
      return Effect.sync(() => {
        stopped = true
        clearImmediate(tick)
      })
    }),
    end
  )

const collect = (stream: Stream.Stream<Uint8Array, unknown>) =>
  Effect.map(Stream.runCollect(stream), (chunks) => Buffer.concat(Chunk.toReadonlyArray(chunks)))

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex")

/** A full garbage collection, so that what is measured after it is what something still holds. */
const gc: () => void = (() => {
  v8.setFlagsFromString("--expose-gc")
  return vm.runInNewContext("gc") as () => void
})()

/** Bytes in ArrayBuffers still reachable (after a full collection). */
const liveBufferBytes = () => {
  gc()
  return process.memoryUsage().arrayBuffers
}

const bad = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.map(Effect.exit(self), (exit) => {
    expect(Exit.isFailure(exit)).toBe(true)
    if (Exit.isFailure(exit)) {
      const failure = Option.getOrUndefined(Cause.failureOption(exit.cause))
      expect((failure as { _tag?: string } | undefined)?._tag, Cause.pretty(exit.cause)).toBe("BlobStoreError")
    }
  })

/**
 * Starts `node <args>` (e.g. `--import tsx writer.ts …`, a script that writes one
 * blob from a body that never ends; it must not import this module, which needs vitest) for {@link Storage.writeInAnotherProcess}; `kill`
 * SIGKILLs it and waits until it is gone, as does closing the scope.
 * @since 0.1.0
 */
export const spawnWriter = (args: ReadonlyArray<string>, cwd: string) =>
  Effect.acquireRelease(
    Effect.sync(() => spawn(process.execPath, [...args], { cwd, stdio: ["ignore", "ignore", "inherit"] })),
    (child) => kill(child)
  ).pipe(Effect.map((child) => ({ kill: kill(child) })))

const kill = (child: ChildProcess) =>
  Effect.async<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    child.once("exit", () => resume(Effect.void))
    child.kill("SIGKILL")
  })

/**
 * Registers the suite under `name`.
 * @since 0.1.0
 */
export const run = (name: string, harness: Harness): void => {
  const largeBytes = harness.largeBytes ?? 160 * MiB
  const open = (storage: Storage, options?: { readonly staleAfter?: Duration.DurationInput | undefined }) =>
    Layer.build(storage.open(options)).pipe(Effect.map((ctx): BlobStoreService => Context.get(ctx, BlobStore)), Effect.orDie)
  const withStore = <A, E>(f: (blobs: BlobStoreService, storage: Storage) => Effect.Effect<A, E, Scope.Scope>) =>
    Effect.gen(function*() {
      const storage = yield* Effect.orDie(harness.freshStorage)
      return yield* f(yield* open(storage), storage)
    })
  const leftovers = (storage: Storage) => Effect.orDie(storage.leftovers)
  const listKeys = (blobs: BlobStoreService) => Effect.map(Stream.runCollect(blobs.list), (c) => Chunk.toReadonlyArray(c).map((b) => b.key).sort())
  /** Until the backend holds something of an unfinished write (its bytes have reached it). */
  const untilLeftovers = (storage: Storage) =>
    Effect.gen(function*() {
      // generous: a writer process first has to start (slow on a busy machine)
      for (const until = Date.now() + 90_000; Date.now() < until;) {
        if ((yield* leftovers(storage)).length > 0) return
        yield* Effect.sleep("20 millis")
      }
      return yield* Effect.dieMessage("the unfinished write never reached the backend")
    })

  describe(`BlobStore conformance: ${name}`, () => {
    it.scopedLive("write streams bytes in and read streams the same bytes out; size, stat and exists agree", () =>
      withStore((blobs, storage) =>
        Effect.gen(function*() {
          // small and odd-sized chunks, and a blob larger than one multipart part
          for (const [size, chunk] of [[300_001, 7_001], [12 * MiB + 17, 64 * 1024]] as const) {
            const key = makeKey()
            const bytes = pattern(size)
            const written = yield* blobs.write(key, chunked(bytes, chunk))
            expect(written.sizeBytes).toBe(size)
            expect(yield* blobs.stat(key)).toEqual(Option.some({ sizeBytes: size }))
            expect(yield* blobs.exists(key)).toBe(true)
            expect(sha256(yield* collect(blobs.read(key)))).toBe(sha256(bytes))
          }
          expect(yield* leftovers(storage)).toEqual([])
        })
      ), { timeout: 120_000 })

    it.scopedLive("a producer body (bytes pushed from callbacks, held back while the store is full) is stored byte for byte; one that fails leaves nothing", () =>
      withStore((blobs, storage) =>
        Effect.gen(function*() {
          for (const [size, chunk] of [[300_001, 7_001], [12 * MiB + 17, 64 * 1024]] as const) {
            const key = makeKey()
            const bytes = pattern(size, 3)
            expect((yield* blobs.write(key, pushed(bytes, chunk))).sizeBytes).toBe(size)
            expect(sha256(yield* collect(blobs.read(key)))).toBe(sha256(bytes))
          }
          const key = makeKey()
          const error = yield* Effect.flip(blobs.write(key, pushed(pattern(7 * MiB), 64 * 1024, Effect.fail(new BodyFailed()))))
          expect(error._tag).toBe("BodyFailed")
          expect(yield* blobs.exists(key)).toBe(false)
          expect(yield* leftovers(storage)).toEqual([])
        })
      ), { timeout: 120_000 })

    it.scopedLive("an empty blob is a blob of 0 bytes", () =>
      withStore((blobs) =>
        Effect.gen(function*() {
          const key = makeKey()
          expect(yield* blobs.write(key, Stream.empty)).toEqual({ sizeBytes: 0 })
          expect(yield* blobs.stat(key)).toEqual(Option.some({ sizeBytes: 0 }))
          expect((yield* collect(blobs.read(key))).byteLength).toBe(0)
        })
      ))

    it.scopedLive("ranged read: exactly `length` bytes from `offset` (what the audio route's Range answers with)", () =>
      withStore((blobs) =>
        Effect.gen(function*() {
          const key = makeKey()
          const size = 1 * MiB + 3
          const bytes = pattern(size, 7)
          yield* blobs.write(key, chunked(bytes, 50_000))
          const ranges = [
            { offset: 0, length: 1 },
            { offset: 0, length: size },
            { offset: size - 1, length: 1 },
            { offset: 1000, length: 5000 },
            { offset: 65_530, length: 70_000 }, // across a 64 KiB boundary
            { offset: size - 500_000, length: 500_000 }
          ]
          for (const range of ranges) {
            const got = yield* collect(blobs.read(key, range))
            expect(got.byteLength, JSON.stringify(range)).toBe(range.length)
            expect(sha256(got), JSON.stringify(range)).toBe(sha256(bytes.subarray(range.offset, range.offset + range.length)))
          }
        })
      ))

    it.scopedLive("a missing blob: stat is None, exists false, read and localPath fail with BlobStoreError, remove succeeds", () =>
      withStore((blobs) =>
        Effect.gen(function*() {
          const key = makeKey()
          expect(Option.isNone(yield* blobs.stat(key))).toBe(true)
          expect(yield* blobs.exists(key)).toBe(false)
          yield* bad(collect(blobs.read(key)))
          yield* bad(collect(blobs.read(key, { offset: 0, length: 10 })))
          yield* bad(blobs.localPath(key))
          yield* blobs.remove(key)
        })
      ))

    it.scopedLive("remove deletes the blob (twice is fine) and the listing no longer has it", () =>
      withStore((blobs) =>
        Effect.gen(function*() {
          const [kept, removed] = [makeKey(), makeKey()]
          yield* blobs.write(kept, Stream.make(pattern(100)))
          yield* blobs.write(removed, Stream.make(pattern(100)))
          yield* blobs.remove(removed)
          yield* blobs.remove(removed)
          expect(yield* blobs.exists(removed)).toBe(false)
          expect(Option.isNone(yield* blobs.stat(removed))).toBe(true)
          yield* bad(collect(blobs.read(removed)))
          expect(yield* listKeys(blobs)).toEqual([kept])
        })
      ))

    it.scopedLive("localPath: a local file with the blob's bytes, for as long as the scope lives", () =>
      withStore((blobs) =>
        Effect.gen(function*() {
          const key = makeKey()
          const bytes = pattern(200_000, 3)
          yield* blobs.write(key, chunked(bytes, 16_384))
          const file = yield* Effect.scoped(Effect.map(blobs.localPath(key), (p) => {
            expect(sha256(fs.readFileSync(p))).toBe(sha256(bytes))
            return p
          }))
          expect(typeof file).toBe("string")
        })
      ))

    it.scopedLive("list: every complete blob once, with when it was stored; never a write in progress", () =>
      withStore((blobs, storage) =>
        Effect.gen(function*() {
          const before = Date.now()
          const keys = Array.from({ length: 5 }, makeKey)
          for (const key of keys) yield* blobs.write(key, Stream.make(pattern(1000)))
          const after = Date.now()
          const listed = Chunk.toReadonlyArray(yield* Stream.runCollect(blobs.list))
          expect(listed.map((b) => b.key).sort()).toEqual([...keys].sort())
          for (const blob of listed) {
            // object stores keep whole seconds; allow one either side
            expect(blob.modifiedAt.getTime()).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000 - 1000)
            expect(blob.modifiedAt.getTime()).toBeLessThanOrEqual(after + 1000)
          }
          // an upload in progress (past one multipart part) is not a blob yet
          const inProgress = makeKey()
          const fiber = yield* Effect.fork(blobs.write(inProgress, Stream.concat(chunked(pattern(6 * MiB), 64 * 1024), Stream.never)))
          yield* untilLeftovers(storage)
          expect(yield* listKeys(blobs)).toEqual([...keys].sort())
          expect(yield* blobs.exists(inProgress)).toBe(false)
          yield* Fiber.interrupt(fiber)
          expect(yield* leftovers(storage)).toEqual([])
        })
      ), { timeout: 120_000 })

    it.scopedLive("the orphan sweep by the listing: removes old blobs no entry points to; keeps referenced and young ones", () =>
      withStore((blobs) =>
        Effect.gen(function*() {
          const [referenced, orphanA, orphanB] = [makeKey(), makeKey(), makeKey()]
          for (const key of [referenced, orphanA, orphanB]) yield* blobs.write(key, Stream.make(pattern(500)))
          // the sweep asks the journal only which keys entries point to
          const journal = Layer.succeed(JournalStore, {
            existingBlobKeys: (keys: ReadonlyArray<string>) => Effect.succeed(new Set(keys.filter((k) => k === referenced)))
          } as unknown as JournalStoreService)
          const sweep = (minAge: Duration.DurationInput) =>
            BlobSweeper.sweep({ minAge, batchSize: 2 }).pipe(Effect.provide(journal), Effect.provideService(BlobStore, blobs))
          // just written: younger than an hour, so nothing goes (a stored time in the past would sweep them)
          expect((yield* sweep("1 hour")).removed).toEqual([])
          yield* Effect.sleep("20 millis")
          const result = yield* sweep(0)
          expect([...result.removed].sort()).toEqual([orphanA, orphanB].sort())
          expect(yield* listKeys(blobs)).toEqual([referenced])
        })
      ))

    it.scopedLive("inspect: runs on a local file holding every byte before the write returns; the blob is then stored", () =>
      withStore((blobs, storage) =>
        Effect.gen(function*() {
          for (const size of [5_000, 7 * MiB + 3]) {
            const key = makeKey()
            const bytes = pattern(size, 5)
            const seen: Array<string> = []
            const written = yield* blobs.write(key, chunked(bytes, 64 * 1024), {
              inspect: (p) => Effect.sync(() => void seen.push(sha256(fs.readFileSync(p))))
            })
            expect(written.sizeBytes).toBe(size)
            expect(seen, `${size} bytes`).toEqual([sha256(bytes)])
            expect(sha256(yield* collect(blobs.read(key)))).toBe(sha256(bytes))
          }
          expect(yield* leftovers(storage)).toEqual([])
        })
      ), { timeout: 120_000 })

    it.scopedLive("a failed body, or an inspect that fails, leaves nothing, and the write fails with that error", () =>
      withStore((blobs, storage) =>
        Effect.gen(function*() {
          const failing = {
            body: (key: BlobKey, size: number) =>
              blobs.write(key, Stream.concat(chunked(pattern(size), 64 * 1024), Stream.fail(new BodyFailed()))),
            inspect: (key: BlobKey, size: number) =>
              blobs.write(key, chunked(pattern(size), 64 * 1024), { inspect: () => Effect.fail(new BodyFailed()) })
          }
          for (const [what, write] of Object.entries(failing)) {
            for (const size of [10_000, 7 * MiB]) {
              const key = makeKey()
              const error = yield* Effect.flip(write(key, size))
              expect(error._tag, `${what} failing after ${size} bytes`).toBe("BodyFailed")
              expect(yield* blobs.exists(key)).toBe(false)
              expect(yield* leftovers(storage)).toEqual([])
            }
          }
          expect(yield* listKeys(blobs)).toEqual([])
        })
      ), { timeout: 60_000 })

    it.scopedLive("a write interrupted while inspecting leaves nothing once the interruption returns", () =>
      withStore((blobs, storage) =>
        Effect.gen(function*() {
          const key = makeKey()
          const inspecting = yield* Deferred.make<void>()
          const fiber = yield* Effect.fork(
            blobs.write(key, chunked(pattern(6 * MiB), 64 * 1024), { inspect: () => Effect.zipRight(Deferred.succeed(inspecting, undefined), Effect.never) })
          )
          yield* Deferred.await(inspecting)
          yield* Fiber.interrupt(fiber)
          expect(yield* leftovers(storage)).toEqual([])
          expect(yield* blobs.exists(key)).toBe(false)
          expect(yield* listKeys(blobs)).toEqual([])
        })
      ), { timeout: 60_000 })

    it.scopedLive("an interrupted write leaves nothing once the interruption returns", () =>
      withStore((blobs, storage) =>
        Effect.gen(function*() {
          const key = makeKey()
          const fiber = yield* Effect.fork(blobs.write(key, Stream.concat(chunked(pattern(6 * MiB), 64 * 1024), Stream.never)))
          yield* untilLeftovers(storage)
          yield* Fiber.interrupt(fiber)
          expect(yield* leftovers(storage)).toEqual([])
          expect(yield* blobs.exists(key)).toBe(false)
          expect(yield* listKeys(blobs)).toEqual([])
        })
      ), { timeout: 60_000 })

    it.scopedLive(`a large blob (${Math.round(largeBytes / MiB)} MiB) streams in and out without being held whole`, () =>
      withStore((blobs) =>
        Effect.gen(function*() {
          const key = makeKey()
          const chunk = MiB
          const chunks = Math.ceil(largeBytes / chunk)
          const limit = harness.maxHeldBytes ?? 64 * MiB
          // a store that held the whole blob must fail this
          expect(limit * 1.5).toBeLessThanOrEqual(largeBytes)
          const baseline = liveBufferBytes()
          let peak = 0
          // every 16 MiB: what is still alive then is held by the store (or its client)
          const sample = () => {
            peak = Math.max(peak, liveBufferBytes() - baseline)
          }
          const hashIn = createHash("sha256")
          // each chunk is a fresh buffer nobody else keeps: what stays alive is what the store holds
          const body = Stream.range(0, chunks - 1, 1).pipe(
            Stream.map((i) => {
              if (i % 16 === 15) sample()
              const bytes = new Uint8Array(chunk).fill(i % 251)
              bytes.set(pattern(64, i))
              hashIn.update(bytes)
              return bytes
            })
          )
          expect((yield* blobs.write(key, body)).sizeBytes).toBe(chunks * chunk)
          const writePeak = peak
          peak = 0
          const hashOut = createHash("sha256")
          let received = 0
          yield* Stream.runForEach(blobs.read(key), (bytes) =>
            Effect.sync(() => {
              hashOut.update(bytes)
              const before = received
              received += bytes.byteLength
              if (Math.floor(received / (16 * MiB)) > Math.floor(before / (16 * MiB))) sample()
            }))
          expect(received).toBe(chunks * chunk)
          expect(hashOut.digest("hex")).toBe(hashIn.digest("hex"))
          expect(writePeak, "bytes held while writing").toBeLessThan(limit)
          expect(peak, "bytes held while reading").toBeLessThan(limit)
        })
      ), { timeout: 300_000 })

    it.scopedLive("keys that are not generated ones are refused by every operation; nothing reaches the backend", () =>
      withStore((blobs, storage) =>
        Effect.gen(function*() {
          const uuid = makeKey()
          const keys = ["../" + uuid, "../../etc/passwd", "/etc/passwd", "a/b", "", ".", "..", `${uuid}/x`, `x/${uuid}`, `${uuid}\0`, ` ${uuid}`]
          for (const key of keys) {
            yield* bad(blobs.write(key, Stream.make(pattern(10))))
            yield* bad(collect(blobs.read(key)))
            yield* bad(blobs.stat(key))
            yield* bad(blobs.exists(key))
            yield* bad(blobs.localPath(key))
            yield* bad(blobs.remove(key))
          }
          expect(yield* leftovers(storage)).toEqual([])
          expect(yield* listKeys(blobs)).toEqual([])
        })
      ))

    it.scopedLive("two instances on one storage (a restart, another node) see the same blobs", () =>
      withStore((a, storage) =>
        Effect.gen(function*() {
          const b = yield* open(storage)
          const key = makeKey()
          const bytes = pattern(70_000, 9)
          yield* a.write(key, chunked(bytes, 4096))
          expect(sha256(yield* collect(b.read(key)))).toBe(sha256(bytes))
          yield* b.remove(key)
          expect(yield* a.exists(key)).toBe(false)
        })
      ))

    it.scopedLive("concurrent writes do not mix", () =>
      withStore((blobs) =>
        Effect.gen(function*() {
          const writes = Array.from({ length: 4 }, (_, i) => ({ key: makeKey(), bytes: pattern(3 * MiB + i, i) }))
          yield* Effect.forEach(writes, ({ bytes, key }) => blobs.write(key, chunked(bytes, 32 * 1024)), { concurrency: "unbounded" })
          for (const { bytes, key } of writes) expect(sha256(yield* collect(blobs.read(key)))).toBe(sha256(bytes))
        })
      ), { timeout: 60_000 })

    it.scopedLive("a write killed with SIGKILL mid-way: nothing visible; a start after `staleAfter` removes what it left", (ctx) =>
      Effect.gen(function*() {
        const storage = yield* Effect.orDie(harness.freshStorage)
        if (storage.writeInAnotherProcess === undefined) return ctx.skip()
        const key = makeKey()
        const writer = yield* Effect.orDie(storage.writeInAnotherProcess(key))
        yield* untilLeftovers(storage)
        yield* writer.kill
        // another node (or the restart) sees no blob ...
        const other = yield* open(storage)
        expect(yield* other.exists(key)).toBe(false)
        expect(Option.isNone(yield* other.stat(key))).toBe(true)
        expect(yield* listKeys(other)).toEqual([])
        // ... keeps what may still be a live upload (it is fresh) ...
        expect((yield* leftovers(storage)).length).toBeGreaterThan(0)
        // ... and a start once it is stale removes it
        yield* open(storage, { staleAfter: 0 })
        expect(yield* leftovers(storage)).toEqual([])
      }), { timeout: 180_000 })
  })
}
