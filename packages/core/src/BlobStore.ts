/**
 * Where recordings live. Blobs are written atomically (a temp file in the
 * same directory, renamed into place once complete) under generated keys:
 * no name or path from a client ever reaches the disk.
 *
 * @since 0.1.0
 */
import { FileSystem } from "@effect/platform"
import { NodeFileSystem } from "@effect/platform-node"
import { Context, Effect, Layer, Ref, Sink, Stream } from "effect"
import * as path from "node:path"
import { BlobStoreError } from "./Errors.js"

/**
 * A generated blob name (a random UUID).
 * @since 0.1.0
 */
export type BlobKey = string

/**
 * @since 0.1.0
 * @category models
 */
export interface BlobStoreService {
  /**
   * Streams `body` into a new blob. Atomic: on failure or interruption
   * nothing is left behind; on success the blob is complete.
   */
  readonly write: <E, R>(
    key: BlobKey,
    body: Stream.Stream<Uint8Array, E, R>
  ) => Effect.Effect<{ readonly sizeBytes: number }, E | BlobStoreError, R>
  /** The blob's bytes, streamed. */
  readonly read: (key: BlobKey) => Stream.Stream<Uint8Array, BlobStoreError>
  /** A local file holding the blob, for engines that read files. */
  readonly localPath: (key: BlobKey) => Effect.Effect<string, BlobStoreError>
  /** Removes the blob; removing a missing blob is not an error. */
  readonly remove: (key: BlobKey) => Effect.Effect<void, BlobStoreError>
  readonly exists: (key: BlobKey) => Effect.Effect<boolean, BlobStoreError>
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

/** Prefix of in-progress files; anything with it is garbage after a crash. */
const tempPrefix = ".partial-"

/**
 * Blobs as files in one directory (created if missing). Leftover temp files
 * from a crashed process are removed at start-up.
 * @since 0.1.0
 * @category constructors
 */
export const makeFileSystem = (options: { readonly directory: string }) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const directory = path.resolve(options.directory)
    const fail = (operation: string, key: string) => (cause: unknown) =>
      new BlobStoreError({ operation, key, message: `blob ${operation} failed for ${key}`, cause })
    yield* fs.makeDirectory(directory, { recursive: true }).pipe(Effect.mapError(fail("init", directory)))
    const leftovers = yield* fs.readDirectory(directory).pipe(Effect.mapError(fail("init", directory)))
    yield* Effect.forEach(leftovers.filter((name) => name.startsWith(tempPrefix)), (name) =>
      fs.remove(path.join(directory, name), { force: true }).pipe(Effect.ignore))

    const pathOf = (key: BlobKey) =>
      keyPattern.test(key)
        ? Effect.succeed(path.join(directory, key))
        : Effect.fail(new BlobStoreError({ operation: "resolve", key, message: "invalid blob key" }))

    const service: BlobStoreService = {
      write: (key, body) =>
        Effect.gen(function*() {
          const target = yield* pathOf(key)
          const temp = path.join(directory, `${tempPrefix}${key}-${globalThis.crypto.randomUUID().slice(0, 8)}`)
          const size = yield* Ref.make(0)
          yield* body.pipe(
            Stream.tap((chunk) => Ref.update(size, (n) => n + chunk.byteLength)),
            // the sink's failures are the file system's; the body's own errors pass through as they are
            Stream.run(fs.sink(temp, { flag: "wx" }).pipe(Sink.mapError(fail("write", key)))),
            Effect.zipRight(fs.rename(temp, target).pipe(Effect.mapError(fail("write", key)))),
            Effect.onExit((exit) => exit._tag === "Failure" ? fs.remove(temp, { force: true }).pipe(Effect.ignore) : Effect.void)
          )
          return { sizeBytes: yield* Ref.get(size) }
        }),
      read: (key) =>
        Stream.unwrap(Effect.map(pathOf(key), (p) => fs.stream(p).pipe(Stream.mapError(fail("read", key))))),
      localPath: (key) =>
        Effect.flatMap(pathOf(key), (p) =>
          fs.exists(p).pipe(
            Effect.mapError(fail("read", key)),
            Effect.filterOrFail((exists) => exists, () => new BlobStoreError({ operation: "read", key, message: `blob ${key} does not exist` })),
            Effect.as(p)
          )),
      remove: (key) => Effect.flatMap(pathOf(key), (p) => fs.remove(p, { force: true }).pipe(Effect.mapError(fail("remove", key)))),
      exists: (key) => Effect.flatMap(pathOf(key), (p) => fs.exists(p).pipe(Effect.mapError(fail("read", key))))
    }
    return service
  })

/**
 * The filesystem blob store (Node).
 * @since 0.1.0
 * @category layers
 */
export const layerFileSystem = (options: { readonly directory: string }): Layer.Layer<BlobStore, BlobStoreError> =>
  Layer.effect(BlobStore, makeFileSystem(options)).pipe(Layer.provide(NodeFileSystem.layer))
