/**
 * `GET /metrics`: the server's metrics in the Prometheus text format, for a
 * scraper. What is there:
 *
 * - `voice_journal_queue_depth{stage,status}` — rows waiting or running,
 *   read from the database at each scrape (so every node reports the whole
 *   queue);
 * - `voice_journal_stage_duration_seconds{stage,outcome}` and
 *   `voice_journal_stage_retries_total{stage,service,class,when}` — from the
 *   pipeline (`@voice-journal/core` `Metrics`), this node's runs;
 * - `voice_journal_upload_bytes_total`, `voice_journal_uploads_total{result,reason}`;
 * - `voice_journal_http_request_duration_seconds{method,route,status}` — by
 *   route template (`/entries/:id`), never by raw URL.
 *
 * Effect's metric registry is bridged to OpenTelemetry's metrics SDK by
 * `@effect/opentelemetry` and written out by the Prometheus exporter's own
 * serializer. With `VJ_METRICS_TOKEN` set, a scrape needs
 * `Authorization: Bearer <token>`.
 *
 * @since 0.1.0
 */
import * as OtelMetrics from "@effect/opentelemetry/Metrics"
import * as Resource from "@effect/opentelemetry/Resource"
import {
  type HttpApp,
  HttpMiddleware,
  HttpServerError,
  HttpServerRequest,
  HttpServerResponse,
  HttpTraceContext
} from "@effect/platform"
import { PrometheusExporter, PrometheusSerializer } from "@opentelemetry/exporter-prometheus"
import { JournalStore } from "@voice-journal/core"
import { Context, Effect, Layer, Metric, MetricBoundaries, MetricLabel, Option, Redacted } from "effect"
import * as crypto from "node:crypto"
import { redactUrl } from "./RequestLog.js"

const requestDuration = Metric.histogram(
  "voice_journal_http_request_duration_seconds",
  MetricBoundaries.exponential({ start: 0.001, factor: 3, count: 12 }),
  "Seconds from request to response, by method, route template and status"
)

const uploadBytes = Metric.counter("voice_journal_upload_bytes", {
  description: "Bytes of accepted uploads",
  incremental: true
})

const uploads = Metric.counter("voice_journal_uploads", {
  description: "Uploads by result (accepted, rejected) and the rejection's reason (the error code answered)",
  incremental: true
})

const queueDepth = Metric.gauge("voice_journal_queue_depth", {
  description: "Stage rows waiting (pending, retrying) or running (processing), all users, read at the scrape"
})

const queueStatuses = ["pending", "retrying", "processing"] as const

/** Counts an accepted upload and its bytes. @since 0.1.0 */
export const uploadAccepted = (sizeBytes: number) =>
  Effect.zipRight(
    Metric.incrementBy(uploadBytes, sizeBytes),
    Metric.increment(Metric.taggedWithLabels(uploads, [MetricLabel.make("result", "accepted"), MetricLabel.make("reason", "")]))
  )

/** Counts a rejected upload by its error code (`payload_too_large`, `unsupported_media_type`, …). @since 0.1.0 */
export const uploadRejected = (reason: string) =>
  Metric.increment(Metric.taggedWithLabels(uploads, [MetricLabel.make("result", "rejected"), MetricLabel.make("reason", reason)]))

/**
 * The server span of each request, and its latency metric. It replaces the
 * platform's own tracer span, which records the full URL with its query
 * (`?api_key=…`): this one records the URL redacted (`RequestLog.redactUrl`);
 * the server turns the platform's off ({@link withoutPlatformSpans}).
 * The router writes the matched route template on the current span
 * (`http.route`), which gives the metric its `route` label; a request that
 * matched no route is `route="unmatched"`.
 * @since 0.1.0
 */
export const observeRequests: <E, R>(httpApp: HttpApp.Default<E, R>) => HttpApp.Default<E, R> = HttpMiddleware.make(
  (httpApp) =>
    Effect.withFiberRuntime((fiber) => {
      const request = Context.unsafeGet(fiber.currentContext, HttpServerRequest.HttpServerRequest)
      const started = performance.now()
      return Effect.useSpan(`http.server ${request.method}`, {
        parent: Option.getOrUndefined(HttpTraceContext.fromHeaders(request.headers)),
        kind: "server",
        captureStackTrace: false
      }, (span) => {
        span.attribute("http.request.method", request.method)
        span.attribute("url.path", redactUrl(request.url))
        return Effect.withParentSpan(httpApp, span).pipe(
          Effect.exit,
          Effect.flatMap((exit) => {
            const status = exit._tag === "Success" ? exit.value.status : HttpServerError.causeResponseStripped(exit.cause)[0].status
            span.attribute("http.response.status_code", status)
            const route = span.attributes.get("http.route")
            return Metric.update(
              Metric.taggedWithLabels(requestDuration, [
                MetricLabel.make("method", request.method),
                MetricLabel.make("route", typeof route === "string" ? route : "unmatched"),
                MetricLabel.make("status", String(status))
              ]),
              (performance.now() - started) / 1000
            ).pipe(Effect.zipRight(exit))
          })
        )
      })
    })
)

