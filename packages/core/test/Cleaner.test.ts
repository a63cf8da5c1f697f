import { Agent, getGlobalDispatcher, setGlobalDispatcher } from "@effect/platform-node/Undici"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Option, TestClock } from "effect"
import { Cleaner, layerOllama, makeOllama, type OllamaCleanerConfig } from "../src/Cleaner.js"
import type { PermanentError, TemporaryError } from "../src/Errors.js"
import { estimateTokens, sanitizeText, sanitizeTitle, splitForContext } from "../src/internal/cleanerText.js"
import * as FakeOllama from "./support/FakeOllama.js"

const clean = (config: OllamaCleanerConfig, transcript: string) =>
  Effect.flatMap(Cleaner, (c) => c.clean(transcript)).pipe(Effect.provide(layerOllama(config)))

/** Waits on real timers (not the TestClock) until the fake has seen something. */
const waitUntil = (condition: () => boolean) =>
  Effect.promise(() =>
    new Promise<void>((resolve) => {
      const check = () => (condition() ? resolve() : void setTimeout(check, 5))
      check()
    })
  )

const model = "llama3.2"

/** A complete structured answer: the given fields, the others empty. */
const answer = (fields: Record<string, unknown>) => JSON.stringify({ title: "", text: "", summary: "", actionItems: [], tags: [], ...fields })

/** The requests that cleaned a piece of a long recording (not the merge step). */
const pieceRequests = (ollama: FakeOllama.FakeOllama) => ollama.requests.filter((r) => r.systemPrompt.includes("part of a longer recording"))

