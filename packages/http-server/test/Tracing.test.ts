/**
 * Traces on the real server, exported over OTLP/HTTP to a loopback
 * collector that records what it is sent: one trace from the upload to the
 * Notion page, a caller's `traceparent` honoured, and no secret (API key,
 * query values) in any span.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as http from "node:http"
import { readBody } from "../../core/test/support/Faults.js"
import { audioBytes } from "../../core/test/support/Audio.js"
import { call, type Running, start, waitFor } from "./support/TestServer.js"

interface ExportedSpan {
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId?: string
  readonly name: string
  readonly attributes: ReadonlyArray<{ readonly key: string; readonly value: Record<string, unknown> }>
}

/** A loopback OTLP/HTTP collector: keeps every span posted to /v1/traces, and the raw bodies. */
const collector = Effect.acquireRelease(
  Effect.async<{ url: string; spans: Array<ExportedSpan>; bodies: Array<string>; server: http.Server }>((resume) => {
    const spans: Array<ExportedSpan> = []
    const bodies: Array<string> = []
    const server = http.createServer(async (req, res) => {
      const body = (await readBody(req)).toString("utf8")
      if (req.method !== "POST" || req.url !== "/v1/traces" || !/json/.test(req.headers["content-type"] ?? "")) {
        res.writeHead(404).end()
        return
      }
      bodies.push(body)
      for (const rs of JSON.parse(body).resourceSpans ?? []) {
        for (const ss of rs.scopeSpans ?? []) spans.push(...(ss.spans ?? []))
      }
      res.writeHead(200, { "content-type": "application/json" }).end("{}")
    })
    server.listen(0, "127.0.0.1", () => {
      const address = server.address() as { port: number }
      resume(Effect.succeed({ url: `http://127.0.0.1:${address.port}`, spans, bodies, server }))
    })
  }),
  ({ server }) =>
    Effect.async<void>((resume) => {
      server.close(() => resume(Effect.void))
    })
)

const entryOf = (s: Running, key: string, id: string) =>
  Effect.promise(async () =>
    (await fetch(`${s.url}/entries/${id}`, { headers: { authorization: `Bearer ${key}` } })).json() as Promise<any>
  )

const attribute = (span: ExportedSpan, key: string) => {
  const value = span.attributes.find((a) => a.key === key)?.value
  return value === undefined ? undefined : Object.values(value)[0]
}

describe("traces (OTEL_EXPORTER_OTLP_ENDPOINT)", () => {
  it.scopedLive("one trace from the upload to the Notion page: the stage spans join the upload's trace, stored with the entry", () =>
    Effect.gen(function*() {
      const otlp = yield* collector
      const s = yield* start({ otlp: { endpoint: otlp.url, serviceName: "voice-journal-test" } })
      const key = yield* s.key("alice")
      const uploaded = yield* call(s.url, key, "/entries?source=phone-secret-value", {
        method: "POST",
        body: audioBytes("wav"),
        headers: { "content-type": "audio/wav" }
      })
      expect(uploaded.status).toBe(201)
      const id = uploaded.body.id as string
      const traceId = uploaded.body.traceId as string
      expect(traceId).toMatch(/^[0-9a-f]{32}$/)
      yield* waitFor(async () => {
        const entry = await Effect.runPromise(entryOf(s, key, id))
        return entry.notionSync?.status === "success" ? entry : undefined
      })
      const spans = yield* waitFor(async () => {
        const names = new Set(otlp.spans.filter((x) => x.traceId === traceId).map((x) => x.name))
        return ["voice-journal.transcription", "voice-journal.cleanup", "voice-journal.delivery"].every((n) => names.has(n))
          ? otlp.spans.filter((x) => x.traceId === traceId)
          : undefined
      })
      // the request's server span is the root; it carries the route template and the status
      const server = spans.find((x) => x.name === "http.server POST")!
      expect(server).toBeDefined()
      expect(server.parentSpanId ?? "").toBe("")
      expect(attribute(server, "http.route")).toBe("/entries")
      expect(attribute(server, "http.response.status_code")).toBe(201)
      // each stage span hangs under the upload's span, and names the entry
      const byId = new Map(spans.map((x) => [x.spanId, x]))
      for (const stage of ["transcription", "cleanup", "delivery"]) {
        const span = spans.find((x) => x.name === `voice-journal.${stage}`)!
        expect(attribute(span, "voice_journal.entry_id")).toBe(id)
        // walk up to the root: it is the upload's server span
        let up: ExportedSpan | undefined = span
        while (up?.parentSpanId) up = byId.get(up.parentSpanId)
        expect(up?.spanId).toBe(server.spanId)
      }
      // nothing secret was exported: not the key, not the query's value
      const exported = otlp.bodies.join("\n")
      expect(exported).not.toContain(key)
      expect(exported).not.toContain("phone-secret-value")
      expect(attribute(server, "url.path")).toBe("/entries?source=REDACTED")
    }))

  it.scopedLive("a caller's traceparent is honoured: the entry joins the caller's trace", () =>
    Effect.gen(function*() {
      const otlp = yield* collector
      const s = yield* start({ otlp: { endpoint: otlp.url, serviceName: "voice-journal-test" } })
      const key = yield* s.key("alice")
      const callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
      const callerSpan = "00f067aa0ba902b7"
      const uploaded = yield* call(s.url, key, "/entries", {
        method: "POST",
        body: audioBytes("wav"),
        headers: { "content-type": "audio/wav", traceparent: `00-${callerTrace}-${callerSpan}-01` }
      })
      expect(uploaded.status).toBe(201)
      expect(uploaded.body.traceId).toBe(callerTrace)
      const server = yield* waitFor(async () => otlp.spans.find((x) => x.traceId === callerTrace && x.name === "http.server POST"))
      expect(server.parentSpanId).toBe(callerSpan)
      yield* waitFor(async () => otlp.spans.find((x) => x.traceId === callerTrace && x.name === "voice-journal.transcription"))
    }))
})
