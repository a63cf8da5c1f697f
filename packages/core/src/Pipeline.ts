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
 *   process resumes them at once.
 *
 * @since 0.1.0
 */
import { Cause, Context, Deferred, Duration, Effect, Exit, Fiber, FiberSet, Layer, Option, Ref } from "effect"
import * as os from "node:os"
import { AudioProbe } from "./AudioProbe.js"
import { BlobStore } from "./BlobStore.js"
import { Cleaner } from "./Cleaner.js"
import { documentOf } from "./Destination.js"
import * as Destinations from "./Destinations.js"
import type { DeliveryId, Job, Stage } from "./Domain.js"
import { isTemporaryError, PermanentError, redactInternals, type StageError, type StoreError, TemporaryError } from "./Errors.js"
import { JournalStore } from "./JournalStore.js"
import * as RetryPolicy from "./RetryPolicy.js"
import { Transcriber } from "./Transcriber.js"
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
}

/** @since 0.1.0 */
export const defaultConfig = (): PipelineConfig => ({
  workerId: `${os.hostname()}-${process.pid}-${globalThis.crypto.randomUUID().slice(0, 8)}`,
  lease: "30 seconds",
  heartbeat: "10 seconds",
  pollInterval: "1 second",
  concurrency: { transcription: 2, cleanup: 2, delivery: 2 },
  retry: { transcription: RetryPolicy.defaults, cleanup: RetryPolicy.defaults, delivery: RetryPolicy.defaults },
  shutdownGrace: "30 seconds"
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
    shutdownGrace: options.shutdownGrace ?? d.shutdownGrace
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
): Layer.Layer<PipelineStatus, never, JournalStore | BlobStore | Transcriber | Cleaner | AudioProbe | WorkSignal> =>
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
    const signal = yield* WorkSignal
    const destinations = yield* Effect.serviceOption(Destinations.Destinations).pipe(
      Effect.flatMap(Option.match({ onSome: Effect.succeed, onNone: () => Destinations.make() }))
    )
    const leaseMillis = Duration.toMillis(config.lease)
    /** Completed when shutdown begins: retry backoffs end then, their rows handed back. */
    const released = yield* Deferred.make<void>()

    /** The work of one stage. Failures are StageErrors; lost leases and vanished rows end it quietly. */
    const perform = (job: Job): Effect.Effect<void, StageError | LeaseGone> => {
      switch (job.stage) {
        case "transcription":
          return Effect.gen(function*() {
            const entry = yield* store.getEntry(job.userId, job.entryId)
            const path = yield* blobs.localPath(entry.blobKey).pipe(
              Effect.mapError((e) =>
                new TemporaryError({ service: "blob-store", message: "the recording's audio cannot be read from storage", detail: e.message, cause: e })
              )
            )
            const probed = yield* probe.probe(path)
            const transcript = yield* transcriber.transcribe({ path, mimeType: entry.mimeType, entryId: entry.id })
            yield* store.completeTranscription(job, {
              text: transcript.text,
              engine: transcript.engine,
              language: transcript.language,
              durationSeconds: transcript.durationSeconds ?? probed.durationSeconds
            })
            yield* signal.notify("cleanup")
          }).pipe(gone)
        case "cleanup":
          return Effect.gen(function*() {
            const cleanup = yield* store.getCleanup(job.userId, job.id as never)
            const transcription = yield* store.getTranscription(job.userId, cleanup.transcriptionId)
            const cleaned = yield* cleaner.clean(transcription.text ?? "")
            yield* store.completeCleanup(job, cleaned, { implicit: destinations.implicit })
            yield* signal.notify("delivery")
          }).pipe(gone)
        case "delivery":
          return Effect.gen(function*() {
            const delivery = yield* store.getDelivery(job.userId, job.id as DeliveryId)
            const cleanup = yield* store.getCleanup(job.userId, delivery.cleanedEntryId)
            const transcription = yield* store.getTranscription(job.userId, cleanup.transcriptionId)
            const entry = yield* store.getEntry(job.userId, job.entryId)
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

    /**
     * A job's outcome could not be written (database down, lease lost): said
     * at warning, not fatal — the lease expires and the row is claimed again.
     */
    const unrecorded = (job: Job) => <E>(self: Effect.Effect<unknown, E>) =>
      Effect.catchAll(Effect.asVoid(self), (e) =>
        Effect.logWarning(`${job.stage} ${job.id}: its outcome could not be recorded; the row is retried once its lease expires`, e))

    /** Runs one claimed job to an end state, keeping its lease alive meanwhile. */
    const process = (job: Job) =>
      Effect.gen(function*() {
        const policy = config.retry[job.stage]
        const attempt = perform(job).pipe(
          // info, not warning: the retry policy decides what happens next, and the outcome is logged below
          Effect.tapError((e) => Effect.logInfo(`attempt failed: ${e._tag === "LeaseGone" ? "lease gone" : describeForLog(e)}`)),
          (self) => RetryPolicy.retry(self, policy, Deferred.await(released))
        )
        // a database hiccup skips one beat; only a lost lease stops the stage
        const beat = store.heartbeat(job, leaseMillis).pipe(
          Effect.asVoid,
          Effect.catchTag("StoreError", (e) => Effect.logWarning("heartbeat failed", e))
        )
        const heartbeat = beat.pipe(Effect.delay(config.heartbeat), Effect.forever)
        // the heartbeat ends the stage if the lease is lost (another worker owns the row now)
        const exit = yield* Effect.raceFirst(
          attempt,
          heartbeat.pipe(Effect.mapError(() => new LeaseGone()))
        ).pipe(Effect.exit)
        yield* Effect.logDebug(`run ended: ${Exit.isSuccess(exit) ? "done" : Cause.pretty(exit.cause).split("\n")[0]}`)
        if (Exit.isSuccess(exit)) return
        const failure = Cause.failureOption(exit.cause)
        if (Option.isSome(failure)) {
          const error = failure.value
          if (error._tag === "LeaseGone") return
          if (error._tag === "RetryReleased") {
            // shutdown during a backoff sleep: due again at once, this claim not counted
            yield* Effect.logInfo(`${job.stage} ${job.id}: handed back during its retry backoff (shutdown)`)
            return yield* store.releaseLease(job).pipe(
              Effect.catchAll((e) => Effect.logWarning(`${job.stage} ${job.id}: releasing the lease failed; it expires instead`, e))
            )
          }
          if (isTemporaryError(error) && RetryPolicy.hasAttemptsLeft(policy, job.attempts)) {
            const delay = yield* RetryPolicy.durableDelay(policy, job.attempts, error.retryAfterMillis)
            const now = yield* Effect.clockWith((c) => c.currentTimeMillis)
            yield* Effect.logWarning(`${job.stage} ${job.id}: will retry in ${Duration.format(delay)}: ${describeForLog(error)}`)
            yield* store.failTemporarily(job, {
              error: describe(error),
              nextAttemptAt: new Date(now + Duration.toMillis(delay))
            }).pipe(unrecorded(job))
          } else {
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
        yield* (RetryPolicy.hasAttemptsLeft(policy, job.attempts)
          ? store.failTemporarily(job, { error: redactInternals(`internal error: ${message}`), nextAttemptAt: new Date(now + Duration.toMillis(delay)) })
          : store.failPermanently(job, { error: redactInternals(`internal error: ${message}`) })).pipe(unrecorded(job))
      }).pipe(
        // interrupted (shutdown past the grace period): hand the row back at once
        Effect.onInterrupt(() => store.releaseLease(job).pipe(unrecorded(job))),
        Effect.annotateLogs({ stage: job.stage, jobId: job.id, entryId: job.entryId })
      )

    const stopping = yield* Ref.make(false)
    const running = yield* FiberSet.make<void, never>()

    /** One worker fiber: claim, run, repeat; wait for a signal or the poll when idle. */
    const loop = (stage: Stage, n: number) =>
      Effect.gen(function*() {
        const workerId = `${config.workerId}/${stage}-${n}`
        while (!(yield* Ref.get(stopping))) {
          const wake = yield* signal.next(stage, config.pollInterval)
          // claim and hand over in one uninterruptible step: a shutdown never
          // strands a claimed row between the two; the job runs in `running`
          // so shutdown can wait for it, then interrupt it
          const fiber = yield* store.claimNext(stage, { workerId, leaseMillis }).pipe(
            Effect.flatMap(Option.match({
              onNone: () => Effect.succeed(Option.none()),
              // (a fiber forked here would inherit uninterruptibility: give it back)
              onSome: (job) => Effect.map(FiberSet.run(running, Effect.interruptible(process(job))), Option.some)
            })),
            Effect.catchAll((e) => Effect.logWarning(`claiming ${stage} failed`, e).pipe(Effect.as(Option.none()))),
            Effect.uninterruptible
          )
          if (Option.isNone(fiber)) {
            yield* wake
            continue
          }
          yield* Fiber.await(fiber.value)
        }
      })

    const loops = yield* FiberSet.make<void, never>()
    for (const stage of ["transcription", "cleanup", "delivery"] as const) {
      for (let n = 0; n < config.concurrency[stage]; n++) {
        yield* FiberSet.run(loops, loop(stage, n))
      }
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
