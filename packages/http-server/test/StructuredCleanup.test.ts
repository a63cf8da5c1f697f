/**
 * Structured cleanups end to end: the real server, the real `ollama` client
 * and the loopback Ollama answering the `format` schema (or, on demand,
 * malformed or partial JSON). Structured fields are stored and served;
 * templates are managed through the API and the CLI; a cleanup re-runs with
 * another template.
 */
import { describe, expect, it } from "@effect/vitest"
import { Domain } from "@voice-journal/core"
import { Cause, Console, ConfigProvider, Effect, Exit } from "effect"
import * as Cli from "../src/Cli.js"
import { audioBytes } from "../../core/test/support/Audio.js"
import * as FakeOllama from "../../core/test/support/FakeOllama.js"
import { call, type Running, start, waitFor } from "./support/TestServer.js"

const upload = (s: Running, key: string) =>
  call(s.url, key, "/entries", { method: "POST", body: audioBytes("wav"), headers: { "content-type": "audio/wav" } }).pipe(
    Effect.tap((r) => expect(r.status).toBe(201)),
    Effect.map((r) => r.body.id as string)
  )

const postJson = (s: Running, key: string, pathname: string, body: unknown, method = "POST") =>
  call(s.url, key, pathname, { method, body: JSON.stringify(body), headers: { "content-type": "application/json" } })

/** Waits until the cleanup `pick` chooses from the entry's cleanups has ended (completed or failed). */
const cleanupEnd = (s: Running, key: string, entryId: string, pick: (cleanups: Array<any>) => any = (c) => c.at(-1)) =>
  waitFor(async () => {
    const r = await fetch(`${s.url}/entries/${entryId}/cleanups`, { headers: { authorization: `Bearer ${key}` } })
    const cleanup = pick(await r.json() as Array<any>)
    return ["completed", "failed"].includes(cleanup?.status) ? cleanup : undefined
  })

/** The fake's answer to a recorded request: what the cleaner was given back. */
const fakeAnswer = (request: FakeOllama.ChatRequestRecord) => FakeOllama.answerLikeTheFake(request.userContent, request.format)

const mood = { name: "mood", description: "how the speaker feels, in one sentence" }

/**
 * Runs a `voice-journal` command in this process (a child process costs a
 * tsx start-up per command on a shared machine), with VJ_URL / VJ_API_KEY
 * from a config provider and its console captured.
 */
const cli = (s: Running, key: string, args: Array<string>) =>
  Effect.gen(function*() {
    const out: Array<string> = []
    const exit = yield* Console.consoleWith((console) =>
      Cli.run(["node", "voice-journal", ...args]).pipe(
        Effect.provide(Cli.CliLive),
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["VJ_URL", s.url], ["VJ_API_KEY", key]]))),
        Effect.withConsole({
          ...console,
          log: (...parts: ReadonlyArray<unknown>) => Effect.sync(() => void out.push(parts.join(" "))),
          error: (...parts: ReadonlyArray<unknown>) => Effect.sync(() => void out.push(parts.join(" ")))
        }),
        Effect.exit
      )
    )
    return { ok: Exit.isSuccess(exit), stdout: out.join("\n"), failure: Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "" }
  })

