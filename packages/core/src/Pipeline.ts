/**
 * The background workers: for each stage, a few fibers that claim due rows
 * through the `JournalStore`, run the stage with the lease kept alive by a
 * heartbeat, and write the result (and the next stage's row) in one
 * transaction. Everything runs in fibers owned by the layer's scope:
 *
 * - **claiming**: `claimNext` takes due rows and rows whose lease expired
 *   (their worker died), so the claim loop is also the sweeper;
 * - **waking**: a `WorkSignal` wakes idle workers as soon as work is queued;
 *   polling (`pollInterval`) stays the source of truth;
 * - **failing**: a `TemporaryError` is retried in-process by the
 *   `RetryPolicy` schedule, then durably (`retrying` + `next_attempt_at`),
 *   then `failed`; a `PermanentError` fails at once; the reason is stored;
 * - **shutdown**: closing the scope (or `PipelineStatus.shutdown`) stops
 *   claiming, hands back at once the rows of stages sleeping in a retry
 *   backoff, gives stages that are working `shutdownGrace` to finish, then
 *   interrupts them — interruption releases their leases, so the next
 *   process resumes them at once;
 * - **long recordings**: a recording longer than `chunkSeconds`, or larger
 *   than the transcriber's `maxBytes`, is transcribed in pieces
 *   (`AudioPieces`): planned once per run and stored, each piece's
 *   transcript stored as it completes, up to `pieceConcurrency` at a time;
 *   a retry or a resumed run sends only the unfinished pieces, and the
 *   stitched transcript keeps timestamped segments.
 *
 * @since 0.1.0
 */
import { Cause, Chunk, Context, Deferred, Duration, Effect, Either, Exit, Fiber, FiberRef, FiberSet, HashMap, Layer, Option, Queue, Ref, Tracer } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as AudioPieces from "./AudioPieces.js"
import { AudioProbe, type ProbeResult } from "./AudioProbe.js"
import { BlobStore } from "./BlobStore.js"
import { Cleaner } from "./Cleaner.js"
import { documentOf } from "./Destination.js"
import * as Destinations from "./Destinations.js"
import type { ClaimedJob, DeliveryId, Job, Stage, VoiceEntry } from "./Domain.js"
import { isTemporaryError, LeaseLost, PermanentError, redactInternals, type StageError, type StoreError, TemporaryError } from "./Errors.js"
import { type CleanupResult, JournalStore, type PieceResult, stageTables, type TranscriptionResult } from "./JournalStore.js"
import * as Metrics from "./Metrics.js"
import * as RetryPolicy from "./RetryPolicy.js"
import { type Segment, Transcriber } from "./Transcriber.js"
import { WorkSignal } from "./WorkSignal.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface PipelineConfig {
  /** Names this process in `lease_owner`. Default host-pid-random. */
  readonly workerId: string
  /** Lease length; a dead worker's row is claimable again after this. Default 30 s. */
  readonly lease: Duration.DurationInput
  /** Heartbeat period (well under the lease). Default 10 s. */
  readonly heartbeat: Duration.DurationInput
  /** Fallback poll when no wake-up arrives. Default 1 s. */
  readonly pollInterval: Duration.DurationInput
  /** Concurrent runs per stage. */
  readonly concurrency: Readonly<Record<Stage, number>>
  /** Retry policy per stage (the server sets delivery's `maxAttempts` from `NOTION_MAX_RETRIES`). */
  readonly retry: Readonly<Record<Stage, RetryPolicy.RetryPolicy>>
  /** How long in-flight stages may finish after shutdown begins. Default 30 s. */
  readonly shutdownGrace: Duration.DurationInput
  /** Recordings longer than this are transcribed in pieces of at most this long (seconds). Default 600. */
  readonly chunkSeconds: number
  /** Pieces of one recording transcribed at the same time. Default 3. */
  readonly pieceConcurrency: number
  /**
   * How long a finished run (or a freed slot) waits for the stage's other
   * runs to finish too, so they are written (or claimed) together; it ends
   * early once none is working. Default 2 ms.
   */
  readonly batchWindow: Duration.DurationInput
  /**
   * How far ahead a stage whose runs are short claims: besides a row for
   * each free slot, a claim takes the rows its slots are expected to start
   * within this long (from the stage's recent run times; at most
   * {@link maxAheadPerSlot} per slot). They wait here for a slot, their
   * leases renewed with the runs', and are handed back at shutdown. Stages
   * whose runs take longer than this claim only for free slots, so a node
   * holds back little work another node could start. Default 20 ms; 0 turns it off.
   */
  readonly claimAhead: Duration.DurationInput
}

/** @since 0.1.0 */
export const defaultConfig = (): PipelineConfig => ({
  workerId: `${os.hostname()}-${process.pid}-${globalThis.crypto.randomUUID().slice(0, 8)}`,
  lease: "30 seconds",
  heartbeat: "10 seconds",
  pollInterval: "1 second",
  concurrency: { transcription: 2, cleanup: 2, delivery: 2 },
  retry: { transcription: RetryPolicy.defaults, cleanup: RetryPolicy.defaults, delivery: RetryPolicy.defaults },
  shutdownGrace: "30 seconds",
  chunkSeconds: 600,
  pieceConcurrency: 3,
  batchWindow: "2 millis",
  claimAhead: "20 millis"
})

