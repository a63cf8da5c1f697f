/**
 * Where recordings live. Blobs are written atomically (a temp file in the
 * same directory, fsynced, renamed into place, and the directory fsynced)
 * under generated keys: no name or path from a client ever reaches the disk,
 * and a written blob survives a power cut.
 *
 * @since 0.1.0
 */
import { FileSystem } from "@effect/platform"
import { NodeFileSystem } from "@effect/platform-node"
import { Clock, Context, Deferred, Duration, Effect, Exit, Layer, Option, type Scope, Stream } from "effect"
import * as nodeFs from "node:fs"
import * as path from "node:path"
import { BlobStoreError } from "./Errors.js"

/**
 * A generated blob name (a random UUID).
 * @since 0.1.0
 */
export type BlobKey = string

/**
 * A stored blob as {@link BlobStoreService.list} reports it.
 * @since 0.1.0
 * @category models
 */
export interface BlobInfo {
  readonly key: BlobKey
  /** When its content was last written: a blob is complete once it is listed, so this is when it was stored. */
  readonly modifiedAt: Date
}

/**
 * A slice of a blob: `length` bytes starting at byte `offset` (an HTTP
 * `Range` once resolved against the size; see `VoiceJournal.readAudio`).
 * @since 0.1.0
 * @category models
 */
export interface ByteRange {
  readonly offset: number
  readonly length: number
}

/**
 * Options of {@link BlobStoreService.write}.
 * @since 0.1.0
 * @category models
 */
export interface WriteOptions<E, R> {
  /**
   * Looks at the complete blob before the write succeeds (the ingest's
   * duration check), given a local file holding all its bytes, valid only
   * while it runs (they may not be durable yet). If it fails, the write
   * fails with its error and leaves nothing behind, as for a failed body.
   * The filesystem store runs it on its temp file while that file's fsync
   * runs, so a check that reads the file costs the write no extra time.
   */
  readonly inspect?: ((path: string) => Effect.Effect<void, E, R>) | undefined
}

/**
 * Where a body's bytes go as they arrive, for a producer that pushes them
 * (a socket's read loop) instead of being pulled like a `Stream`: the
 * upload's hot path, with no per-chunk stream step between the socket and
 * the disk. Node `Writable` semantics, reduced to what a store needs.
 * @since 0.1.0
 * @category models
 */
export interface BlobSink {
  /**
   * Takes `bytes` as they are (not copied: the producer must not reuse the
   * buffer; Node sockets never do). `false` once enough bytes wait: push no
   * more until {@link BlobSink.drained} calls back.
   */
  readonly write: (bytes: Uint8Array) => boolean
  /** Calls `resume` once there is room again (only after `write` answered `false`). */
  readonly drained: (resume: () => void) => void
}

/**
 * A body that pushes its bytes into a {@link BlobSink}, honouring its
 * backpressure, and succeeds once every byte is pushed (or fails with its
 * own error). Interrupting it stops the pushing (remove its listeners).
 * @since 0.1.0
 * @category models
 */
export type BlobProducer<E, R> = (sink: BlobSink) => Effect.Effect<void, E, R>

/**
 * What {@link BlobStoreService.write} stores: a stream, or a producer.
 * @since 0.1.0
 * @category models
 */
export type BlobBody<E, R> = Stream.Stream<Uint8Array, E, R> | BlobProducer<E, R>

/**
 * `body` as a producer: a stream's chunks pushed as they come, the stream
 * held back while the sink is full. What a store runs, whatever it was given.
 * @since 0.1.0
 */
export const producerOf = <E, R>(body: BlobBody<E, R>): BlobProducer<E, R> =>
  typeof body === "function"
    ? body
    : (sink) =>
      Stream.runForEachChunk(body, (chunk) => {
        let room = true
        for (const bytes of chunk) if (bytes.byteLength > 0) room = sink.write(bytes)
        return room ? Effect.void : Effect.async<void>((resume) => sink.drained(() => resume(Effect.void)))
      })

/**
 * @since 0.1.0
 * @category models
 */