describe("Cleaner (official ollama client against a loopback Ollama)", () => {
  it.scopedLive("cleans a transcript: title, text, model; sends num_ctx, stream: false, the JSON format, options, keep_alive", () =>
    Effect.gen(function*() {
      const ollama = yield* FakeOllama.make()
      const result = yield* clean(
        { host: ollama.url, model, numCtx: 4096, options: { temperature: 0.2, num_ctx: 99 }, keepAlive: "30m" },
        "hello world um this is a test  of the journal. it works"
      )
      expect(result).toEqual({
        title: "Hello world this is",
        text: "Hello world this is a test of the journal. It works.",
        model,
        summary: "Hello world this is a test of the journal.",
        actionItems: [],
        tags: ["journal"],
        sections: {}
      })
      expect(ollama.requests.length).toBe(1)
      const [request] = ollama.requests
      expect(request!.numCtx).toBe(4096) // numCtx wins over options.num_ctx
      expect(request!.options).toMatchObject({ temperature: 0.2 })
      expect(request!.keepAlive).toBe("30m")
      expect(request!.stream).toBe(false)
      expect(request!.format).toMatchObject({
        type: "object",
        required: ["title", "text", "summary", "actionItems", "tags"],
        properties: { actionItems: { type: "array", items: { type: "string" } }, tags: { type: "array" } }
      })
      expect(request!.systemPrompt).toContain("Never drop content")
      expect(request!.systemPrompt).not.toContain("part of a longer recording") // one piece: no part note
    }))

  it.scopedLive("a configured system prompt and proxy headers are sent", () =>
    Effect.gen(function*() {
      const ollama = yield* FakeOllama.make()
      yield* clean({ host: ollama.url, model, systemPrompt: "Be brief.", headers: { authorization: "Bearer proxy-key" } }, "some words")
      // the instructions, then the fields the schema asks for
      expect(ollama.requests[0]!.systemPrompt).toMatch(/^Be brief\.\n\nAnswer as JSON with exactly these fields:\n- "title": /)
      expect(ollama.requests[0]!.authorization).toBe("Bearer proxy-key")
    }))

  it.scopedLive("a model name without a tag matches `:latest`, as in Ollama", () =>
    Effect.gen(function*() {
      const ollama = yield* FakeOllama.make({ models: ["qwen2.5:latest"] })
      const result = yield* clean({ host: ollama.url, model: "qwen2.5" }, "some words")
      expect(result.model).toBe("qwen2.5")
    }))

  describe("long transcripts", () => {
    const sentences = Array.from({ length: 400 }, (_, i) => `sentence number ${i} is here.`)

    it.scopedLive("are cleaned in pieces that fit num_ctx, in order, at sentence ends; nothing is dropped", () =>
      Effect.gen(function*() {
        const ollama = yield* FakeOllama.make()
        const result = yield* clean({ host: ollama.url, model, numCtx: 2048 }, sentences.join(" "))
        const pieces = pieceRequests(ollama)
        expect(pieces.length).toBeGreaterThan(2)
        let next = 0
        for (const r of pieces) {
          expect(r.numCtx).toBe(2048)
          expect(r.systemPrompt).toContain("part of a longer recording")
          // the piece and its answer (about as long) fit the window, by our estimate and so by Ollama's
          expect(estimateTokens(r.systemPrompt) + 2 * estimateTokens(r.userContent)).toBeLessThan(2048)
          expect(r.userContent).toMatch(/\.$/) // cut at a sentence end
          // pieces arrive in order and each starts where the last one ended
          expect(r.userContent.startsWith(`sentence number ${next} is here.`)).toBe(true)
          next += r.userContent.split("sentence number").length - 1
        }
        expect(next).toBe(400)
        let at = -1
        for (let i = 0; i < 400; i++) {
          const found = result.text.indexOf(`number ${i} is here.`)
          expect(found).toBeGreaterThan(at)
          at = found
        }
        expect(result.title).toBe("Sentence number 0 is") // from the first piece
        // the merge step: one more request, the pieces' summaries in, one summary out
        const merges = ollama.requests.filter((r) => r.systemPrompt.includes("You combine the parts"))
        expect(merges.length).toBe(1)
        expect(merges[0]!.format).toMatchObject({ required: ["summary"] })
        expect(result.summary).toBe(pieces.map((r) => FakeOllama.answerLikeTheFake(r.userContent, r.format)["summary"]).join(" "))
      }))

    it.scopedLive("a piece Ollama reports as cut off (done_reason: length) is split again and nothing is lost", () =>
      Effect.gen(function*() {
        const ollama = yield* FakeOllama.make()
        const transcript = sentences.slice(0, 60).join(" ")
        ollama.failNext({ kind: "answer", content: `{"title": "Sentence", "text": "Sentence number 0 is`, doneReason: "length" })
        const result = yield* clean({ host: ollama.url, model, numCtx: 4096 }, transcript)
        const first = ollama.requests[0]
        const rest = pieceRequests(ollama)
        expect(first!.userContent).toBe(transcript)
        expect(rest.length).toBeGreaterThanOrEqual(2)
        expect(rest.map((r) => r.userContent).join(" ")).toBe(transcript)
        for (let i = 0; i < 60; i++) expect(result.text).toContain(`number ${i} is here.`)
        expect(result.title).toBe("Sentence number 0 is")
      }))

    it.scopedLive("an answer that never fits is permanent and says to raise numCtx", () =>
      Effect.gen(function*() {
        const ollama = yield* FakeOllama.make()
        ollama.failNext({ kind: "answer", content: `{"title": "x", "text": "cut`, doneReason: "length" }, 100)
        const error = yield* Effect.flip(clean({ host: ollama.url, model, numCtx: 4096 }, sentences.slice(0, 60).join(" ")))
        expect(error._tag).toBe("PermanentError")
        expect(error.message).toContain("raise numCtx")
      }))

    it.scopedLive("the fake truncates like Ollama: without splitting the start of a long prompt would be lost", () =>
      Effect.gen(function*() {
        // guards the realism the tests above rely on: a client that ignores the window loses content
        const ollama = yield* FakeOllama.make()
        const response = yield* Effect.promise(() =>
          fetch(`${ollama.url}/api/chat`, {
            method: "POST",
            body: JSON.stringify({ model, stream: false, messages: [{ role: "user", content: [...sentences, ...sentences].join(" ") }] })
          }).then((r) => r.json() as Promise<{ message: { content: string }; prompt_eval_count: number; done_reason: string }>)
        )
        expect(response.prompt_eval_count).toBe(4096)
        expect(response.message.content).not.toContain("number 0 is here")
      }))
  })

  describe("templates and structured output", () => {
    const template = {
      instructions: "Clean up my work log.",
      sections: [{ name: "mood", description: "how the speaker feels, in one sentence" }]
    }
    const cleanWith = (config: OllamaCleanerConfig, transcript: string) =>
      Effect.flatMap(Cleaner, (c) => c.clean(transcript, template)).pipe(Effect.provide(layerOllama(config)))

    it.scopedLive("a template's instructions are the system prompt and its sections are in the schema and the result", () =>
      Effect.gen(function*() {
        const ollama = yield* FakeOllama.make()
        const result = yield* cleanWith({ host: ollama.url, model }, "i need to call the plumber. the kitchen flooded again")
        const [request] = ollama.requests
        expect(request!.systemPrompt.startsWith("Clean up my work log.\n\nAnswer as JSON")).toBe(true)
        expect(request!.systemPrompt).toContain(`- "mood": how the speaker feels, in one sentence`)
        expect(request!.format).toMatchObject({
          required: ["title", "text", "summary", "actionItems", "tags", "mood"],
          properties: { mood: { type: "string", description: "how the speaker feels, in one sentence" } }
        })
        expect(result.sections).toEqual({ mood: "mood: I need to call the plumber." })
        expect(result.actionItems).toEqual(["I need to call the plumber."])
        expect(result.tags).toEqual(["plumber", "kitchen", "flooded"])
      }))

    it.scopedLive("tags are normalised: trimmed, lower-case, each once", () =>
      Effect.gen(function*() {
        const ollama = yield* FakeOllama.make()
        ollama.failNext({ kind: "answer", content: answer({ title: "T", text: "Words.", tags: [" Work ", "work", "GARDEN", "  ", "Ünïcode"] }) })
        const result = yield* clean({ host: ollama.url, model }, "words")
        expect(result.tags).toEqual(["work", "garden", "ünïcode"])
      }))

    it.scopedLive("a partial answer is retried once; the second, complete answer is used", () =>
      Effect.gen(function*() {
        const ollama = yield* FakeOllama.make()
        ollama.failNext({ kind: "partial", omit: ["mood"] })
        const result = yield* cleanWith({ host: ollama.url, model }, "a calm day")
        expect(ollama.requests.length).toBe(2)
        expect(result.sections).toEqual({ mood: "mood: A calm day." })
      }))

    it.scopedLive("a section missing twice → permanent, naming the section", () =>
      Effect.gen(function*() {
        const ollama = yield* FakeOllama.make()
        ollama.failNext({ kind: "partial", omit: ["mood"] }, 2)
        const error = yield* Effect.flip(cleanWith({ host: ollama.url, model }, "a calm day"))
        expect(error._tag).toBe("PermanentError")
        expect(error.message).toContain(`section "mood" is missing`)
        expect(ollama.requests.length).toBe(2)
      }))

    it.scopedLive("a section of the wrong type twice → permanent, naming the section", () =>
      Effect.gen(function*() {
        const ollama = yield* FakeOllama.make()
        ollama.failNext({ kind: "answer", content: answer({ title: "T", text: "Words.", tags: "work" }) }, 2)
        const error = yield* Effect.flip(clean({ host: ollama.url, model }, "words"))
        expect(error.message).toMatch(/section "tags" is invalid \(Expected .*, actual "work"\)/)
      }))

    it.scopedLive("a long transcript: every piece answers the sections, the merge step combines them in groups that fit", () =>
      Effect.gen(function*() {
        const ollama = yield* FakeOllama.make()
        const transcript = Array.from({ length: 400 }, (_, i) => `sentence number ${i} is here.`).join(" ")
        const result = yield* cleanWith({ host: ollama.url, model, numCtx: 1024 }, transcript)
        const pieces = pieceRequests(ollama)
        const merges = ollama.requests.filter((r) => r.systemPrompt.includes("You combine the parts"))
        expect(pieces.length).toBeGreaterThan(10)
        expect(merges.length).toBeGreaterThan(1) // too many parts for one window: merged in rounds
        for (const r of merges) expect(r.format).toMatchObject({ required: ["summary", "mood"] })
        // the first round groups the pieces' answers so that each group and its answer fit the window
        // (the fake's merge concatenates, so later rounds grow; a real model's shrink)
        const firstRound = merges.filter((r) => (JSON.parse(r.userContent) as Array<{ summary: string }>).every((p) => p.summary.split("Sentence").length === 2))
        expect(firstRound.length).toBeGreaterThan(1)
        for (const r of firstRound) expect(estimateTokens(r.systemPrompt) + 2 * estimateTokens(r.userContent)).toBeLessThan(1024)
        // the fake joins the parts' values: every piece's section arrives, in order
        const expected = pieces.map((r) => FakeOllama.answerLikeTheFake(r.userContent, r.format)["mood"]).join(" ")
        expect(result.sections["mood"]).toBe(expected)
        expect(result.summary).toBe(pieces.map((r) => FakeOllama.answerLikeTheFake(r.userContent, r.format)["summary"]).join(" "))
      }))
  })

  describe("the model's answer is untrusted", () => {
    it.scopedLive("control and bidi characters are stripped, the title is one line of at most 200 characters", () =>
      Effect.gen(function*() {
        const ollama = yield* FakeOllama.make()
        const title = "Day\u0000 one\n\u202e" + "🙂".repeat(300)
        ollama.failNext({ kind: "answer", content: answer({ title, text: "  First line.\r\nSecond\u0007 line.\u001b[31m \u0085 " }) })
        const result = yield* clean({ host: ollama.url, model }, "words")
        expect(result.text).toBe("First line.\nSecond line.[31m")
        expect(result.title.startsWith("Day one 🙂")).toBe(true)
        expect(Array.from(result.title).length).toBe(200)
        expect(result.title).not.toMatch(/[\u0000-\u001f\u202e\uFFFD]/)
      }))

    const unusable: ReadonlyArray<readonly [string, string]> = [
      ["not JSON", "Sure! Here is your cleaned text: hello"],
      ["an empty text", JSON.stringify({ title: "Empty", text: "  \u0000 " })],
      ["no title", JSON.stringify({ text: "Hello." })],
      ["a blank title", JSON.stringify({ title: " \n ", text: "Hello." })],
      ["the wrong shape", JSON.stringify({ summary: "Hello." })]
    ]
    for (const [label, content] of unusable) {
      it.scopedLive(`${label}: retried once at once, then permanent`, () =>
        Effect.gen(function*() {
          const ollama = yield* FakeOllama.make()
          ollama.failNext({ kind: "answer", content }, 2)
          const error = yield* Effect.flip(clean({ host: ollama.url, model }, "some words"))
          expect(error._tag).toBe("PermanentError")
          expect(error.message).toContain("unusable answer")
          expect(ollama.requests.length).toBe(2)
        }))
    }

    it.scopedLive("one unusable answer followed by a good one succeeds", () =>
      Effect.gen(function*() {
        const ollama = yield* FakeOllama.make()
        ollama.failNext({ kind: "answer", content: "{ not json" })
        const result = yield* clean({ host: ollama.url, model }, "some words")
        expect(result.text).toBe("Some words.")
        expect(ollama.requests.length).toBe(2)
      }))

    it.scopedLive("pieces after the first need no title", () =>
      Effect.gen(function*() {
        const ollama = yield* FakeOllama.make()
        const transcript = Array.from({ length: 300 }, (_, i) => `item ${i} ok.`).join(" ")
        ollama.failNext({ kind: "answer", content: answer({ title: "First", text: "First piece." }) })
        ollama.failNext({ kind: "answer", content: answer({ title: "", text: "Second piece." }) })
        const result = yield* clean({ host: ollama.url, model, numCtx: 1024 }, transcript)
        expect(ollama.requests.length).toBeGreaterThan(2)
        expect(result.title).toBe("First")
        expect(result.text.startsWith("First piece.\n\nSecond piece.\n\nItem")).toBe(true)
      }))
  })

  describe("failure classification (the table in Cleaner.ts)", () => {
    type Row = readonly [
      label: string,
      fault: FakeOllama.OllamaFault,
      tag: "TemporaryError" | "PermanentError",
      status: number | undefined,
      check?: (e: TemporaryError | PermanentError) => void
    ]
    const rows: ReadonlyArray<Row> = [
      ["429 with Retry-After seconds", { kind: "status", status: 429, headers: { "retry-after": "3" }, body: { error: "rate limited" } }, "TemporaryError", 429, (e) => {
        expect(e._tag === "TemporaryError" && e.retryAfterMillis).toBe(3000)
      }],
      ["429 with a Retry-After date", {
        kind: "status",
        status: 429,
        headers: { "retry-after": new Date(Date.now() + 30_000).toUTCString() },
        body: { error: "rate limited" }
      }, "TemporaryError", 429, (e) => {
        const after = e._tag === "TemporaryError" ? e.retryAfterMillis ?? 0 : 0
        expect(after).toBeGreaterThan(20_000)
        expect(after).toBeLessThanOrEqual(30_000)
      }],
      ["500", { kind: "status", status: 500, body: { error: "something broke" } }, "TemporaryError", 500, (e) => {
        expect(e._tag === "TemporaryError" && e.retryAfterMillis).toBe(undefined)
      }],
      ["500 load time-out", { kind: "status", status: 500, body: { error: "timed out waiting for llama runner to start" } }, "TemporaryError", 500, (e) => {
        expect(e.message).toContain("timed out waiting for llama runner")
      }],
      ["502", { kind: "status", status: 502, body: { error: "bad gateway" } }, "TemporaryError", 502],
      ["503 queue full", { kind: "status", status: 503, body: { error: "server busy, please try again.  maximum pending requests exceeded" } }, "TemporaryError", 503],
      ["connection reset", { kind: "refuse" }, "TemporaryError", undefined],
      ["an {\"error\"} in a 200 answer", { kind: "stream-error", message: "llama runner process has terminated" }, "TemporaryError", undefined, (e) => {
        expect(e.message).toContain("llama runner process has terminated")
      }],
      ["a 200 body that is not JSON", { kind: "malformed" }, "TemporaryError", undefined],
      ["404 model not found", { kind: "status", status: 404, body: { error: "model 'llama3.2' not found" } }, "PermanentError", 404, (e) => {
        expect(e.message).toContain("run `ollama pull llama3.2`")
      }],
      ["404 page not found (wrong host path)", { kind: "status", status: 404, body: "404 page not found", headers: { "content-type": "text/plain" } }, "PermanentError", 404, (e) => {
        expect(e.message).not.toContain("ollama pull")
      }],
      ["400", { kind: "status", status: 400, body: { error: "invalid options" } }, "PermanentError", 400],
      ["401", { kind: "status", status: 401, body: { error: "unauthorized" } }, "PermanentError", 401],
      ["403", { kind: "status", status: 403, body: { error: "forbidden" } }, "PermanentError", 403]
    ]
    for (const [label, fault, tag, status, check] of rows) {
      it.scopedLive(`${label} → ${tag}`, () =>
        Effect.gen(function*() {
          const ollama = yield* FakeOllama.make()
          ollama.failNext(fault)
          const error = yield* Effect.flip(clean({ host: ollama.url, model }, "some words"))
          expect(error._tag).toBe(tag)
          expect(error.status).toBe(status)
          expect(ollama.requests.length).toBe(1) // classification only: retrying is the caller's policy
          check?.(error)
        }))
    }

    it.scopedLive("an unknown model → permanent 404 that says to `ollama pull` it", () =>
      Effect.gen(function*() {
        const ollama = yield* FakeOllama.make()
        const error = yield* Effect.flip(clean({ host: ollama.url, model: "mistral" }, "words"))
        expect(error._tag).toBe("PermanentError")
        expect(error.status).toBe(404)
        expect(error.message).toContain("ollama pull mistral")
      }))

    it.scopedLive("Ollama down (connection refused) → temporary; up again → works", () =>
      Effect.gen(function*() {
        const ollama = yield* FakeOllama.make()
        yield* Effect.promise(() => ollama.down())
        const error = yield* Effect.flip(clean({ host: ollama.url, model }, "words"))
        expect(error._tag).toBe("TemporaryError")
        expect(error.message).toContain("ECONNREFUSED")
        yield* Effect.promise(() => ollama.up())
        expect((yield* clean({ host: ollama.url, model }, "words")).text).toBe("Words.")
      }))

    it.scoped("no answer within the timeout (default 10 minutes) → temporary, and the request is aborted", () =>
      Effect.gen(function*() {
        const ollama = yield* FakeOllama.make()
        ollama.failNext({ kind: "hang" })
        const cleaner = yield* makeOllama({ host: ollama.url, model })
        const fiber = yield* Effect.fork(cleaner.clean("words"))
        yield* waitUntil(() => ollama.requests.length === 1)
        yield* TestClock.adjust("9 minutes")
        expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true) // a model may take minutes to load
        yield* TestClock.adjust("1 minute")
        const error = yield* Effect.flip(Fiber.join(fiber))
        expect(error._tag).toBe("TemporaryError")
        expect(error.message).toContain("within 10m")
        // the HTTP request was aborted, not left running against Ollama
        yield* waitUntil(() => ollama.abandoned() === 1)
      }))

    it.scoped("interrupting a cleanup (shutdown) aborts its HTTP request", () =>
      Effect.gen(function*() {
        const ollama = yield* FakeOllama.make()
        ollama.failNext({ kind: "hang" })
        const cleaner = yield* makeOllama({ host: ollama.url, model })
        const fiber = yield* Effect.fork(cleaner.clean("words"))
        yield* waitUntil(() => ollama.requests.length === 1)
        yield* Fiber.interrupt(fiber)
        yield* waitUntil(() => ollama.abandoned() === 1)
        expect(ollama.abandoned()).toBe(1)
      }))

    it.scopedLive("a slow answer is not cut by Node's default fetch header timeout", () =>
      Effect.gen(function*() {
        // Node's global fetch gives up when headers take longer than undici's headersTimeout (5 minutes
        // by default; 1 second here) — with stream: false Ollama sends them only when the answer is done
        yield* Effect.acquireRelease(
          Effect.sync(() => {
            const previous = getGlobalDispatcher()
            setGlobalDispatcher(new Agent({ headersTimeout: 1000 }))
            return previous
          }),
          (previous) => Effect.sync(() => setGlobalDispatcher(previous))
        )
        const ollama = yield* FakeOllama.make({ latencyMillis: 2500 })
        const result = yield* clean({ host: ollama.url, model }, "slow words")
        expect(result.text).toBe("Slow words.")
      }))

    it.scopedLive("an empty transcript → permanent, nothing sent", () =>
      Effect.gen(function*() {
        const ollama = yield* FakeOllama.make()
        const error = yield* Effect.flip(clean({ host: ollama.url, model }, "  \n "))
        expect(error._tag).toBe("PermanentError")
        expect(ollama.requests.length).toBe(0)
      }))

    it.scopedLive("a numCtx too small for the system prompt → permanent, nothing sent", () =>
      Effect.gen(function*() {
        const ollama = yield* FakeOllama.make()
        const error = yield* Effect.flip(clean({ host: ollama.url, model, numCtx: 256 }, "words"))
        expect(error._tag).toBe("PermanentError")
        expect(error.message).toContain("raise numCtx")
        expect(ollama.requests.length).toBe(0)
      }))
  })
})