/**
 * Partial settings; nested records may be partial too.
 * @since 0.1.0
 */
export interface PipelineOptions {
  readonly workerId?: string | undefined
  readonly lease?: Duration.DurationInput | undefined
  readonly heartbeat?: Duration.DurationInput | undefined
  readonly pollInterval?: Duration.DurationInput | undefined
  readonly concurrency?: Partial<Record<Stage, number>> | undefined
  readonly retry?: Partial<Record<Stage, Partial<RetryPolicy.RetryPolicy>>> | undefined
  readonly shutdownGrace?: Duration.DurationInput | undefined
  readonly chunkSeconds?: number | undefined
  readonly pieceConcurrency?: number | undefined
  readonly batchWindow?: Duration.DurationInput | undefined
  readonly claimAhead?: Duration.DurationInput | undefined
}

const resolve = (options: PipelineOptions): PipelineConfig => {
  const d = defaultConfig()
  const retry = (stage: Stage) => RetryPolicy.make({ ...d.retry[stage], ...options.retry?.[stage] })
  return {
    workerId: options.workerId ?? d.workerId,
    lease: options.lease ?? d.lease,
    heartbeat: options.heartbeat ?? d.heartbeat,
    pollInterval: options.pollInterval ?? d.pollInterval,
    concurrency: { ...d.concurrency, ...options.concurrency },
    retry: { transcription: retry("transcription"), cleanup: retry("cleanup"), delivery: retry("delivery") },
    shutdownGrace: options.shutdownGrace ?? d.shutdownGrace,
    chunkSeconds: options.chunkSeconds ?? d.chunkSeconds,
    pieceConcurrency: Math.max(1, options.pieceConcurrency ?? d.pieceConcurrency),
    batchWindow: options.batchWindow ?? d.batchWindow,
    claimAhead: options.claimAhead ?? d.claimAhead
  }
}

/** The reason as the log shows it: the message plus the detail only the operator sees. */
const describeForLog = (error: StageError): string =>
  `${error._tag === "TemporaryError" ? "temporary" : "permanent"} ${error.service} error${
    error.status !== undefined ? ` (HTTP ${error.status})` : ""
  }: ${error.message}${error.detail !== undefined ? ` [detail: ${error.detail}]` : ""}`

/**
 * A readable one-line reason for the row's `last_error`, which users see:
 * the message only (never the detail), and whatever an integration let
 * through of paths, blob keys or addresses is redacted.
 */
const describe = (error: StageError): string =>
  redactInternals(`${error._tag === "TemporaryError" ? "temporary" : "permanent"} ${error.service} error${
    error.status !== undefined ? ` (HTTP ${error.status})` : ""
  }: ${error.message}`)

/**
 * Whether the workers are running (for readiness checks).
 * @since 0.1.0
 * @category tags
 */
export class PipelineStatus extends Context.Tag("@voice-journal/core/PipelineStatus")<PipelineStatus, {
  readonly running: Effect.Effect<boolean>
  /**
   * Begins the graceful stop now (what closing the layer does; idempotent),
   * so a server can drain its HTTP connections and the stages within one
   * grace period. Completes when every stage has ended or been released.
   */
  readonly shutdown: Effect.Effect<void>
}>() {}

/**
 * Runs the workers for as long as the layer is alive, and reports it as
 * `PipelineStatus`. Deliveries go through the `Destinations` in context, or,
 * without one, a registry built here with default options (the server-wide
 * Notion when a `NotionPublisher` is provided, users' webhooks and Notion
 * databases only with a `SecretBox`, no Markdown folders).
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: PipelineOptions = {}
): Layer.Layer<
  PipelineStatus,
  never,
  JournalStore | BlobStore | Transcriber | Cleaner | AudioProbe | AudioPieces.AudioPieces | WorkSignal
> =>
  Layer.scoped(
    PipelineStatus,
    Effect.gen(function*() {
      const running = yield* Ref.make(false)
      yield* Effect.addFinalizer(() => Ref.set(running, false))
      const { shutdown } = yield* run(options)
      yield* Ref.set(running, true)
      return { running: Ref.get(running), shutdown: Effect.zipRight(Ref.set(running, false), shutdown) }
    })
  )

/**
 * The workers as a scoped effect (what {@link layer} runs).
 * @since 0.1.0
 */
