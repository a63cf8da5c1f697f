/**
 * What the pipeline measures, as Effect `Metric`s. They live in Effect's
 * metric registry; the bundled server exposes them (with its own HTTP and
 * upload metrics and the queue depth) at `GET /metrics` in Prometheus
 * format. A service that embeds the library can export the same registry
 * with `@effect/opentelemetry`'s `Metrics.layer`.
 *
 * @since 0.1.0
 */
import { Metric, MetricBoundaries, MetricLabel } from "effect"
import type { Stage } from "./Domain.js"
import type { StageError } from "./Errors.js"

/**
 * How a claimed stage run ended: `completed`; `retrying` (failed
 * temporarily, due again later); `failed` (for good); `released` (handed
 * back at shutdown); `lease_lost` (another worker owns the row, or the entry
 * was deleted); `interrupted` (cut off past the shutdown grace).
 * @since 0.1.0
 */
export type StageOutcome = "completed" | "retrying" | "failed" | "released" | "lease_lost" | "interrupted"

/**
 * Seconds per claimed stage run, by `stage` and `outcome` (its count per
 * outcome is the outcome counter). Buckets from 10 ms to ~45 min: a cleanup
 * takes seconds, an hour of audio many minutes.
 * @since 0.1.0
 */
export const stageDuration = Metric.histogram(
  "voice_journal_stage_duration_seconds",
  MetricBoundaries.exponential({ start: 0.01, factor: 2.5, count: 14 }),
  "Seconds per claimed stage run, by stage and outcome"
)

/** @since 0.1.0 */
export const recordStageRun = (stage: Stage, outcome: StageOutcome, seconds: number) => {
  // one tagged histogram per (stage, outcome), made once: tagging hashes its labels, on every run otherwise
  const key = `${stage}/${outcome}`
  let histogram = stageDurations.get(key)
  if (histogram === undefined) {
    histogram = Metric.taggedWithLabels(stageDuration, [MetricLabel.make("stage", stage), MetricLabel.make("outcome", outcome)])
    stageDurations.set(key, histogram)
  }
  return Metric.update(histogram, seconds)
}

const stageDurations = new Map<string, typeof stageDuration>()

/**
 * Retries of a failed attempt, by `stage`, the failing `service`, the
 * error's `class` (`rate_limited`: 429 or a Retry-After; `server_error`:
 * 5xx; `unavailable`: anything else temporary — refused, timed out, model
 * loading) and `when` (`in_process` within the run's backoff, or `durable`:
 * the row goes back to `retrying`).
 * @since 0.1.0
 */
export const stageRetries = Metric.counter("voice_journal_stage_retries", {
  description: "Retries of failed stage attempts, by stage, service, error class and when",
  incremental: true
})

/** The retry class of a temporary error (see {@link stageRetries}). @since 0.1.0 */
export const retryClass = (error: StageError): "rate_limited" | "server_error" | "unavailable" =>
  error.status === 429 || (error._tag === "TemporaryError" && error.retryAfterMillis !== undefined)
    ? "rate_limited"
    : error.status !== undefined && error.status >= 500
    ? "server_error"
    : "unavailable"

/** @since 0.1.0 */
export const recordRetry = (stage: Stage, error: StageError, when: "in_process" | "durable") =>
  Metric.increment(Metric.taggedWithLabels(stageRetries, [
    MetricLabel.make("stage", stage),
    MetricLabel.make("service", error.service),
    MetricLabel.make("class", retryClass(error)),
    MetricLabel.make("when", when)
  ]))