export interface BlobStoreService {
  /**
   * Streams `body` into a new blob. Atomic: on failure or interruption
   * nothing is left behind; on success the blob is complete and durable
   * (on disk, not only in the page cache), so a row may point at it.
   */
  readonly write: <E, R, E2 = never, R2 = never>(
    key: BlobKey,
    body: BlobBody<E, R>,
    options?: WriteOptions<E2, R2>
  ) => Effect.Effect<{ readonly sizeBytes: number }, E | E2 | BlobStoreError, R | R2>
  /** The blob's bytes (or only `range` of them), streamed. */
  readonly read: (key: BlobKey, range?: ByteRange | undefined) => Stream.Stream<Uint8Array, BlobStoreError>
  /** The blob's size, or None if there is no such blob (check before answering with its bytes). */
  readonly stat: (key: BlobKey) => Effect.Effect<Option.Option<{ readonly sizeBytes: number }>, BlobStoreError>
  /**
   * A local file holding the blob, for engines that read files (ffmpeg,
   * transcribers), valid while `scope` lives: a store that keeps blobs
   * elsewhere (object storage) downloads a copy that goes when it closes.
   */
  readonly localPath: (key: BlobKey) => Effect.Effect<string, BlobStoreError, Scope.Scope>
  /** Removes the blob; removing a missing blob is not an error. */
  readonly remove: (key: BlobKey) => Effect.Effect<void, BlobStoreError>
  readonly exists: (key: BlobKey) => Effect.Effect<boolean, BlobStoreError>
  /**
   * Every complete blob with its age (never an in-progress write), for the
   * orphan sweep (`BlobSweeper`). A blob removed while listing is skipped.
   */
  readonly list: Stream.Stream<BlobInfo, BlobStoreError>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class BlobStore extends Context.Tag("@voice-journal/core/BlobStore")<BlobStore, BlobStoreService>() {}

const keyPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/**
 * A fresh, unguessable key.
 * @since 0.1.0
 */
export const makeKey = (): BlobKey => globalThis.crypto.randomUUID()

/**
 * Whether `key` has the shape of a generated key (what {@link makeKey}
 * makes). Stores accept nothing else, so no client-made name or path
 * (`../x`, `a/b`) ever reaches a disk or a bucket.
 * @since 0.1.0
 */
export const isKey = (key: string): key is BlobKey => keyPattern.test(key)

/**
 * `key` if it is a generated one, else a `BlobStoreError` (operation `resolve`).
 * @since 0.1.0
 */
export const checkKey = (key: string): Effect.Effect<BlobKey, BlobStoreError> =>
  isKey(key) ? Effect.succeed(key) : Effect.fail(new BlobStoreError({ operation: "resolve", key, message: "invalid blob key" }))

/** Prefix of in-progress files; one untouched for long is garbage from a crash. */
const tempPrefix = ".partial-"

/**
 * How long a `.partial-*` file must go unwritten before start-up removes it
 * (default 1 hour). Several nodes may share the directory, so a partial may
 * be another node's upload in progress: its file is written chunk by chunk,
 * so its mtime stays fresh while the upload lives. The bundled server cuts
 * every request off after at most its `requestTimeout` (5–7 min by default),
 * so an hour is far beyond any live upload and absorbs clock skew between
 * nodes on a shared file system.
 * @since 0.1.0
 */
export const defaultStaleAfter: Duration.DurationInput = "1 hour"

/** Bytes waiting behind the write in flight before the producer is held back (per upload). */
const pendingLimit = 256 * 1024

/**
 * Bytes gathered before a `writev` is issued (except the last): a socket
 * read's worth. Batches of 512 KiB wake the pool less often but measured
 * slower (`pnpm bench:upload`, same sitting: 1 × 100 MB 234–304 → 348–354
 * MB/s, 8 × 100 MB 401–413 → 416–453); why is not settled: the kernel's
 * copy into the page cache takes ~45 % of the server's samples either way
 * (`perf`), and bytes written long before cost no more to copy on this VM.
 */
const writeBatch = 64 * 1024

/** `fs.writev` until every byte of `buffers` is written (a regular file may take fewer at once). */
const writevAll = (fd: number, buffers: Array<Uint8Array>): Promise<void> =>
  new Promise((resolve, reject) =>
    nodeFs.writev(fd, buffers, (error, written) => {
      if (error) return reject(error)
      let rest = written
      while (buffers.length > 0 && rest >= buffers[0]!.byteLength) rest -= buffers.shift()!.byteLength
      if (buffers.length === 0) return resolve()
      if (written === 0) return reject(new Error("writev wrote 0 bytes"))
      buffers[0] = buffers[0]!.subarray(rest)
      writevAll(fd, buffers).then(resolve, reject)
    })
  )

/**
 * A {@link BlobSink} writing to `fd` without waiting for each buffer: one
 * `writev` of at least {@link writeBatch} bytes is in flight while the next
 * buffers gather behind it (so the disk stays busy and the socket keeps
 * being read); `write` answers `false`
 * once more than {@link pendingLimit} bytes wait (memory stays bounded).
 * `failed` fails once a write has failed (the producer is then stopped).
 * The scope's finalizer waits for the write in flight, so the descriptor is
 * never closed under it, also on failure or interruption. Buffers are
 * written as they are (no copy).
 */
const pipelinedWriter = (fd: FileSystem.File.Descriptor, onError: (cause: unknown) => BlobStoreError) =>
  Effect.gen(function*() {
    let pending: Array<Uint8Array> = []
    let pendingBytes = 0
    let sizeBytes = 0
    let inFlight: Promise<void> | undefined
    let waiters: Array<() => void> = []
    const failure = yield* Deferred.make<never, BlobStoreError>()
    /** Set by `finish`: what is left goes out however little it is. */
    let flushing = false
    /** Set when the scope closes: the descriptor is about to go, so nothing more is written (a late producer's bytes go nowhere). */
    let closed = false
    const pump = (): void => {
      if (closed || inFlight !== undefined || pending.length === 0 || (pendingBytes < writeBatch && !flushing)) return
      const buffers = pending
      pending = []
      pendingBytes = 0
      inFlight = writevAll(fd, buffers).then(
        () => {
          inFlight = undefined
          pump()
          const resumed = waiters
          waiters = []
          for (const resume of resumed) resume()
        },
        (cause) => {
          inFlight = undefined
          Deferred.unsafeDone(failure, Exit.fail(onError(cause)))
        }
      )
    }
    /** Until no write is in flight (each completion may start the next). */
    const settled = Effect.promise(async () => {
      while (inFlight !== undefined) await inFlight
    })
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        closed = true
        return settled
      })
    )
    const sink: BlobSink = {
      write: (bytes) => {
        if (closed) return false
        if (bytes.byteLength === 0) return true
        sizeBytes += bytes.byteLength
        pending.push(bytes)
        pendingBytes += bytes.byteLength
        pump()
        return pendingBytes <= pendingLimit
      },
      drained: (resume) => {
        // nothing waits (the write in flight just took it all): room already
        if (pendingBytes <= pendingLimit) return resume()
        waiters.push(resume)
      }
    }
    return {
      sink,
      failed: Deferred.await(failure),
      /** Writes what is left and waits until all of it is written; the bytes written. */
      finish: Effect.suspend(() => {
        flushing = true
        pump()
        return settled.pipe(
          Effect.zipRight(Effect.suspend(() => Deferred.isDone(failure))),
          Effect.flatMap((failed) => (failed ? Deferred.await(failure) : Effect.succeed(sizeBytes)))
        )
      })
    }
  })