export const run = (options: PipelineOptions = {}) =>
  Effect.gen(function*() {
    const config = resolve(options)
    const store = yield* JournalStore
    const blobs = yield* BlobStore
    const transcriber = yield* Transcriber
    const cleaner = yield* Cleaner
    const probe = yield* AudioProbe
    const audioPieces = yield* AudioPieces.AudioPieces
    const signal = yield* WorkSignal
    const destinations = yield* Effect.serviceOption(Destinations.Destinations).pipe(
      Effect.flatMap(Option.match({ onSome: Effect.succeed, onNone: () => Destinations.make() }))
    )
    const leaseMillis = Duration.toMillis(config.lease)
    /** Completed when shutdown begins: retry backoffs end then, their rows handed back. */
    const released = yield* Deferred.make<void>()

    /**
     * Runs of each stage still working in this process, and how each frees
     * its slot: when it has finished its work and waits for its write (the
     * next rows can be claimed and worked while a batch commits), or when
     * it ends, whichever comes first. (A run whose write fails and that is
     * retried in-process works again without a slot: the concurrency limit
     * can be passed by such runs until they end.)
     */
    const working: Record<Stage, number> = { transcription: 0, cleanup: 0, delivery: 0 }
    /** Rows claimed ahead (see `claimAhead`), in claim order, by `slotOf`: leased, waiting for a slot. */
    const waiting: Record<Stage, Map<string, ClaimedJob>> = { transcription: new Map(), cleanup: new Map(), delivery: new Map() }
    /** A claim topping up `waiting` in the background, while one is in flight. */
    const topUps: Record<Stage, Fiber.RuntimeFiber<unknown> | undefined> = { transcription: undefined, cleanup: undefined, delivery: undefined }
    /** Waiters for the moment no run of a stage is working or waiting to start (the batch windows below). */
    const idleWaiters: Record<Stage, Array<Deferred.Deferred<void>>> = { transcription: [], cleanup: [], delivery: [] }
    /** Waits up to `batchWindow` for no run of `stage` to be working or waiting to start. */
    const settle = (stage: Stage) =>
      Effect.suspend(() => {
        if (working[stage] === 0 && waiting[stage].size === 0) return Effect.void
        return Effect.flatMap(Deferred.make<void>(), (idle) => {
          idleWaiters[stage].push(idle)
          return Effect.raceFirst(Effect.sleep(config.batchWindow), Deferred.await(idle))
        })
      })
    const stopWorking = (stage: Stage) =>
      Effect.suspend(() => {
        working[stage]--
        if (working[stage] > 0 || waiting[stage].size > 0) return Effect.void
        const waiters = idleWaiters[stage].splice(0)
        return Effect.forEach(waiters, (w) => Deferred.succeed(w, undefined), { discard: true })
      })
    /** The runs of each stage in their attempt, by `slotOf` (see `heartbeat`). */
    const leases: Record<Stage, Map<string, Lease>> = { transcription: new Map(), cleanup: new Map(), delivery: new Map() }
    /** Runs interrupted because their lease was lost. */
    const lost = new Set<string>()
    /** Each stage's recent run time (ms, moving average) from start to freeing its slot: how far ahead it may claim. */
    const runMillis: Record<Stage, number | undefined> = { transcription: undefined, cleanup: undefined, delivery: undefined }
    const aheadMillis = Duration.toMillis(config.claimAhead)
    /** How many rows a claim of `stage` takes beyond its free slots. */
    const claimAheadOf = (stage: Stage, slots: number) => {
      const recent = runMillis[stage]
      if (recent === undefined || aheadMillis <= 0) return 0
      return Math.min(maxAheadPerSlot * slots, Math.floor((slots * aheadMillis) / Math.max(recent, 0.001)))
    }
    /**
     * A stage's batched writes and its heartbeat never lock the same rows at
     * once: both update many of the stage's rows in one statement, in an
     * order of the database's choosing, so together they could deadlock on
     * PostgreSQL (which then aborts one — a completion, whose runs would
     * work again). The heartbeat leaves out the rows being written
     * (`inWrite`, by `slotOf`), and no write starts while a beat is in
     * flight (`beating`).
     */
    const inWrite: Record<Stage, Set<string>> = { transcription: new Set(), cleanup: new Set(), delivery: new Set() }
    const beating: Record<Stage, Deferred.Deferred<void> | undefined> = { transcription: undefined, cleanup: undefined, delivery: undefined }
    const slotReleases = new Map<string, Effect.Effect<void>>()
    const slotOf = (job: Job) => `${job.stage}/${job.id}/${job.leaseOwner}`
    const freeSlot = (job: Job) => Effect.suspend(() => slotReleases.get(slotOf(job)) ?? Effect.void)

    /**
     * Finished runs of a stage wait here for one transaction together: the
     * first waits up to `batchWindow` for the stage's runs still working
     * (or claimed ahead), less once none is, and runs that finish while
     * batches commit join the next one. Up to {@link completionWriters}
     * batches commit at once, never two with runs of one entry. A run whose
     * lease is gone fails with LeaseLost, as when written alone.
     */
    const batcher = <R>(
      stage: Stage,
      write: (results: ReadonlyArray<{ readonly job: Job; readonly result: R }>) => Effect.Effect<ReadonlyArray<boolean>, StoreError>
    ) =>
      Effect.gen(function*() {
        type Finished = { readonly job: Job; readonly result: R; readonly done: Deferred.Deferred<void, LeaseLost | StoreError> }
        const queue = yield* Queue.unbounded<Finished>()
        const writers = yield* Effect.makeSemaphore(completionWriters)
        const entriesInWrite = new Map<string, number>()
        const count = (entryIds: ReadonlyArray<string>, by: number) => {
          for (const id of entryIds) {
            const n = (entriesInWrite.get(id) ?? 0) + by
            if (n === 0) entriesInWrite.delete(id)
            else entriesInWrite.set(id, n)
          }
        }
        /** Writes one batch and tells its runs; any failure, a defect too, goes to every run of it. */
        const writeBatch = (batch: ReadonlyArray<Finished>) =>
          Effect.gen(function*() {
            const outcome = yield* Effect.exit(write(batch))
            if (Exit.isSuccess(outcome)) {
              batch.forEach((item, i) => {
                const lease = leases[stage].get(slotOf(item.job))
                if (lease !== undefined && outcome.value[i]) lease.written = true
              })
            }
            yield* Effect.forEach(batch, (item, i) =>
              Deferred.complete(
                item.done,
                Exit.isFailure(outcome)
                  ? Effect.failCause(outcome.cause)
                  : outcome.value[i]
                  ? Effect.void
                  : Effect.fail(new LeaseLost({ table: stageTables[item.job.stage].table, id: item.job.id }))
              ), { discard: true })
          })
        yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
          const first = yield* Queue.take(queue)
          yield* settle(stage)
          const batch = [first, ...Chunk.toReadonlyArray(yield* Queue.takeUpTo(queue, maxCompletionBatch - 1))]
          const entryIds = batch.map((item) => item.job.entryId)
          // a run of an entry that a batch in flight also has waits for it: all writers' permits
          const permits = entryIds.some((id) => entriesInWrite.has(id)) ? completionWriters : 1
          yield* writers.take(permits)
          while (beating[stage] !== undefined) yield* Deferred.await(beating[stage]!)
          const slots = batch.map((item) => slotOf(item.job))
          for (const slot of slots) inWrite[stage].add(slot)
          count(entryIds, 1)
          yield* Effect.fork(writeBatch(batch).pipe(
            Effect.ensuring(Effect.suspend(() => {
              for (const slot of slots) inWrite[stage].delete(slot)
              count(entryIds, -1)
              return writers.release(permits)
            }))
          ))
        })))
        return (job: Job, result: R) =>
          Effect.gen(function*() {
            const done = yield* Deferred.make<void, LeaseLost | StoreError>()
            yield* Queue.offer(queue, { job, result, done })
            // the slot is free for the next run while this one waits for its write, unless
            // a full batch already waits: then runs wait for the writes (their slot frees at the end)
            if ((yield* Queue.size(queue)) <= maxCompletionBatch) yield* freeSlot(job)
            return yield* Deferred.await(done)
          })
      })
    const completeTranscription = yield* batcher<TranscriptionResult>("transcription", (items) => store.completeTranscriptions(items))
    const completeCleanup = yield* batcher<CleanupResult>("cleanup", (items) => store.completeCleanups(items, { implicit: destinations.implicit }))

    /** A recording that fits the engine, sent as it is; one segment for all of it if the engine gives none. */
    const transcribeWhole = (entry: VoiceEntry, path: string, probed: ProbeResult) =>
      transcriber.transcribe({ path, mimeType: entry.mimeType, entryId: entry.id }).pipe(
        Effect.map((t): TranscriptionResult => {
          const durationSeconds = t.durationSeconds ?? probed.durationSeconds
          return {
            text: t.text,
            engine: t.engine,
            language: t.language,
            durationSeconds,
            segments: t.segments ?? (durationSeconds !== null ? [{ start: 0, end: durationSeconds, text: t.text }] : null)
          }
        })
      )

    /**
     * A long recording in pieces: the plan is stored once (a retry or a
     * resumed run gets the same pieces back, with the transcripts already
     * done), the unfinished pieces are cut and sent up to
     * `pieceConcurrency` at a time, each stored as it completes. After a
     * piece fails no new one starts, those in flight finish and are kept,
     * and the stage fails with the first error: its retry sends only what
     * is not done.
     */
    const transcribeInPieces = (job: Job, entry: VoiceEntry, path: string, durationSeconds: number) =>
      Effect.scoped(Effect.gen(function*() {
        const silences = yield* audioPieces.silences(path)
        const plan = AudioPieces.plan(durationSeconds, silences, {
          pieceSeconds: AudioPieces.pieceSeconds(config.chunkSeconds, transcriber.maxBytes)
        })
        const pieces = yield* store.planPieces(job, plan)
        const total = pieces.length
        const done = new Map<number, { readonly segments: ReadonlyArray<Segment>; readonly engine: string | null; readonly language: string | null }>()
        for (const p of pieces) if (p.text !== null) done.set(p.index, { segments: p.segments ?? [], engine: p.engine, language: p.language })
        yield* Effect.logInfo(`transcribing in ${total} pieces (${done.size} already done)`)
        const dir = yield* AudioPieces.temporaryDirectory(job.id)
        let failed = false
        const runPiece = (piece: (typeof pieces)[number]) =>
          Effect.scoped(Effect.gen(function*() {
            if (failed) return
            const span = { start: piece.startSeconds, end: piece.endSeconds }
            let result: PieceResult
            if (AudioPieces.isSilent(span, silences)) {
              result = { text: "", segments: [], engine: "silence", language: null }
            } else {
              const file = yield* Effect.acquireRelease(
                Effect.sync(() => `${dir}/piece-${piece.index}.mp3`),
                (f) => Effect.sync(() => fs.rmSync(f, { force: true }))
              )
              yield* audioPieces.cut(path, span, file)
              const t = yield* transcriber.transcribe({ path: file, mimeType: AudioPieces.pieceMimeType, entryId: entry.id })
              // no segments from the engine (or none for a text it did give): one for the whole piece
              const local = t.segments !== null && (t.segments.length > 0 || t.text === "")
                ? t.segments
                : [{ start: 0, end: span.end - span.start, text: t.text }]
              result = {
                text: t.text,
                segments: local.map((s) => ({ start: s.start + span.start, end: s.end + span.start, text: s.text })),
                engine: t.engine,
                language: t.language
              }
            }
            yield* store.completePiece(job, piece.index, result)
            done.set(piece.index, result)
            yield* Effect.logInfo(`piece ${piece.index + 1} of ${total} transcribed`)
          })).pipe(Effect.tapError(() => Effect.sync(() => (failed = true))), Effect.either)
        const outcomes = yield* Effect.forEach(pieces.filter((p) => !done.has(p.index)), runPiece, {
          concurrency: config.pieceConcurrency
        })
        const failure = outcomes.find(Either.isLeft)
        if (failure !== undefined) return yield* Effect.fail(failure.left)
        const stitched = AudioPieces.stitch(pieces.map((p) => ({ overlap: p.overlapSeconds, segments: done.get(p.index)!.segments })))
        const results = pieces.map((p) => done.get(p.index)!)
        return {
          text: stitched.text,
          segments: stitched.segments,
          engine: results.find((r) => r.engine !== null && r.engine !== "silence")?.engine ?? "silence",
          language: results.find((r) => r.language !== null)?.language ?? null,
          durationSeconds
        } satisfies TranscriptionResult
      }))

    /** The work of one stage. Failures are StageErrors; lost leases and vanished rows end it quietly. */
    const perform = (job: Job, entry: VoiceEntry): Effect.Effect<void, StageError | LeaseGone> => {
      switch (job.stage) {
        case "transcription":
          return Effect.gen(function*() {
            const path = yield* blobs.localPath(entry.blobKey).pipe(
              Effect.mapError((e) =>
                new TemporaryError({ service: "blob-store", message: "the recording's audio cannot be read from storage", detail: e.message, cause: e })
              )
            )
            const probed = yield* probe.probe(path)
            const limits = { chunkSeconds: config.chunkSeconds, maxBytes: transcriber.maxBytes }
            const result = AudioPieces.needsPieces({ durationSeconds: probed.durationSeconds, sizeBytes: entry.sizeBytes }, limits)
              ? yield* transcribeInPieces(job, entry, path, probed.durationSeconds!)
              : yield* transcribeWhole(entry, path, probed)
            yield* completeTranscription(job, result)
            yield* signal.notify("cleanup")
            // the local file (a downloaded copy on object storage) lives until the stage ends
          }).pipe(Effect.scoped, gone)
        case "cleanup":
          return Effect.gen(function*() {
            const cleanup = yield* store.getCleanup(job.userId, job.id as never)
            const transcription = yield* store.getTranscription(job.userId, cleanup.transcriptionId)
            // null: the built-in journal template. A queued cleanup's template cannot be deleted (deleteTemplate refuses).
            const template = cleanup.templateId === null
              ? undefined
              : yield* store.getTemplate(job.userId, cleanup.templateId).pipe(
                Effect.catchTag("NotFound", () =>
                  new PermanentError({ service: "database", message: `template ${cleanup.templateId} no longer exists` }))
              )
            const cleaned = yield* cleaner.clean(transcription.text ?? "", template)
            yield* completeCleanup(job, cleaned)
            yield* signal.notify("delivery")
          }).pipe(gone)
        case "delivery":
          return Effect.gen(function*() {
            const delivery = yield* store.getDelivery(job.userId, job.id as DeliveryId)
            const cleanup = yield* store.getCleanup(job.userId, delivery.cleanedEntryId)
            const transcription = yield* store.getTranscription(job.userId, cleanup.transcriptionId)
            const destination = yield* destinations.resolve(job.userId, delivery.destinationId)
            const { externalRef } = yield* destination.deliver(documentOf({ deliveryId: delivery.id, entry, cleanup, transcription }), {
              externalRef: delivery.externalRef,
              record: (ref) =>
                store.recordExternalRef(job, ref).pipe(
                  Effect.mapError((e) => new TemporaryError({ service: "database", message: `recording the delivery's reference: ${e.message}`, cause: e }))
                )
            }).pipe(
              // the receiver is gone for good: no more deliveries there, and the log says so
              Effect.catchTag("DestinationGone", (e) =>
                store.disableDestination(job.userId, delivery.destinationId, e.message).pipe(
                  Effect.zipRight(Effect.fail(new PermanentError({ service: e.service, status: 410, message: `${e.message}: the destination is now disabled` })))
                ))
            )
            yield* store.completeDelivery(job, externalRef)
          }).pipe(gone)
      }
    }

    // Effect's built-in tracer keeps no span, and a span per run is ~20 KB of garbage (`pnpm bench:queue`):
    // runs get one only when a tracer that collects them is installed (OpenTelemetry)
    const traced = (yield* Effect.tracer) !== builtInTracer
    /**
     * One attempt at a job, as a span in the trace of the entry's upload (so
     * one trace runs from the upload to the Notion page; when `traced`) — a
     * root span for entries stored before traces were. The entry is the one
     * the claim read.
     */
    const attemptOf = ({ entry, ...job }: ClaimedJob) =>
      !traced ? perform(job, entry) : perform(job, entry).pipe(
        Effect.withSpan(`voice-journal.${job.stage}`, {
          kind: "consumer",
          captureStackTrace: false, // where it starts is always here: no Error per run
          attributes: { "voice_journal.entry_id": entry.id, "voice_journal.job_id": job.id, "voice_journal.attempt": job.attempts },
          ...(entry.traceId !== null && entry.spanId !== null
            ? { parent: Tracer.externalSpan({ traceId: entry.traceId, spanId: entry.spanId }) }
            : { root: true })
        })
      )

    /**
     * A job's outcome could not be written (database down, lease lost): said
     * at warning, not fatal — the lease expires and the row is claimed again.
     */
    const unrecorded = (job: Job) => <E>(self: Effect.Effect<unknown, E>) =>
      Effect.catchAll(Effect.asVoid(self), (e) =>
        Effect.logWarning(`${job.stage} ${job.id}: its outcome could not be recorded; the row is retried once its lease expires`, e))

    /** Runs one claimed job to an end state, keeping its lease alive meanwhile; in a fiber of its own. */
    const process = (claimed: ClaimedJob) => {
      const { entry: _entry, ...job } = claimed
      let outcome: Metrics.StageOutcome = "completed"
      const started = performance.now()
      return Effect.gen(function*() {
        const policy = config.retry[job.stage]
        const attempt = attemptOf(claimed).pipe(
          // info, not warning: the retry policy decides what happens next, and the outcome is logged below
          Effect.tapError((e) => Effect.logInfo(`attempt failed: ${e._tag === "LeaseGone" ? "lease gone" : describeForLog(e)}`)),
          (self) =>
            RetryPolicy.retry(self, policy, Deferred.await(released), (e) =>
              e._tag === "LeaseGone" ? Effect.void : Metrics.recordRetry(job.stage, e, "in_process"))
        )
        const exit = yield* Effect.exit(attempt)
        leases[job.stage].delete(slotOf(job)) // what follows writes the outcome, fenced by the lease: no more beats needed
        yield* Effect.logDebug(`run ended: ${Exit.isSuccess(exit) ? "done" : Cause.pretty(exit.cause).split("\n")[0]}`)
        if (Exit.isSuccess(exit)) return
        const failure = Cause.failureOption(exit.cause)
        if (Option.isSome(failure)) {
          const error = failure.value
          if (error._tag === "LeaseGone") {
            outcome = "lease_lost"
            return
          }
          if (error._tag === "RetryReleased") {
            outcome = "released"
            // shutdown during a backoff sleep: due again at once, this claim not counted
            yield* Effect.logInfo(`${job.stage} ${job.id}: handed back during its retry backoff (shutdown)`)
            return yield* store.releaseLease(job).pipe(
              Effect.catchAll((e) => Effect.logWarning(`${job.stage} ${job.id}: releasing the lease failed; it expires instead`, e))
            )
          }
          if (isTemporaryError(error) && RetryPolicy.hasAttemptsLeft(policy, job.attempts)) {
            const delay = yield* RetryPolicy.durableDelay(policy, job.attempts, error.retryAfterMillis)
            const now = yield* Effect.clockWith((c) => c.currentTimeMillis)
            outcome = "retrying"
            yield* Metrics.recordRetry(job.stage, error, "durable")
            yield* Effect.logWarning(`${job.stage} ${job.id}: will retry in ${Duration.format(delay)}: ${describeForLog(error)}`)
            yield* store.failTemporarily(job, {
              error: describe(error),
              nextAttemptAt: new Date(now + Duration.toMillis(delay))
            }).pipe(unrecorded(job))
          } else {
            outcome = "failed"
            yield* Effect.logWarning(`${job.stage} ${job.id}: failed after ${job.attempts} attempt(s): ${describeForLog(error)}`)
            yield* store.failPermanently(job, { error: describe(error) }).pipe(unrecorded(job))
          }
          return
        }
        if (Cause.isInterruptedOnly(exit.cause)) return yield* Effect.interrupt
        // a defect is a bug: keep the row, retry it durably like a temporary error
        const message = Cause.pretty(exit.cause).split("\n")[0] ?? "unexpected error"
        yield* Effect.logError(`${job.stage} ${job.id}: unexpected failure`, exit.cause)
        const delay = yield* RetryPolicy.durableDelay(policy, job.attempts)
        const now = yield* Effect.clockWith((c) => c.currentTimeMillis)
        outcome = RetryPolicy.hasAttemptsLeft(policy, job.attempts) ? "retrying" : "failed"
        yield* (RetryPolicy.hasAttemptsLeft(policy, job.attempts)
          ? store.failTemporarily(job, { error: redactInternals(`internal error: ${message}`), nextAttemptAt: new Date(now + Duration.toMillis(delay)) })
          : store.failPermanently(job, { error: redactInternals(`internal error: ${message}`) })).pipe(unrecorded(job))
      }).pipe(
        Effect.onInterrupt(() => {
          if (lost.has(slotOf(job))) {
            outcome = "lease_lost"
            return Effect.void
          }
          // interrupted (shutdown past the grace period): hand the row back at once
          outcome = "interrupted"
          return store.releaseLease(job).pipe(unrecorded(job))
        }),
        // kept alive by the stage's heartbeat during its attempt
        (self) =>
          Effect.withFiberRuntime<void>((fiber) => {
            leases[job.stage].set(slotOf(job), { job, fiber, written: false })
            return Effect.ensuring(self, Effect.sync(() => {
              leases[job.stage].delete(slotOf(job))
              lost.delete(slotOf(job))
            }))
          }),
        Effect.ensuring(Effect.suspend(() => Metrics.recordStageRun(job.stage, outcome, (performance.now() - started) / 1000))),
        // the run has a fiber of its own (`start`): its annotations are set once, with nothing to restore
        // (Effect.annotateLogs would restore them at the end: ~13 KB of garbage per run, `pnpm bench:queue`)
        (self) =>
          Effect.zipRight(
            FiberRef.update(FiberRef.currentLogAnnotations, (annotations) =>
              Object.entries({ stage: job.stage, jobId: job.id, entryId: job.entryId }).reduce((all, [k, v]) => HashMap.set(all, k, v), annotations)),
            self
          )
      )
    }

    /**
     * The stage's heartbeat: every `heartbeat` period one statement renews
     * the leases of all its runs in this process; a run whose lease is lost
     * (another worker owns the row now) is interrupted, and writes nothing.
     * A database hiccup skips one beat. It runs until the layer's scope
     * closes, after the runs have ended.
     */
    const heartbeat = (stage: Stage) =>
      Effect.gen(function*() {
        const beat = yield* Deferred.make<void>()
        beating[stage] = beat // before the rows are chosen: no write starts from here on
        const held = [...leases[stage].values()].filter((lease) => !inWrite[stage].has(slotOf(lease.job)))
        const ahead = [...waiting[stage].values()]
        const renewed = yield* (held.length + ahead.length === 0
          ? Effect.succeed([])
          : store.heartbeatBatch([...held.map((lease) => lease.job), ...ahead], leaseMillis)).pipe(
            Effect.ensuring(Effect.suspend(() => {
              beating[stage] = undefined
              return Deferred.succeed(beat, undefined)
            }))
          )
        ahead.forEach((job, i) => {
          // still waiting and lost: another worker has it now (it is not started here)
          if (Option.isNone(renewed[held.length + i]!) && waiting[stage].get(slotOf(job)) === job) waiting[stage].delete(slotOf(job))
        })
        yield* Effect.forEach(held, (lease, i) => {
          // renewed; or past its attempt (its outcome is being written, fenced); or its completion was just written
          if (Option.isSome(renewed[i]!) || leases[stage].get(slotOf(lease.job)) !== lease || lease.written) return Effect.void
          lost.add(slotOf(lease.job))
          return Fiber.interruptFork(lease.fiber)
        }, { discard: true })
      }).pipe(
        Effect.catchTag("StoreError", (e) => Effect.logWarning(`${stage} heartbeat failed; the leases are renewed at the next beat`, e)),
        Effect.delay(config.heartbeat),
        Effect.forever
      )

    const stopping = yield* Ref.make(false)
    const running = yield* FiberSet.make<void, never>()

    /**
     * Starts a claimed job in `running`; its slot frees when it waits for
     * its write or ends (which also updates the stage's run time).
     */
    const start = (stage: Stage, free: Queue.Queue<void>) => (job: ClaimedJob) =>
      Effect.suspend(() => {
        working[stage]++
        const began = performance.now()
        slotReleases.set(
          slotOf(job),
          Effect.suspend(() => {
            slotReleases.delete(slotOf(job))
            const took = performance.now() - began
            const recent = runMillis[stage]
            runMillis[stage] = recent === undefined ? took : recent + (took - recent) / 8
            return Effect.zipRight(stopWorking(stage), Queue.offer(free, undefined))
          })
        )
        // (a fiber forked here would inherit uninterruptibility: give it back)
        return FiberSet.run(running, Effect.interruptible(process(job)).pipe(Effect.ensuring(freeSlot(job))))
      })

    /** Hands the rows claimed ahead back (shutdown): claimable at once elsewhere, the claim not counted. */
    const releaseWaiting = (stage: Stage) =>
      Effect.suspend(() => {
        const jobs = [...waiting[stage].values()]
        waiting[stage].clear()
        return Effect.forEach(jobs, (job) =>
          store.releaseLease(job).pipe(
            Effect.catchAll((e) => Effect.logWarning(`${stage} ${job.id}: handing back a row claimed ahead failed; its lease expires instead`, e))
          ), { discard: true })
      })

    /**
     * A stage's claimer: waits for a free slot; starts the oldest row
     * claimed ahead if there is one (and, once few are left, tops them up
     * in the background, so the slots need not wait for the next claim),
     * else claims in one `claimBatch` as many due rows as there are free
     * slots (plus `claimAhead`'s share) and starts them; waits for a signal
     * or the poll when idle.
     */
    const dispatch = (stage: Stage, slots: number) =>
      Effect.gen(function*() {
        const free = yield* Queue.bounded<void>(slots)
        yield* Queue.offerAll(free, Array.from({ length: slots }, () => undefined))
        const startJob = start(stage, free)
        let claims = 0
        /**
         * Claims up to `limit` rows, starts the first `startNow` and keeps the
         * rest waiting, in one uninterruptible step: a shutdown never strands
         * a claimed row between the two; the jobs run in `running` so
         * shutdown can wait for them, then interrupt them.
         */
        const claim = (limit: number, startNow: number) =>
          store.claimBatch(stage, { workerId: `${config.workerId}/${stage}-${claims++}`, leaseMillis, limit }).pipe(
            Effect.tap((jobs) => {
              for (const job of jobs.slice(startNow)) waiting[stage].set(slotOf(job), job)
              return Effect.forEach(jobs.slice(0, startNow), startJob, { discard: true })
            }),
            Effect.catchAll((e) => Effect.logWarning(`claiming ${stage} failed`, e).pipe(Effect.as([]))),
            Effect.uninterruptible
          )
        while (!(yield* Ref.get(stopping))) {
          yield* Queue.take(free)
          // the rows a top-up is claiming are for this slot: wait for them rather than claim again
          const pending = topUps[stage]
          if (waiting[stage].size === 0 && pending !== undefined) yield* Fiber.await(pending)
          const next = waiting[stage].values().next()
          if (!next.done) {
            waiting[stage].delete(slotOf(next.value))
            yield* Effect.uninterruptible(startJob(next.value))
            const ahead = claimAheadOf(stage, slots)
            if (topUps[stage] === undefined && ahead > 0 && waiting[stage].size < slots) {
              topUps[stage] = yield* Effect.fork(claim(ahead, 0).pipe(Effect.ensuring(Effect.sync(() => (topUps[stage] = undefined)))))
            }
            continue
          }
          yield* settle(stage) // slots freed together claim together
          const limit = 1 + (yield* Queue.takeAll(free)).length
          const wake = yield* signal.next(stage, config.pollInterval)
          const claimed = yield* claim(limit + claimAheadOf(stage, slots), limit)
          yield* Queue.offerAll(free, Array.from({ length: limit - Math.min(limit, claimed.length) }, () => undefined))
          if (claimed.length === 0) yield* wake
        }
      }).pipe(
        // a top-up still claiming ends first (it is uninterruptible), so its rows are handed back too
        Effect.ensuring(Effect.suspend(() => topUps[stage] === undefined ? Effect.void : Fiber.await(topUps[stage]!))),
        Effect.ensuring(releaseWaiting(stage))
      )

    const loops = yield* FiberSet.make<void, never>()
    for (const stage of ["transcription", "cleanup", "delivery"] as const) {
      if (config.concurrency[stage] === 0) continue
      yield* Effect.forkScoped(heartbeat(stage))
      yield* FiberSet.run(loops, dispatch(stage, config.concurrency[stage]))
    }
    yield* Effect.logInfo(`pipeline started (worker ${config.workerId})`)

    // Stop claiming, hand back the stages sleeping in a backoff, let the
    // working ones finish within the grace period, then interrupt whatever
    // is left (releasing leases). Cached: a server may begin it before the
    // scope closes; the finalizer then finds it done.
    const shutdown = yield* Effect.cached(
      Effect.gen(function*() {
        yield* Ref.set(stopping, true)
        yield* Deferred.succeed(released, undefined)
        yield* FiberSet.clear(loops) // no more claims; running jobs live on in `running`
        // interruptible inside the timeout: finalizers run uninterruptibly, and
        // an uninterruptible wait would never be cut off (notes/effect3.md)
        yield* FiberSet.awaitEmpty(running).pipe(
          Effect.interruptible,
          Effect.timeout(config.shutdownGrace),
          Effect.ignore
        )
        yield* FiberSet.clear(running)
        yield* Effect.logInfo("pipeline stopped")
      })
    )
    // registered last, so it runs first when the scope closes
    yield* Effect.addFinalizer(() => shutdown)
    return { shutdown }
  })