/**
 * Turns off the platform's request span (it runs outside every middleware
 * and would record the raw URL): {@link observeRequests} makes the span.
 * @since 0.1.0
 */
export const withoutPlatformSpans = HttpMiddleware.withTracerDisabledWhen(() => true)

/**
 * Serves scrapes; needs the bridge ({@link layer}) to be running.
 * @since 0.1.0
 */
export class Scrape extends Context.Tag("@voice-journal/http-server/Metrics/Scrape")<Scrape, {
  /** The exposition text, or `Unauthorized` when a token is configured and the request lacks it. */
  readonly render: (authorization: string | undefined) => Effect.Effect<string, "Unauthorized">
}>() {}

/**
 * The bridge from Effect's metric registry to a Prometheus exporter (no
 * listener of its own: scrapes come through `GET /metrics`).
 * @since 0.1.0
 */
export const layer = (options: { readonly token: Option.Option<Redacted.Redacted<string>> }): Layer.Layer<
  Scrape,
  never,
  JournalStore.JournalStore
> => {
  const exporter = new PrometheusExporter({ preventServerStart: true })
  // no target_info / otel_scope_info series: one process, one scope
  const serializer = new PrometheusSerializer(undefined, false, undefined, true, true)
  const bridge = OtelMetrics.layer(() => exporter).pipe(Layer.provide(Resource.layer({ serviceName: "voice-journal" })))
  const scrape = Layer.effect(
    Scrape,
    Effect.gen(function*() {
      const store = yield* JournalStore.JournalStore
      const expected = Option.map(options.token, (t) => crypto.createHash("sha256").update(Redacted.value(t)).digest())
      const authorized = (header: string | undefined) =>
        Option.match(expected, {
          onNone: () => true,
          onSome: (want) => {
            const match = /^[ \t]*bearer[ \t]+(\S+)[ \t]*$/i.exec(header ?? "")
            return match !== null && crypto.timingSafeEqual(crypto.createHash("sha256").update(match[1]!).digest(), want)
          }
        })
      return Scrape.of({
        render: (authorization) =>
          Effect.gen(function*() {
            if (!authorized(authorization)) return yield* Effect.fail("Unauthorized" as const)
            // the queue is the database's: a failing read leaves the gauges as they were and says so
            // every stage × status is set, 0 when absent: a gauge keeps its last value otherwise
            yield* store.queueDepth.pipe(
              Effect.flatMap((rows) =>
                Effect.forEach(Object.keys(JournalStore.stageTables), (stage) =>
                  Effect.forEach(queueStatuses, (status) =>
                    Metric.set(
                      Metric.taggedWithLabels(queueDepth, [MetricLabel.make("stage", stage), MetricLabel.make("status", status)]),
                      rows.find((r) => r.stage === stage && r.status === status)?.rows ?? 0
                    )))
              ),
              Effect.catchAll((e) => Effect.logWarning("metrics: the queue depth could not be read", e))
            )
            const { errors, resourceMetrics } = yield* Effect.promise(() => exporter.collect())
            for (const error of errors) yield* Effect.logWarning("metrics: collecting failed", error)
            return serializer.serialize(resourceMetrics)
          })
      })
    })
  )
  return Layer.merge(scrape, bridge)
}

/**
 * The handler body for `GET /metrics`.
 * @since 0.1.0
 */
export const respond = (request: HttpServerRequest.HttpServerRequest) =>
  Effect.flatMap(Scrape, (s) => s.render(request.headers["authorization"])).pipe(
    Effect.map((text) => HttpServerResponse.text(text, { contentType: "text/plain; version=0.0.4; charset=utf-8" })),
    Effect.catchAll(() =>
      Effect.succeed(HttpServerResponse.unsafeJson(
        { error: "unauthorized", message: "metrics need Authorization: Bearer <VJ_METRICS_TOKEN>" },
        { status: 401 }
      ))
    )
  )
