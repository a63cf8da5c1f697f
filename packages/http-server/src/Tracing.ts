/**
 * Traces over OTLP/HTTP (JSON) when `OTEL_EXPORTER_OTLP_ENDPOINT` is set,
 * with `@effect/opentelemetry`'s exporter on Effect's own tracer — no
 * OpenTelemetry SDK to set up. What a trace holds: the request's server span
 * (`Metrics.observeRequests`: method, route, status, the URL with its query
 * redacted; joined to a caller's `traceparent`), the upload's spans, and —
 * in the same trace, because the entry stores its upload's trace and span
 * ids — one span per attempt of each stage (`voice-journal.transcription`,
 * `.cleanup`, `.delivery`), with the transcriber's HTTP calls inside. The
 * entry's `traceId` is in its API answer.
 *
 * Without the variable, spans stay in-process (Effect's native tracer): the
 * entry still records its trace id, which the logs carry too.
 *
 * @since 0.1.0
 */
import * as OtlpSerialization from "@effect/opentelemetry/OtlpSerialization"
import * as OtlpTracer from "@effect/opentelemetry/OtlpTracer"
import { FetchHttpClient } from "@effect/platform"
import { Layer } from "effect"
import type { ServerConfig } from "./Config.js"

/**
 * The exporter for `config.otlp`, or nothing. Spans are sent in batches
 * every second and flushed at shutdown (within 3 s: an unreachable collector
 * does not hold the shutdown).
 * @since 0.1.0
 */
export const layer = (otlp: ServerConfig["otlp"]): Layer.Layer<never> =>
  otlp === undefined ? Layer.empty : OtlpTracer.layer({
    url: `${otlp.endpoint}/v1/traces`,
    resource: { serviceName: otlp.serviceName },
    exportInterval: "1 second",
    shutdownTimeout: "3 seconds"
  }).pipe(Layer.provide(OtlpSerialization.layerJson), Layer.provide(FetchHttpClient.layer))
