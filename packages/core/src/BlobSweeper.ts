/**
 * Removes audio no entry points to. Ingest writes the blob first (renamed
 * into place once complete) and the entry row second; deleting an entry
 * removes the row first and the blob second. So a row never points at a
 * missing blob, and a crash between the two writes leaves at worst a complete
 * blob without a row — an orphan, which this sweep removes once it is older
 * than `minAge`.
 *
 * Why an age: between an upload's rename and its row's commit the blob is
 * briefly row-less on purpose. The blob's mtime is its last written chunk,
 * i.e. the moment the upload finished, and the row follows within
 * milliseconds; an hour (the default) is far beyond that and absorbs clock
 * skew between nodes sharing the directory. Every node may sweep: removing
 * an already removed blob is not an error.
 *
 * @since 0.1.0
 */
import { Chunk, Clock, Duration, Effect, Layer, Schedule, Stream } from "effect"
import { type BlobKey, BlobStore } from "./BlobStore.js"
import type { BlobStoreError, StoreError } from "./Errors.js"
import { JournalStore } from "./JournalStore.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface SweepOptions {
  /** Only blobs stored at least this long ago may go. Default 1 hour. */
  readonly minAge?: Duration.DurationInput | undefined
  /** Blobs checked against the store per query. Default 500. */
  readonly batchSize?: number | undefined
}

/**
 * What one sweep did.
 * @since 0.1.0
 * @category models
 */
export interface SweepResult {
  /** Blobs old enough to be candidates. */
  readonly checked: number
  /** Orphans removed. */
  readonly removed: ReadonlyArray<BlobKey>
}

/** @since 0.1.0 */
export const defaultMinAge: Duration.DurationInput = "1 hour"

/** @since 0.1.0 */
export const defaultInterval: Duration.DurationInput = "1 hour"

/**
 * One pass over the blob store: every blob older than `minAge` that no
 * entry points to is removed. Streams the listing in batches, so memory does
 * not grow with the number of blobs.
 * @since 0.1.0
 */
export const sweep = (
  options: SweepOptions = {}
): Effect.Effect<SweepResult, BlobStoreError | StoreError, BlobStore | JournalStore> =>
  Effect.gen(function*() {
    const blobs = yield* BlobStore
    const store = yield* JournalStore
    const cutoff = (yield* Clock.currentTimeMillis) - Duration.toMillis(options.minAge ?? defaultMinAge)
    const removed: Array<BlobKey> = []
    let checked = 0
    yield* blobs.list.pipe(
      Stream.filter((blob) => blob.modifiedAt.getTime() < cutoff),
      Stream.grouped(options.batchSize ?? 500),
      Stream.runForEach((batch) =>
        Effect.gen(function*() {
          const keys = Chunk.toReadonlyArray(batch).map((b) => b.key)
          checked += keys.length
          // the row is written after the blob, so a row-less blob this old will never get one
          const referenced = yield* store.existingBlobKeys(keys)
          for (const key of keys) {
            if (referenced.has(key)) continue
            yield* blobs.remove(key)
            removed.push(key)
          }
        })
      )
    )
    if (removed.length > 0) {
      yield* Effect.logInfo(`removed ${removed.length} orphaned audio blob(s) (no entry points to them)`)
    }
    return { checked, removed }
  })

/**
 * Sweeps at start-up and then every `interval` (default 1 hour), in a
 * background fiber that lives as long as the layer. A failed sweep is
 * logged and tried again at the next interval; it never stops the node.
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: SweepOptions & { readonly interval?: Duration.DurationInput | undefined } = {}
): Layer.Layer<never, never, BlobStore | JournalStore> =>
  Layer.scopedDiscard(
    sweep(options).pipe(
      Effect.catchAll((e) => Effect.logWarning("audio sweep failed; trying again at the next interval", e)),
      Effect.repeat(Schedule.spaced(options.interval ?? defaultInterval)),
      Effect.forkScoped
    )
  )