describe("structured cleanup through the HTTP API", () => {
  it.scopedLive("summary, action items, tags (normalised) and template id are stored and served", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const id = yield* upload(s, key)
      const cleanup = yield* cleanupEnd(s, key, id)
      expect(cleanup.status).toBe("completed")
      const [request] = s.ollama.requests
      // the request asked for the built-in fields as a JSON Schema
      expect(request!.format).toMatchObject({ type: "object", required: ["title", "text", "summary", "actionItems", "tags"] })
      const said = fakeAnswer(request!)
      const entry = (yield* call(s.url, key, `/entries/${id}`)).body
      expect(entry.cleanup).toMatchObject({
        title: said["title"],
        text: said["text"],
        summary: said["summary"],
        actionItems: said["actionItems"],
        tags: Domain.normalizeTags(said["tags"] as Array<string>),
        sections: {},
        templateId: null
      })
      expect(entry.cleanup.summary).not.toBe("")
    }), { timeout: 180_000 })

  it.scopedLive("malformed JSON once → retried at once → completed", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      s.ollama.failNext({ kind: "answer", content: "Sure! {title: oops" })
      const id = yield* upload(s, key)
      const cleanup = yield* cleanupEnd(s, key, id)
      expect(cleanup.status).toBe("completed")
      expect(cleanup.attempts).toBe(1) // the retry is inside the attempt, not a durable one
      expect(s.ollama.requests.length).toBe(2)
      expect(cleanup.summary).toBe(fakeAnswer(s.ollama.requests[1]!)["summary"])
    }), { timeout: 180_000 })

  it.scopedLive("a section missing twice → the cleanup fails for good, and lastError names the section", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      s.ollama.failNext({ kind: "partial", omit: ["actionItems"] }, 2)
      const id = yield* upload(s, key)
      const cleanup = yield* cleanupEnd(s, key, id)
      expect(cleanup.status).toBe("failed")
      expect(cleanup.lastError).toContain(`section "actionItems" is missing`)
      expect(s.ollama.requests.length).toBe(2)
      expect(cleanup).toMatchObject({ summary: null, actionItems: [], tags: [], sections: {} })
    }), { timeout: 180_000 })

  it.scopedLive("a custom template with an extra section; the entry re-cleaned with it, then with the default again", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const id = yield* upload(s, key)
      const first = yield* cleanupEnd(s, key, id)
      expect(first.templateId).toBeNull()
      const created = yield* postJson(s, key, "/templates", { name: "Feelings", instructions: "Clean up my feelings journal.", sections: [mood] })
      expect(created.status).toBe(201)
      const template = created.body
      const queued = yield* postJson(s, key, `/entries/${id}/cleanups`, { templateId: template.id, makePrimary: true })
      expect(queued.status).toBe(202)
      expect(queued.body.templateId).toBe(template.id)
      const withTemplate = yield* cleanupEnd(s, key, id, (c) => c.find((x: any) => x.id === queued.body.id))
      expect(withTemplate.status).toBe("completed")
      const request = s.ollama.requests.at(-1)!
      expect(request.systemPrompt.startsWith("Clean up my feelings journal.")).toBe(true)
      expect(request.format).toMatchObject({ properties: { mood: { type: "string", description: mood.description } } })
      expect(withTemplate.sections).toEqual({ mood: fakeAnswer(request)["mood"] })
      expect(withTemplate.sections.mood).toMatch(/^mood: ./)
      // primary now: the entry shows the template's cleanup
      const entry = (yield* call(s.url, key, `/entries/${id}`)).body
      expect(entry.cleanup.id).toBe(withTemplate.id)
      // and once more with the built-in template: no sections
      const again = yield* postJson(s, key, `/entries/${id}/cleanups`, {})
      const plain = yield* cleanupEnd(s, key, id, (c) => c.find((x: any) => x.id === again.body.id))
      expect(plain).toMatchObject({ status: "completed", templateId: null, sections: {} })
      expect(s.ollama.requests.at(-1)!.format).not.toHaveProperty("properties.mood")
    }), { timeout: 180_000 })
})