/**
 * Blobs as files in one directory (created if missing). Temp files no one
 * has written for `staleAfter` (a crashed upload's) are removed at start-up;
 * fresher ones may be another node's live upload and stay.
 * @since 0.1.0
 * @category constructors
 */
export const makeFileSystem = (options: { readonly directory: string; readonly staleAfter?: Duration.DurationInput | undefined }) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const directory = path.resolve(options.directory)
    const fail = (operation: string, key: string) => (cause: unknown) =>
      new BlobStoreError({ operation, key, message: `blob ${operation} failed for ${key}`, cause })
    yield* fs.makeDirectory(directory, { recursive: true }).pipe(Effect.mapError(fail("init", directory)))
    /** When `name` was last written; None if it is gone (another node removed it meanwhile). */
    const modifiedAt = (name: string): Effect.Effect<Option.Option<Date>, BlobStoreError> =>
      fs.stat(path.join(directory, name)).pipe(
        Effect.map((info) => Option.some(Option.getOrElse(info.mtime, () => new Date(0)))),
        Effect.catchIf((e) => e._tag === "SystemError" && e.reason === "NotFound", () => Effect.succeed(Option.none<Date>())),
        Effect.mapError(fail("list", name))
      )

    const staleBefore = (yield* Clock.currentTimeMillis) - Duration.toMillis(options.staleAfter ?? defaultStaleAfter)
    const leftovers = yield* fs.readDirectory(directory).pipe(Effect.mapError(fail("init", directory)))
    yield* Effect.forEach(leftovers.filter((name) => name.startsWith(tempPrefix)), (name) =>
      modifiedAt(name).pipe(
        Effect.flatMap(Option.match({
          onNone: () => Effect.void,
          onSome: (mtime) =>
            mtime.getTime() < staleBefore
              ? fs.remove(path.join(directory, name), { force: true }).pipe(Effect.mapError(fail("remove", name)))
              : Effect.void
        })),
        // a leftover that cannot be removed costs disk space, not correctness: start anyway, but say so
        Effect.catchAll((e) => Effect.logWarning("could not remove a stale partial upload", e))
      ))

    /**
     * Makes renames in the directory durable (fsync of the directory itself;
     * POSIX leaves a new name in the page cache until then).
     */
    const syncDirectory = Effect.scoped(Effect.flatMap(fs.open(directory, { flag: "r" }), (dir) => dir.sync))

    const pathOf = (key: BlobKey) => Effect.map(checkKey(key), (k) => path.join(directory, k))

    const service: BlobStoreService = {
      write: (key, body, options) =>
        Effect.flatMap(pathOf(key), (target) => {
          const temp = path.join(directory, `${tempPrefix}${key}-${globalThis.crypto.randomUUID().slice(0, 8)}`)
          const failWrite = fail("write", key)
          let sizeBytes = 0
          let renamed = false
          return Effect.scoped(Effect.gen(function*() {
            const file = yield* fs.open(temp, { flag: "wx" }).pipe(Effect.mapError(failWrite))
            const writer = yield* pipelinedWriter(file.fd, failWrite)
            // a failed disk write stops the producer at once
            yield* Effect.raceFirst(producerOf(body)(writer.sink), writer.failed)
            sizeBytes = yield* writer.finish
            // the bytes reach the disk before the name points at them ... (never cut short: the scope closes the file)
            const sync = file.sync.pipe(Effect.mapError(failWrite), Effect.uninterruptible)
            // ... and meanwhile the inspection reads them, from the page cache
            yield* options?.inspect === undefined ? sync : Effect.all([sync, options.inspect(temp)], { concurrency: 2, discard: true })
          })).pipe(
            Effect.zipRight(fs.rename(temp, target).pipe(Effect.mapError(failWrite))),
            Effect.tap(() => {
              renamed = true
            }),
            // ... and the name (a directory entry) reaches it before anyone is told the blob exists
            Effect.zipRight(syncDirectory.pipe(Effect.mapError(failWrite))),
            Effect.map(() => ({ sizeBytes })),
            Effect.onExit((exit) =>
              exit._tag === "Failure"
                ? Effect.all([fs.remove(temp, { force: true }), renamed ? fs.remove(target, { force: true }) : Effect.void]).pipe(
                  // a failed write leaves nothing; if even removing fails, the start-up/orphan sweep gets it later
                  Effect.catchAll((e) => Effect.logWarning(`could not remove the file of a failed blob write ${key}`, e))
                )
                : Effect.void
            )
          )
        }),
      read: (key, range) =>
        Stream.unwrap(Effect.map(pathOf(key), (p) =>
          fs.stream(p, range === undefined ? {} : { offset: range.offset, bytesToRead: range.length }).pipe(
            Stream.mapError(fail("read", key))
          ))),
      stat: (key) =>
        Effect.flatMap(pathOf(key), (p) =>
          fs.stat(p).pipe(
            Effect.map((info) => Option.some({ sizeBytes: Number(info.size) })),
            // a missing blob is an answer (the caller decides what it means), not a failure
            Effect.catchIf((e) => e._tag === "SystemError" && e.reason === "NotFound", () => Effect.succeedNone),
            Effect.mapError(fail("stat", key))
          )),
      // a synchronous stat: on a local disk it costs ~1 µs where fs.access's
      // trip through the thread pool costs ~35 µs of CPU, once per stage run
      localPath: (key) =>
        Effect.flatMap(pathOf(key), (p) =>
          Effect.try({ try: () => nodeFs.statSync(p, { throwIfNoEntry: false }), catch: fail("read", key) }).pipe(
            Effect.filterOrFail((stat) => stat !== undefined, () => new BlobStoreError({ operation: "read", key, message: `blob ${key} does not exist` })),
            Effect.as(p)
          )),
      remove: (key) => Effect.flatMap(pathOf(key), (p) => fs.remove(p, { force: true }).pipe(Effect.mapError(fail("remove", key)))),
      exists: (key) => Effect.flatMap(pathOf(key), (p) => fs.exists(p).pipe(Effect.mapError(fail("read", key)))),
      list: Stream.fromIterableEffect(fs.readDirectory(directory).pipe(Effect.mapError(fail("list", directory)))).pipe(
        Stream.filter(isKey),
        Stream.mapEffect((key) => Effect.map(modifiedAt(key), Option.map((modifiedAt): BlobInfo => ({ key, modifiedAt }))), { concurrency: 8 }),
        Stream.filterMap((info) => info)
      )
    }
    return service
  })

/**
 * The filesystem blob store (Node).
 * @since 0.1.0
 * @category layers
 */
export const layerFileSystem = (
  options: { readonly directory: string; readonly staleAfter?: Duration.DurationInput | undefined }
): Layer.Layer<BlobStore, BlobStoreError> =>
  Layer.effect(BlobStore, makeFileSystem(options)).pipe(Layer.provide(NodeFileSystem.layer))
