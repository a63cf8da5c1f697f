import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { Cleaner, layerOllama, type OllamaCleanerConfig, splitForContext } from "../src/Cleaner.js"
import type { Fault } from "./support/Faults.js"
import * as FakeOllama from "./support/FakeOllama.js"

const clean = (config: OllamaCleanerConfig, transcript: string) =>
  Effect.flatMap(Cleaner, (c) => c.clean(transcript)).pipe(Effect.provide(layerOllama(config)))

describe("Cleaner (Ollama, official client against a loopback Ollama)", () => {
  it.scopedLive("cleans a transcript, returns a title, always sends num_ctx and the JSON format", () =>
    Effect.gen(function*() {
      const ollama = yield* FakeOllama.make()
      const result = yield* clean({ host: ollama.url, model: "llama3.2", numCtx: 4096 }, "hello world this is a test  of the journal")
      expect(result).toEqual({ title: "Hello world this is", text: "Hello world this is a test of the journal.", model: "llama3.2" })
      const [request] = ollama.requests
      expect(request!.numCtx).toBe(4096)
      expect(request!.stream).toBe(false)
      expect(request!.format).toMatchObject({ type: "object", required: ["title", "text"] })
      expect(request!.systemPrompt).toContain("never drop content")
    }))

  it.scopedLive("a configured system prompt and options are used", () =>
    Effect.gen(function*() {
      const ollama = yield* FakeOllama.make()
      yield* clean({ host: ollama.url, model: "llama3.2", systemPrompt: "Be brief. Answer JSON." }, "some words")
      expect(ollama.requests[0]!.systemPrompt).toBe("Be brief. Answer JSON.")
    }))

  it.scopedLive("a transcript longer than the context is cleaned in pieces that fit; nothing is dropped", () =>
    Effect.gen(function*() {
      const ollama = yield* FakeOllama.make()
      const sentences = Array.from({ length: 400 }, (_, i) => `sentence number ${i} is here.`)
      const transcript = sentences.join(" ")
      const result = yield* clean({ host: ollama.url, model: "llama3.2", numCtx: 2048 }, transcript)
      expect(ollama.requests.length).toBeGreaterThan(1)
      for (const r of ollama.requests) {
        expect(r.numCtx).toBe(2048)
        // each piece (with the instructions) fits the window at ~3 chars/token
        expect((r.userContent.length + r.systemPrompt.length) / 3).toBeLessThan(2048)
      }
      for (let i = 0; i < 400; i++) expect(result.text).toContain(`number ${i} is here`)
      expect(result.title).toBe("Sentence number 0 is")
    }))

  it("splitForContext keeps every character, prefers sentence ends, and respects the limit", () => {
    const text = "alpha beta. gamma delta epsilon! zeta eta theta iota kappa? lambda " + "x".repeat(50)
    const pieces = splitForContext(text, 20)
    for (const p of pieces) expect(p.length).toBeLessThanOrEqual(20)
    expect(pieces.join("").replace(/\s/g, "")).toBe(text.replace(/\s/g, ""))
    expect(splitForContext("aaa bbb ccc. ddd eee fff", 15)).toEqual(["aaa bbb ccc.", "ddd eee fff"])
  })

  const cases: ReadonlyArray<readonly [string, Fault | { kind: "stream-error"; message: string }, "TemporaryError" | "PermanentError", number | undefined]> = [
    ["429 with Retry-After", { kind: "status", status: 429, headers: { "retry-after": "3" }, body: { error: "rate limited" } }, "TemporaryError", 429],
    ["500 load time-out", { kind: "status", status: 500, body: { error: "timed out waiting for llama runner to start" } }, "TemporaryError", 500],
    ["502", { kind: "status", status: 502, body: { error: "bad gateway" } }, "TemporaryError", 502],
    ["503 queue full", { kind: "status", status: 503, body: { error: "server busy, please try again.  maximum pending requests exceeded" } }, "TemporaryError", 503],
    ["connection reset", { kind: "refuse" }, "TemporaryError", undefined],
    ["an error in a 200 answer", { kind: "stream-error", message: "llama runner process has terminated" }, "TemporaryError", undefined],
    ["malformed body", { kind: "malformed" }, "TemporaryError", undefined],
    ["400", { kind: "status", status: 400, body: { error: "invalid options" } }, "PermanentError", 400],
    ["401", { kind: "status", status: 401, body: { error: "unauthorized" } }, "PermanentError", 401],
    ["403", { kind: "status", status: 403, body: { error: "forbidden" } }, "PermanentError", 403]
  ]
  for (const [label, fault, tag, status] of cases) {
    it.scopedLive(`${label} → ${tag}`, () =>
      Effect.gen(function*() {
        const ollama = yield* FakeOllama.make()
        ollama.failNext(fault)
        const error = yield* Effect.flip(clean({ host: ollama.url, model: "llama3.2" }, "some words"))
        expect(error._tag).toBe(tag)
        expect(error.status).toBe(status)
        if (label.startsWith("429")) expect(error._tag === "TemporaryError" && error.retryAfterMillis).toBe(3000)
      }))
  }

  it.scopedLive("a missing model is permanent and says to `ollama pull` it", () =>
    Effect.gen(function*() {
      const ollama = yield* FakeOllama.make()
      const error = yield* Effect.flip(clean({ host: ollama.url, model: "mistral" }, "words"))
      expect(error._tag).toBe("PermanentError")
      expect(error.status).toBe(404)
      expect(error.message).toContain("ollama pull mistral")
    }))

  it.scopedLive("Ollama down is temporary (connection refused)", () =>
    Effect.gen(function*() {
      const ollama = yield* FakeOllama.make()
      yield* Effect.promise(() => ollama.down())
      const error = yield* Effect.flip(clean({ host: ollama.url, model: "llama3.2" }, "words"))
      expect(error._tag).toBe("TemporaryError")
      expect(error.message).toContain("ECONNREFUSED")
    }))

  it.scopedLive("a hanging Ollama hits the (configurable) timeout: temporary", () =>
    Effect.gen(function*() {
      const ollama = yield* FakeOllama.make()
      ollama.failNext({ kind: "hang" })
      const error = yield* Effect.flip(clean({ host: ollama.url, model: "llama3.2", timeout: "300 millis" }, "words"))
      expect(error._tag).toBe("TemporaryError")
    }))

  it.scopedLive("an empty transcript is permanent: nothing to clean", () =>
    Effect.gen(function*() {
      const ollama = yield* FakeOllama.make()
      const error = yield* Effect.flip(clean({ host: ollama.url, model: "llama3.2" }, "   "))
      expect(error._tag).toBe("PermanentError")
      expect(ollama.requests.length).toBe(0)
    }))
})