describe("cleaner text helpers", () => {
  const words = (s: string) => s.split(/\s+/).filter((w) => w !== "")

  it("splitForContext keeps every word in order, respects the budget, prefers sentence ends", () => {
    const text = "alpha beta. gamma delta epsilon! zeta eta theta iota kappa? lambda " + "x".repeat(50) + " mu"
    const pieces = splitForContext(text, 7)
    for (const p of pieces) expect(estimateTokens(p)).toBeLessThanOrEqual(7)
    expect(pieces.join(" ").replace(/\s/g, "")).toBe(text.replace(/\s/g, ""))
    expect(splitForContext("aaa bbb ccc. ddd eee fff", 5)).toEqual(["aaa bbb ccc.", "ddd eee fff"])
    expect(splitForContext("short text", 100)).toEqual(["short text"])
    const long = Array.from({ length: 500 }, (_, i) => `w${i}`).join(" ")
    expect(pieces.length).toBeGreaterThan(1)
    expect(splitForContext(long, 50).flatMap(words)).toEqual(words(long))
  })

  it("estimates multi-byte scripts by bytes, cuts after CJK full stops, never inside a character", () => {
    expect(estimateTokens("abc")).toBe(1)
    expect(estimateTokens("日本語")).toBe(3) // 9 bytes: a token a character, not one for all three
    const cjk = "今日は晴れでした。".repeat(40)
    const pieces = splitForContext(cjk, 20)
    for (const p of pieces) {
      expect(estimateTokens(p)).toBeLessThanOrEqual(20)
      expect(p.endsWith("。")).toBe(true)
    }
    expect(pieces.join("")).toBe(cjk)
    const emoji = "🙂".repeat(100)
    const emojiPieces = splitForContext(emoji, 10)
    expect(emojiPieces.join("")).toBe(emoji)
    for (const p of emojiPieces) expect(p).not.toMatch(/^[\uDC00-\uDFFF]|[\uD800-\uDBFF]$/)
  })

  it("sanitizeText and sanitizeTitle", () => {
    expect(sanitizeText(" a\r\nb\u0000\u200f\u2066c\t ")).toBe("a\nb\u200fc")
    expect(sanitizeTitle("  My\n\nday ", 200)).toBe("My day")
    expect(sanitizeTitle("abcdef", 3)).toBe("abc")
  })
})
