/**
 * A watch folder: recordings dropped into a directory (a phone's synced
 * "Voice Memos" folder, a recorder's SD card, Syncthing) become entries of
 * one user without anyone running a command.
 *
 * Each file goes through the same streaming ingest as an upload
 * (`VoiceJournal.ingest`: content sniffing, size limit, sha256), with its
 * base name as the original filename, once it is complete: its size and
 * mtime stayed the same across two scans at least `settle` apart. A file
 * whose bytes are already one of the user's entries (same sha256, any
 * name) is not ingested again — the file is hashed first and the store
 * asked (`JournalStore.findEntryBySha256`), so a restart re-ingests
 * nothing. A file that fails the checks (not audio, too large, empty) is
 * reported once per (path, size, mtime), with the reason. The user's files
 * are never deleted or moved unless `moveTo` is set; then each is moved
 * there once it is in the journal.
 *
 * Why polling (`readdir` + `stat`) and not `fs.watch`: `fs.watch` reports
 * nothing on many of the places such folders live (network shares, some
 * FUSE and container bind mounts), coalesces or drops events under load,
 * and differs per platform (`close_write` exists only with Linux inotify);
 * and "complete" still needs a timer, since a sync tool may pause mid-file.
 * A scan every couple of seconds costs one `readdir` and a `stat` per file.
 * Only the folder's top level is watched; hidden files (a leading dot — the
 * temporary files of Syncthing, rsync and most sync tools) are ignored.
 *
 * @since 0.1.0
 */
import { Clock, Duration, Effect, Layer, Option, Schema, type Scope, Stream } from "effect"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import type { EntryId, UserId } from "./Domain.js"
import { JournalStore } from "./JournalStore.js"
import { VoiceJournal } from "./VoiceJournal.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface WatchFolderConfig {
  /** The folder to watch (its top level). */
  readonly directory: string
  /** Whose entries the recordings become. Must exist. */
  readonly userId: UserId
  /** Where to move a file once it is in the journal; absent: files are never touched. */
  readonly moveTo?: string | undefined
  /** How long size and mtime must stay the same before a file counts as complete. Default 2 s. */
  readonly settle?: Duration.DurationInput | undefined
  /** Time between scans. Default 1 s. */
  readonly interval?: Duration.DurationInput | undefined
  /** Files ingested at the same time. Default 2. */
  readonly concurrency?: number | undefined
  /** Told about every file handled (the CLI prints these). */
  readonly onEvent?: ((event: WatchEvent) => Effect.Effect<void>) | undefined
}

/**
 * What happened to a file.
 * @since 0.1.0
 * @category models
 */
export type WatchEvent =
  | { readonly _tag: "Ingested"; readonly file: string; readonly entryId: EntryId; readonly movedTo: string | null }
  /** Its bytes are already an entry of the user (a re-copied file, or seen before a restart). */
  | { readonly _tag: "AlreadyIngested"; readonly file: string; readonly entryId: EntryId; readonly movedTo: string | null }
  /** Failed the content checks; reported once until the file changes. */
  | { readonly _tag: "Skipped"; readonly file: string; readonly reason: string }
  /** A scan of the folder finished. */
  | { readonly _tag: "Scanned"; readonly files: number }

/**
 * The watch folder cannot start (missing folder, unknown user) or reach its
 * database.
 * @since 0.1.0
 * @category errors
 */
export class WatchFolderError extends Schema.TaggedError<WatchFolderError>()("WatchFolderError", {
  message: Schema.String
}) {}

/** What the watcher remembers of a path: its last (size, mtime), since when, and whether it is dealt with. */
interface Seen {
  readonly size: number
  readonly mtimeMs: number
  readonly since: number
  readonly done: boolean
}

const readFile = (file: string): Stream.Stream<Uint8Array, WatchFolderError> =>
  Stream.fromAsyncIterable(
    fs.createReadStream(file, { highWaterMark: 64 * 1024 }) as AsyncIterable<Buffer>,
    (e) => new WatchFolderError({ message: `cannot read ${file}: ${e instanceof Error ? e.message : String(e)}` })
  )

const sha256Of = (file: string) =>
  Effect.suspend(() => {
    const hash = createHash("sha256")
    return Stream.runForEach(readFile(file), (chunk) => Effect.sync(() => hash.update(chunk))).pipe(
      Effect.map(() => hash.digest("hex"))
    )
  })

const fsError = (what: string) => (e: unknown) =>
  new WatchFolderError({ message: `${what}: ${e instanceof Error ? e.message : String(e)}` })

/** A name in `dir` not taken yet: `name`, else `name (2)`, `name (3)`, … (never overwrites). */
const freeName = (dir: string, name: string) => {
  const ext = path.extname(name)
  const stem = name.slice(0, name.length - ext.length)
  for (let n = 1; ; n++) {
    const candidate = path.join(dir, n === 1 ? name : `${stem} (${n})${ext}`)
    if (!fs.existsSync(candidate)) return candidate
  }
}

