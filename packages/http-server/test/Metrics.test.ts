/**
 * `GET /metrics` on the real server: what a Prometheus scrape reads after
 * real uploads run through the real pipeline (loopback engines). Effect's
 * metric registry is per process and the tests of this file share one, so
 * counters are compared before and after (deltas).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option, Redacted } from "effect"
import * as FakeOpenAi from "../../core/test/support/FakeOpenAiTranscription.js"
import { audioBytes } from "../../core/test/support/Audio.js"
import { call, type Running, start, waitFor } from "./support/TestServer.js"

/** Parses the exposition text into `name{labels}` → value (labels as written, in order). */
const parse = (text: string): Map<string, number> => {
  const samples = new Map<string, number>()
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue
    const space = line.lastIndexOf(" ")
    samples.set(line.slice(0, space), Number(line.slice(space + 1)))
  }
  return samples
}

const scrape = (s: Running, headers: Record<string, string> = {}) =>
  Effect.promise(async () => {
    const res = await fetch(`${s.url}/metrics`, { headers })
    return { status: res.status, contentType: res.headers.get("content-type"), text: await res.text() }
  })

const samples = (s: Running) =>
  Effect.flatMap(scrape(s), (r) => {
    expect(r.status).toBe(200)
    return Effect.succeed(parse(r.text))
  })

const value = (m: Map<string, number>, series: string) => m.get(series) ?? 0

const upload = (s: Running, key: string, bytes: Uint8Array) =>
  call(s.url, key, "/entries", { method: "POST", body: bytes, headers: { "content-type": "application/octet-stream" } })

describe("GET /metrics", () => {
  it.scopedLive("reports stage runs by outcome, uploads and rejections, HTTP latency by route template, and the queue", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const before = yield* samples(s)
      const wav = audioBytes("wav")
      const accepted = yield* upload(s, key, wav)
      expect(accepted.status).toBe(201)
      const id = accepted.body.id as string
      const rejected = yield* upload(s, key, new TextEncoder().encode("not audio at all, just words"))
      expect(rejected.status).toBe(415)
      yield* waitFor(async () => {
        const entry = await (await fetch(`${s.url}/entries/${id}`, { headers: { authorization: `Bearer ${key}` } })).json() as any
        return entry.notionSync?.status === "success" ? entry : undefined
      })
      const res = yield* scrape(s)
      expect(res.contentType).toMatch(/^text\/plain; version=0\.0\.4/)
      const after = parse(res.text)
      const delta = (series: string) => value(after, series) - value(before, series)
      for (const stage of ["transcription", "cleanup", "delivery"]) {
        expect(delta(`voice_journal_stage_duration_seconds_count{stage="${stage}",outcome="completed"}`)).toBe(1)
        // every run lands in the +Inf bucket
        expect(delta(`voice_journal_stage_duration_seconds_bucket{stage="${stage}",outcome="completed",le="+Inf"}`)).toBe(1)
      }
      expect(delta("voice_journal_upload_bytes_total")).toBe(wav.byteLength)
      expect(delta(`voice_journal_uploads_total{result="accepted",reason=""}`)).toBe(1)
      expect(delta(`voice_journal_uploads_total{result="rejected",reason="unsupported_media_type"}`)).toBe(1)
      // routes by template: the entry's id never becomes a label
      expect(delta(`voice_journal_http_request_duration_seconds_count{method="POST",route="/entries",status="201"}`)).toBe(1)
      expect(delta(`voice_journal_http_request_duration_seconds_count{method="POST",route="/entries",status="415"}`)).toBe(1)
      expect(value(after, `voice_journal_http_request_duration_seconds_count{method="GET",route="/entries/:id",status="200"}`))
        .toBeGreaterThan(0)
      expect(res.text).not.toContain(id)
      // the queue is empty again, and every stage × status is reported (0, not absent)
      for (const stage of ["transcription", "cleanup", "delivery"]) {
        for (const status of ["pending", "retrying", "processing"]) {
          expect(after.get(`voice_journal_queue_depth{stage="${stage}",status="${status}"}`)).toBe(0)
        }
      }
    }))

  it.scopedLive("a failing engine: retries by service, class and when; the row counted as retrying in the queue", () =>
    Effect.gen(function*() {
      const engine = yield* FakeOpenAi.make()
      engine.failNext({ kind: "status", status: 503 }, 1000)
      const s = yield* start({ transcription: { kind: "openai", url: engine.url, apiKey: Option.none(), model: "whisper-1" } })
      const key = yield* s.key("alice")
      const before = yield* samples(s)
      const uploaded = yield* upload(s, key, audioBytes("wav"))
      expect(uploaded.status).toBe(201)
      yield* waitFor(async () => {
        const entry = await (await fetch(`${s.url}/entries/${uploaded.body.id}`, { headers: { authorization: `Bearer ${key}` } })).json() as any
        return entry.transcription?.status === "retrying" ? entry : undefined
      })
      const after = yield* samples(s)
      const delta = (series: string) => value(after, series) - value(before, series)
      expect(after.get(`voice_journal_queue_depth{stage="transcription",status="retrying"}`)).toBe(1)
      expect(delta(`voice_journal_stage_duration_seconds_count{stage="transcription",outcome="retrying"}`)).toBe(1)
      const retries = (when: string) =>
        delta(`voice_journal_stage_retries_total{stage="transcription",service="transcriber",class="server_error",when="${when}"}`)
      // the in-process backoff retried (requests after the first), then the row went back to the queue once
      expect(retries("in_process")).toBe(engine.requests.length - 1)
      expect(retries("in_process")).toBeGreaterThan(0)
      expect(retries("durable")).toBe(1)
    }))

  it.scopedLive("with VJ_METRICS_TOKEN a scrape needs that bearer token (any case of the scheme); without, no key is needed", () =>
    Effect.gen(function*() {
      const open = yield* start()
      expect((yield* scrape(open)).status).toBe(200)
      const s = yield* start({ metricsToken: Option.some(Redacted.make("scrape-secret")) })
      const key = yield* s.key("alice")
      const refused = yield* scrape(s)
      expect(refused.status).toBe(401)
      expect(refused.text).not.toContain("scrape-secret")
      // an API key is not the metrics token
      expect((yield* scrape(s, { authorization: `Bearer ${key}` })).status).toBe(401)
      expect((yield* scrape(s, { authorization: "Bearer scrape-secre" })).status).toBe(401)
      const ok = yield* scrape(s, { authorization: "bearer   scrape-secret" })
      expect(ok.status).toBe(200)
      expect(ok.text).toContain("voice_journal_queue_depth")
    }))
})
