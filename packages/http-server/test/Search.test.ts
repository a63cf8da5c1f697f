/**
 * Search over real HTTP, on a `voice-journal serve` process: real speech
 * (espeak-ng) transcribed by pocketsphinx behind the loopback
 * OpenAI-compatible server, cleaned by the loopback Ollama, then found with
 * `GET /entries?q=` — ranked, paged with `total`, owner-scoped, hostile
 * queries harmless, an over-long one a 400 — and with
 * `voice-journal entries search`.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { audioBytes, RECOGNISED_WORDS } from "../../core/test/support/Audio.js"
import * as FakeOllama from "../../core/test/support/FakeOllama.js"
import * as FakeOpenAi from "../../core/test/support/FakeOpenAiTranscription.js"
import { call, cli, freePort, serve, serverEnv, tempDir, waitFor } from "./support/TestServer.js"

const word = RECOGNISED_WORDS[0] // "world": what pocketsphinx reliably hears in the spoken fixture

describe("search through the server process", () => {
  it.scopedLive("GET /entries?q= finds the user's transcribed entries only, ranked and paged; bad q is 400; the CLI searches too", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir("vj-search-")
      const transcription = yield* FakeOpenAi.make()
      const ollama = yield* FakeOllama.make()
      const port = yield* Effect.promise(freePort)
      const env = serverEnv({ port, dataDir: dir, transcribeUrl: transcription.url, ollamaUrl: ollama.url })
      const createKey = (name: string) => cli(env, ["users", "create", name]).trim().split("\n").at(-1)!
      const alice = createKey("alice")
      const bob = createKey("bob")
      yield* serve(env, port)
      const url = `http://127.0.0.1:${port}`
      const upload = (key: string) =>
        call(url, key, "/entries", { method: "POST", body: audioBytes("wav"), headers: { "content-type": "audio/wav" } }).pipe(
          Effect.tap((r) => expect(r.status).toBe(201)),
          Effect.map((r) => r.body.id as string)
        )
      const ids = [yield* upload(alice), yield* upload(alice)]
      const bobs = yield* upload(bob)
      for (const [key, id] of [[alice, ids[0]!], [alice, ids[1]!], [bob, bobs]] as const) {
        yield* waitFor(async () => {
          const r = await fetch(`${url}/entries/${id}`, { headers: { authorization: `Bearer ${key}` } })
          const body = (await r.json()) as { cleanup: { status: string } | null }
          return body.cleanup?.status === "completed" ? true : undefined
        }, 120_000)
      }
      const search = (key: string, query: string) => call(url, key, `/entries?${query}`)

      // the spoken word, in any case, and as the start of a word
      for (const q of [word, word.toUpperCase(), word.slice(0, 3)]) {
        const found = yield* search(alice, `q=${encodeURIComponent(q)}`)
        expect(found.status).toBe(200)
        expect(found.body.total).toBe(2)
        expect(found.body.items.map((e: { id: string }) => e.id).sort()).toEqual([...ids].sort())
        // the list's items: the cleanup's title comes along
        expect(found.body.items[0].title).toEqual(expect.any(String))
        expect(found.body.items[0].cleanupStatus).toBe("completed")
      }
      // owner-scoped: bob's entry is his alone
      const bobFound = yield* search(bob, `q=${word}`)
      expect(bobFound.body.items.map((e: { id: string }) => e.id)).toEqual([bobs])
      expect(bobFound.body.total).toBe(1)
      // paged, with the total of all matches; newest first between equal matches
      const first = yield* search(alice, `q=${word}&limit=1`)
      expect(first.body).toMatchObject({ total: 2, limit: 1, offset: 0 })
      expect(first.body.items.map((e: { id: string }) => e.id)).toEqual([ids[1]])
      const second = yield* search(alice, `q=${word}&limit=1&offset=1`)
      expect(second.body.items.map((e: { id: string }) => e.id)).toEqual([ids[0]])
      // a word nobody said, a tag nobody has
      expect((yield* search(alice, "q=zebra")).body).toMatchObject({ items: [], total: 0 })
      expect((yield* search(alice, "tag=no-such-tag")).body).toMatchObject({ items: [], total: 0 })
      // query syntax and SQL are words or nothing, never an error
      for (const q of [`"`, `${word}" OR "x`, `' OR 1=1 --`, `${word}*:&|!()`, `NEAR(${word})`, `\\`]) {
        const r = yield* search(alice, `q=${encodeURIComponent(q)}`)
        expect(r.status, q).toBe(200)
        expect(r.body.items.every((e: { id: string }) => ids.includes(e.id)), q).toBe(true)
      }
      // too long: 400 that says what is wrong, as for any bad parameter
      const tooLong = yield* search(alice, `q=${"a".repeat(201)}`)
      expect(tooLong.status).toBe(400)
      expect(tooLong.body.error).toBe("bad_request")
      expect(tooLong.body.message).toMatch(/q/)
      expect((yield* search(alice, `tag=${"t".repeat(101)}`)).status).toBe(400)
      // no q: the plain list
      expect((yield* search(alice, "")).body.total).toBe(2)
      // the OpenAPI document declares both parameters
      const spec = yield* call(url, undefined, "/openapi.json")
      const params = (spec.body.paths["/entries"].get.parameters as Array<{ name: string }>).map((p) => p.name)
      expect(params).toEqual(expect.arrayContaining(["q", "tag", "limit", "offset"]))

      // the CLI: voice-journal entries search <words> [--tag]
      const cliEnv = { ...process.env, VJ_URL: url, VJ_API_KEY: alice }
      const out = cli(cliEnv, ["entries", "search", word])
      expect(out).toContain("2 of 2 matching entries")
      for (const id of ids) expect(out).toContain(id)
      expect(out).not.toContain(bobs)
      expect(cli(cliEnv, ["entries", "search", "--tag", "no-such-tag", word])).toContain("0 of 0 matching entries")
    }), { timeout: 240_000 })
})