/** Flushes a file or a directory (its entries) to disk. */
const fsyncPath = async (p: string) => {
  const handle = await fs.promises.open(p, "r")
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

/**
 * Moves `file` into `dir`: a rename on the same filesystem, else copy then
 * remove. The user's recording must survive a power cut in between: the
 * copy and the new directory entry are on disk before the original goes.
 */
const moveInto = (file: string, dir: string) =>
  Effect.tryPromise({
    try: async () => {
      const target = freeName(dir, path.basename(file))
      try {
        await fs.promises.rename(file, target)
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EXDEV") throw e
        // another filesystem: the copy must be whole, and on disk, before the original goes
        await fs.promises.copyFile(file, target, fs.constants.COPYFILE_EXCL)
        await fsyncPath(target)
        await fsyncPath(dir)
        await fs.promises.rm(file)
      }
      await fsyncPath(dir)
      await fsyncPath(path.dirname(file))
      return target
    },
    catch: fsError(`cannot move ${file} to ${dir}`)
  })

/**
 * Checks the folder and the user, then returns the scan loop (it runs until
 * interrupted; an interrupted ingest leaves nothing behind).
 * @since 0.1.0
 * @category constructors
 */
export const make = (config: WatchFolderConfig) =>
  Effect.gen(function*() {
    const journal = yield* VoiceJournal
    const store = yield* JournalStore
    const directory = path.resolve(config.directory)
    const moveTo = config.moveTo === undefined ? undefined : path.resolve(config.moveTo)
    const settle = Duration.toMillis(config.settle ?? Duration.seconds(2))
    const interval = config.interval ?? Duration.seconds(1)
    const emit = config.onEvent ?? (() => Effect.void)
    const concurrency = Math.max(1, config.concurrency ?? 2)

    const stat = yield* Effect.tryPromise({
      try: () => fs.promises.stat(directory),
      catch: fsError(`watch folder ${directory} cannot be read`)
    })
    if (!stat.isDirectory()) return yield* new WatchFolderError({ message: `watch folder ${directory} is not a directory` })
    yield* store.getUser(config.userId).pipe(
      Effect.mapError((e) =>
        new WatchFolderError({
          message: e._tag === "NotFound"
            ? `watch folder: user ${config.userId} does not exist (create one with \`voice-journal users create <name>\`)`
            : `watch folder: cannot check user ${config.userId}: ${e.message}`
        })
      )
    )
    if (moveTo !== undefined) {
      // moved files would be found again, and moved again, forever
      if (moveTo === directory) {
        return yield* new WatchFolderError({ message: `the move-to folder must not be the watch folder itself (${directory})` })
      }
      yield* Effect.tryPromise({
        try: () => fs.promises.mkdir(moveTo, { recursive: true }),
        catch: fsError(`cannot create the move-to folder ${moveTo}`)
      })
    }

    const seen = new Map<string, Seen>()

    const moveIfAsked = (file: string) =>
      moveTo === undefined
        ? Effect.succeed(null)
        : moveInto(file, moveTo).pipe(Effect.tap(() => Effect.sync(() => seen.delete(file))))

    /**
     * Each complete file is hashed first, so known bytes are never read into
     * the blob store again. Files with the same bytes in one scan (two
     * copies dropped together) are handled one after the other, so only the
     * first becomes an entry; different files go a few at a time.
     */
    const handleAll = (ready: ReadonlyArray<{ readonly file: string; readonly size: number }>) =>
      Effect.gen(function*() {
        const hashed = yield* Effect.forEach(ready, ({ file, size }) =>
          // larger than the limit: known from the size alone, no need to read it
          size > journal.config.maxUploadBytes
            ? skip(file, `larger than the limit of ${journal.config.maxUploadBytes} bytes`).pipe(Effect.as([]))
            : sha256Of(file).pipe(
              Effect.map((sha256) => [{ file, sha256 }]),
              Effect.catchAll((e) => retryLater(file, e).pipe(Effect.as([])))
            ), { concurrency })
        const bySha = new Map<string, Array<string>>()
        for (const { file, sha256 } of hashed.flat()) bySha.set(sha256, [...(bySha.get(sha256) ?? []), file])
        yield* Effect.forEach(bySha, ([sha256, files]) => Effect.forEach(files, (file) => handle(file, sha256), { discard: true }), {
          concurrency,
          discard: true
        })
      })

    /** One complete file of known hash: already in the journal, ingested now, or reported. */
    const handle = (file: string, sha256: string) =>
      Effect.gen(function*() {
        const name = path.basename(file)
        const known = yield* store.findEntryBySha256(config.userId, sha256)
        if (Option.isSome(known)) {
          yield* Effect.logInfo(`watch folder: ${name} is already entry ${known.value.id}`)
          const movedTo = yield* moveIfAsked(file)
          return yield* emit({ _tag: "AlreadyIngested", file, entryId: known.value.id, movedTo })
        }
        const ingested = yield* journal.ingest(config.userId, readFile(file), { originalFilename: name }).pipe(
          Effect.map((details) => ({ _tag: "ok" as const, details })),
          Effect.catchTags({
            UnsupportedMediaType: (e) => Effect.succeed({ _tag: "rejected" as const, reason: e.message }),
            PayloadTooLarge: (e) => Effect.succeed({ _tag: "rejected" as const, reason: e.message }),
            AudioTooLong: (e) => Effect.succeed({ _tag: "rejected" as const, reason: e.message }),
            InvalidUpload: (e) => Effect.succeed({ _tag: "rejected" as const, reason: e.message })
          })
        )
        if (ingested._tag === "rejected") return yield* skip(file, ingested.reason)
        const entry = ingested.details.entry
        yield* Effect.logInfo(`watch folder: ${name} → entry ${entry.id} (${entry.mimeType}, ${entry.sizeBytes} bytes)`)
        const movedTo = yield* moveIfAsked(file)
        yield* emit({ _tag: "Ingested", file, entryId: entry.id, movedTo })
      }).pipe(Effect.catchAll((e) => retryLater(file, e)))

    /**
     * The database or a read failed (the file vanished, a lost connection):
     * not the file's fault, so it is not marked done and is tried again once
     * it has settled again.
     */
    const retryLater = (file: string, e: { readonly message: string }) =>
      Effect.sync(() => seen.delete(file)).pipe(
        Effect.zipRight(Effect.logWarning(`watch folder: ${path.basename(file)} not ingested, will retry: ${e.message}`))
      )

    const skip = (file: string, reason: string) =>
      Effect.logWarning(`watch folder: skipped ${path.basename(file)}: ${reason}`).pipe(
        Effect.zipRight(emit({ _tag: "Skipped", file, reason }))
      )

    /** One pass: note what changed, then handle the files that have settled, a few at a time. */
    const scan = Effect.gen(function*() {
      const names = yield* Effect.tryPromise({
        try: () => fs.promises.readdir(directory, { withFileTypes: true }),
        catch: fsError(`watch folder ${directory} cannot be read`)
      })
      const now = yield* Clock.currentTimeMillis
      const present = new Set<string>()
      const ready: Array<{ file: string; size: number }> = []
      for (const dirent of names) {
        if (!dirent.isFile() || dirent.name.startsWith(".")) continue
        const file = path.join(directory, dirent.name)
        const st = yield* Effect.tryPromise({ try: () => fs.promises.stat(file), catch: (e) => e as NodeJS.ErrnoException }).pipe(
          Effect.catchAll((e) =>
            // gone between readdir and stat (moved away, a sync tool's rename): simply not there this time
            e.code === "ENOENT"
              ? Effect.succeed(undefined)
              : Effect.logWarning(`watch folder: cannot stat ${dirent.name}: ${e.message}`).pipe(Effect.as(undefined))
          )
        )
        if (st === undefined) continue
        present.add(file)
        const last = seen.get(file)
        if (last === undefined || last.size !== st.size || last.mtimeMs !== st.mtimeMs) {
          seen.set(file, { size: st.size, mtimeMs: st.mtimeMs, since: now, done: false })
        } else if (!last.done && now - last.since >= settle) {
          seen.set(file, { ...last, done: true })
          ready.push({ file, size: st.size })
        }
      }
      for (const file of seen.keys()) if (!present.has(file)) seen.delete(file)
      yield* handleAll(ready)
      yield* emit({ _tag: "Scanned", files: present.size })
    }).pipe(
      Effect.catchAll((e) => Effect.logWarning(`watch folder: scan failed, trying again: ${e.message}`))
    )

    yield* Effect.logInfo(
      `watching ${directory} for recordings of user ${config.userId}` + (moveTo === undefined ? "" : ` (moving them to ${moveTo})`)
    )
    return Effect.zipRight(scan, Effect.sleep(interval)).pipe(Effect.forever, Effect.annotateLogs("watchFolder", directory))
  }).pipe(Effect.annotateLogs("watchFolder", path.resolve(config.directory)))

/**
 * Checks, then watches until interrupted (the `voice-journal watch` command).
 * @since 0.1.0
 */
export const run = (config: WatchFolderConfig): Effect.Effect<never, WatchFolderError, VoiceJournal | JournalStore> =>
  Effect.flatten(make(config))

/**
 * Checks at once (failing the start), then watches in a fiber of `scope`.
 * @since 0.1.0
 */
export const start = (config: WatchFolderConfig): Effect.Effect<void, WatchFolderError, VoiceJournal | JournalStore | Scope.Scope> =>
  Effect.flatMap(make(config), Effect.forkScoped)

/**
 * The watch folder as a background fiber of the layer (for `serve`).
 * @since 0.1.0
 * @category layers
 */
export const layer = (config: WatchFolderConfig) => Layer.scopedDiscard(start(config))