describe("templates API", () => {
  it.scopedLive("create, list, get, replace, delete; owner-scoped; 400 for bad input, 404 unknown, 409 name taken", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const alice = yield* s.key("alice")
      const bob = yield* s.key("bob")
      const made = yield* postJson(s, alice, "/templates", { name: "  Work  ", instructions: "Work log.", sections: [mood] })
      expect(made.status).toBe(201)
      expect(made.body).toMatchObject({ name: "Work", instructions: "Work log.", sections: [mood] })
      expect(made.body).not.toHaveProperty("userId")
      const id = made.body.id as string
      expect((yield* call(s.url, alice, "/templates")).body.map((t: any) => t.name)).toEqual(["Work"])
      expect((yield* call(s.url, alice, `/templates/${id}`)).body.id).toBe(id)

      // bad input: 400 saying what is wrong, nothing created
      const bad: ReadonlyArray<readonly [unknown, string]> = [
        [{ instructions: "x" }, "name"],
        [{ name: "A", instructions: "   " }, "instructions must be instructions of 1-4000 characters"],
        [{ name: "A", instructions: "x", sections: [{ name: "summary", description: "d" }] }, "built in"],
        [{ name: "A", instructions: "x", sections: [{ name: "my mood!", description: "d" }] }, "section name"],
        [{ name: "A", instructions: "x", sections: [mood, { ...mood, name: "MOOD" }] }, "declared twice"],
        [{ name: "A", instructions: "x", sections: Array.from({ length: 11 }, (_, i) => ({ name: `s${i}`, description: "d" })) }, "at most 10"],
        [{ name: "A", instructions: "x", colour: "red" }, `unknown option "colour"`],
        [{ name: "A\nB", instructions: "x" }, "one line"]
      ]
      for (const [body, message] of bad) {
        const r = yield* postJson(s, alice, "/templates", body)
        expect(r.status).toBe(400)
        expect(r.body.error).toBe("bad_request")
        expect(r.body.message).toContain(message)
      }
      expect((yield* call(s.url, alice, "/templates")).body.length).toBe(1)

      const taken = yield* postJson(s, alice, "/templates", { name: "Work", instructions: "again" })
      expect(taken.status).toBe(409)
      expect(taken.body.error).toBe("conflict")
      expect((yield* postJson(s, bob, "/templates", { name: "Work", instructions: "Bob's" })).status).toBe(201)

      // bob cannot see, change, delete or clean with alice's template
      expect((yield* call(s.url, bob, `/templates/${id}`)).status).toBe(404)
      expect((yield* postJson(s, bob, `/templates/${id}`, { name: "Mine", instructions: "x" }, "PUT")).status).toBe(404)
      expect((yield* call(s.url, bob, `/templates/${id}`, { method: "DELETE" })).status).toBe(404)
      const bobsEntry = yield* upload(s, bob)
      yield* cleanupEnd(s, bob, bobsEntry)
      const foreign = yield* postJson(s, bob, `/entries/${bobsEntry}/cleanups`, { templateId: id })
      expect(foreign.status).toBe(404)
      expect(foreign.body.error).toBe("not_found")

      const replaced = yield* postJson(s, alice, `/templates/${id}`, { name: "Work v2", instructions: "Better.", sections: [] }, "PUT")
      expect(replaced.status).toBe(200)
      expect(replaced.body).toMatchObject({ id, name: "Work v2", instructions: "Better.", sections: [] })
      expect((yield* call(s.url, alice, `/templates/${id}`, { method: "DELETE" })).status).toBe(204)
      expect((yield* call(s.url, alice, `/templates/${id}`)).status).toBe(404)
      expect((yield* call(s.url, alice, `/templates/nope`)).body.error).toBe("not_found")
    }), { timeout: 180_000 })

  it.scopedLive("the OpenAPI document describes the template routes and the structured cleanup fields", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const spec = (yield* call(s.url, undefined, "/openapi.json")).body
      expect(Object.keys(spec.paths)).toEqual(expect.arrayContaining(["/templates", "/templates/{id}"]))
      expect(Object.keys(spec.paths["/templates/{id}"]).sort()).toEqual(["delete", "get", "put"])
      expect(Object.keys(spec.components.schemas.Cleanup.properties)).toEqual(
        expect.arrayContaining(["summary", "actionItems", "tags", "sections", "templateId"])
      )
      expect(Object.keys(spec.components.schemas.CleanupOptions.properties)).toContain("templateId")
      expect(spec.components.schemas.TemplateInput.required).toEqual(expect.arrayContaining(["name", "instructions"]))
    }), { timeout: 180_000 })

  it.scopedLive("CLI: templates create, list, show, delete and entries reclean --template against a running server", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const created = yield* cli(s, key, [
        "templates", "create", "--name", "Dreams", "--instructions", "Clean up my dream journal.", "--section", "mood=how I felt"
      ])
      expect(created.ok).toBe(true)
      const id = /template (\S+) \(Dreams\) created/.exec(created.stdout)?.[1]
      expect(id).toBeDefined()
      const listed = yield* cli(s, key, ["templates", "list"])
      expect(listed.stdout).toContain(`${id}  Dreams  (sections: mood)`)
      const shown = yield* cli(s, key, ["templates", "show", id!])
      expect(shown.stdout).toContain("Clean up my dream journal.")
      expect(shown.stdout).toContain("mood: how I felt")
      const entry = yield* upload(s, key)
      yield* cleanupEnd(s, key, entry)
      const reclean = yield* cli(s, key, ["entries", "reclean", entry, "--template", id!])
      expect(reclean.ok).toBe(true)
      const cleanupId = /cleanup (\S+) queued/.exec(reclean.stdout)?.[1]
      const done = yield* cleanupEnd(s, key, entry, (c) => c.find((x: any) => x.id === cleanupId))
      expect(done).toMatchObject({ status: "completed", templateId: id })
      expect(Object.keys(done.sections)).toEqual(["mood"])
      const duplicate = yield* cli(s, key, ["templates", "create", "--name", "Dreams", "--instructions", "x"])
      expect(duplicate.ok).toBe(false)
      expect(duplicate.failure).toContain("409 conflict")
      const deleted = yield* cli(s, key, ["templates", "delete", id!])
      expect(deleted.ok).toBe(true)
      expect((yield* cli(s, key, ["templates", "list"])).stdout).toContain("no templates")
    }), { timeout: 180_000 })
})