/** The tracer every fiber has unless one is installed (it records nothing anywhere). */
const builtInTracer = Effect.runSync(Effect.tracer)

/** At most this many rows per slot are claimed ahead (`claimAhead`). */
const maxAheadPerSlot = 8

/** At most this many finished runs are written in one transaction. */
const maxCompletionBatch = 64

/** Batches of one stage committing at once (on separate connections where the store has them). */
const completionWriters = 2

/** A run in its attempt: its job, its fiber, and whether its completion is written (its lease then ended well). */
interface Lease {
  readonly job: Job
  readonly fiber: Fiber.RuntimeFiber<void, never>
  written: boolean
}

/** The stage's row is gone or no longer ours (deleted entry, lost lease). */
class LeaseGone {
  readonly _tag = "LeaseGone"
}

/** Maps "this row is not ours any more" (lost lease, deleted entry) to LeaseGone; database errors become temporary. */
const gone = <A, E extends { readonly _tag: string }, R>(self: Effect.Effect<A, E, R>) =>
  Effect.catchAll(self, (e): Effect.Effect<never, E | LeaseGone | TemporaryError> =>
    e._tag === "StoreError"
      ? Effect.fail(new TemporaryError({ service: "database", message: (e as unknown as StoreError).message, cause: e }))
      : e._tag === "LeaseLost" || e._tag === "NotFound"
      ? Effect.fail(new LeaseGone())
      : Effect.fail(e)) as Effect.Effect<
      A,
      Exclude<E, { readonly _tag: "LeaseLost" | "NotFound" | "StoreError" }> | LeaseGone | TemporaryError,
      R
    >
