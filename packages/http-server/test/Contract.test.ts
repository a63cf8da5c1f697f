/**
 * The API contract under careless and hostile clients, over real HTTP against
 * the started server: one error envelope for every non-2xx answer, body-less
 * POSTs, a small cap on JSON bodies, strict paging, list items that carry
 * their state, and an OpenAPI document that describes exactly these bodies.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as http from "node:http"
import { audioBytes } from "../../core/test/support/Audio.js"
import { call, type CallResult, type Running, start, waitFor } from "./support/TestServer.js"

/** The envelope every non-2xx answer carries, and nothing else. */
const expectEnvelope = (r: CallResult, status: number, code: string) => {
  expect(r.status).toBe(status)
  expect(r.headers.get("content-type") ?? "").toContain("application/json")
  expect(Object.keys(r.body).sort()).toEqual(["error", "message"])
  expect(r.body.error).toBe(code)
  expect(typeof r.body.message).toBe("string")
  expect(r.body.message.length).toBeGreaterThan(0)
}

const json = (body: unknown): RequestInit => ({
  method: "POST",
  body: typeof body === "string" ? body : JSON.stringify(body),
  headers: { "content-type": "application/json" }
})

const upload = (s: Running, key: string) =>
  call(s.url, key, "/entries", { method: "POST", body: audioBytes("wav"), headers: { "content-type": "audio/wav" } }).pipe(
    Effect.tap((r) => expect(r.status).toBe(201)),
    Effect.map((r) => r.body.id as string)
  )

/** Waits until the entry's newest Notion sync reached `status`. */
const untilSync = (s: Running, key: string, id: string, status: string) =>
  waitFor(async () => {
    const r = await fetch(`${s.url}/entries/${id}`, { headers: { authorization: `Bearer ${key}` } })
    const entry = await r.json() as any
    return entry.notionSync?.status === status ? entry : undefined
  })

/** A raw request with node:http: exact headers (no implied Content-Type) and a chunked body when asked. */
const raw = (
  url: string,
  options: { method: string; path: string; headers?: Record<string, string>; chunks?: ReadonlyArray<Uint8Array | string> }
) =>
  Effect.promise(() =>
    new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: any } | { error: string }>((resolve) => {
      const req = http.request(url + options.path, { method: options.method, headers: options.headers ?? {} }, (res) => {
        let text = ""
        res.setEncoding("utf8")
        res.on("data", (c) => (text += c))
        res.on("end", () => {
          let body: any = text
          try {
            body = JSON.parse(text)
          } catch {
            // not JSON: the assertion shows it
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body })
        })
      })
      req.on("error", (e) => resolve({ error: e.message }))
      for (const c of options.chunks ?? []) req.write(c)
      req.end()
    })
  )

describe("API contract", () => {
  it.scopedLive("schema decode failures answer the envelope with a message saying what to fix", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const id = yield* upload(s, key)
      const r = yield* call(s.url, key, `/entries/${id}/cleanups`, json({ makePrimary: "yes" }))
      expectEnvelope(r, 400, "bad_request")
      expect(r.body.message).toContain("makePrimary")
      expect(r.body.message).toMatch(/true or false/)
      expect(r.body.message).not.toMatch(/readonly|└|_tag|HttpApiDecodeError/)
      // a misspelt option is named, with what is accepted
      const typo = yield* call(s.url, key, `/entries/${id}/cleanups`, json({ make_primary: true }))
      expectEnvelope(typo, 400, "bad_request")
      expect(typo.body.message).toContain("make_primary")
      expect(typo.body.message).toContain("makePrimary")
      const t = yield* call(s.url, key, `/entries/${id}/transcriptions`, json({ makePrimary: 1 }))
      expectEnvelope(t, 400, "bad_request")
      // the body must be an object
      expectEnvelope(yield* call(s.url, key, `/entries/${id}/transcriptions`, json([true])), 400, "bad_request")
      // query parameters too
      const q = yield* call(s.url, key, "/notion/syncs?status=bogus")
      expectEnvelope(q, 400, "bad_request")
      expect(q.body.message).toContain("status")
      expect(q.body.message).not.toMatch(/readonly|└|_tag/)
      expectEnvelope(yield* call(s.url, key, "/entries?limit=1&limit=2"), 400, "bad_request")
    }))

  it.scopedLive("malformed JSON is a 400 envelope", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const id = yield* upload(s, key)
      for (const body of ["{", "{\"makePrimary\": tru}", "nope", "{\"a\":1} trailing"]) {
        const r = yield* call(s.url, key, `/entries/${id}/transcriptions`, json(body))
        expectEnvelope(r, 400, "bad_request")
        expect(r.body.message).toMatch(/JSON/)
      }
      // a declared non-JSON type with a body says what to send
      const form = yield* call(s.url, key, `/entries/${id}/transcriptions`, {
        method: "POST",
        body: "makePrimary=true",
        headers: { "content-type": "application/x-www-form-urlencoded" }
      })
      expectEnvelope(form, 415, "unsupported_media_type")
      expect(form.body.message).toContain("application/json")
    }))

  it.scopedLive("unknown routes are a 404 envelope", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      expectEnvelope(yield* call(s.url, key, "/nope"), 404, "not_found")
      expectEnvelope(yield* call(s.url, undefined, "/nope"), 404, "not_found")
      expectEnvelope(yield* call(s.url, key, "/entries/x/nope", { method: "POST" }), 404, "not_found")
    }))

  it.scopedLive("a known route with the wrong method is a 405 envelope with Allow", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const put = yield* call(s.url, key, "/entries", { method: "PUT", body: "{}" })
      expectEnvelope(put, 405, "method_not_allowed")
      expect(put.headers.get("allow")?.split(/,\s*/).sort()).toEqual(["GET", "POST"])
      const patch = yield* call(s.url, key, "/entries/abc", { method: "PATCH" })
      expectEnvelope(patch, 405, "method_not_allowed")
      expect(patch.headers.get("allow")?.split(/,\s*/).sort()).toEqual(["DELETE", "GET"])
      const del = yield* call(s.url, key, "/notion/syncs/abc/retry", { method: "DELETE" })
      expectEnvelope(del, 405, "method_not_allowed")
      expect(del.headers.get("allow")).toBe("POST")
    }))

  it.scopedLive("JSON nested very deep is a 4xx envelope and the server keeps answering", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const id = yield* upload(s, key)
      const over = yield* call(s.url, key, `/entries/${id}/cleanups`, json("[".repeat(100_000)))
      expect(over.status).toBeGreaterThanOrEqual(400)
      expect(over.status).toBeLessThan(500)
      expect(typeof over.body.error).toBe("string")
      const under = yield* call(s.url, key, `/entries/${id}/cleanups`, json("[".repeat(30_000) + "]".repeat(30_000)))
      expectEnvelope(under, 400, "bad_request")
      const field = yield* call(s.url, key, `/entries/${id}/cleanups`, json(`{"makePrimary":${"[".repeat(30_000)}${"]".repeat(30_000)}}`))
      expectEnvelope(field, 400, "bad_request")
      expect((yield* call(s.url, undefined, "/healthz")).status).toBe(200)
      expect((yield* call(s.url, key, "/entries")).status).toBe(200)
    }))

  it.scopedLive("no route ever answers an empty error: a multipart upload without a boundary gets the envelope", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const r = yield* call(s.url, key, "/entries", { method: "POST", body: "--x\r\n\r\n", headers: { "content-type": "multipart/form-data" } })
      expect(r.status).toBeGreaterThanOrEqual(400)
      expect(Object.keys(r.body).sort()).toEqual(["error", "message"])
      expect((yield* call(s.url, undefined, "/healthz")).status).toBe(200)
    }))

  it.scopedLive("POSTs without a body mean all options default", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const id = yield* upload(s, key)
      yield* untilSync(s, key, id, "success")
      // no body at all (what `curl -X POST` sends), an empty JSON body, an empty body of no declared type
      const variants = [
        { headers: {} },
        { headers: { "content-type": "application/json" } },
        { headers: { "content-length": "0" } }
      ]
      for (const v of variants) {
        for (const path of [`/entries/${id}/transcriptions`, `/entries/${id}/cleanups`, `/entries/${id}/notion-sync`]) {
          const r = yield* raw(s.url, { method: "POST", path, headers: { authorization: `Bearer ${key}`, ...v.headers } })
          expect(r, `${path} ${JSON.stringify(v.headers)}`).toMatchObject({ status: 202 })
        }
      }
      // and `{}` still works
      expect((yield* call(s.url, key, `/entries/${id}/transcriptions`, json({}))).status).toBe(202)
      // retry of a failed sync, body-less
      s.notion.failNext({ kind: "status", status: 400, body: { object: "error", status: 400, code: "validation_error", message: "no" } }, 50, "POST /v1/pages")
      const other = yield* upload(s, key)
      const failed = yield* untilSync(s, key, other, "failed")
      const retry = yield* raw(s.url, { method: "POST", path: `/notion/syncs/${failed.notionSync.id}/retry`, headers: { authorization: `Bearer ${key}` } })
      expect(retry).toMatchObject({ status: 202 })
    }))

  it.scopedLive("JSON bodies over 64 KiB are 413 before they are buffered, announced or chunked", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const id = yield* upload(s, key)
      const big = JSON.stringify({ makePrimary: true, padding: "x".repeat(200 * 1024) })
      const announced = yield* call(s.url, key, `/entries/${id}/transcriptions`, json(big))
      expectEnvelope(announced, 413, "payload_too_large")
      // chunked: no Content-Length, the cap holds while reading
      const chunk = "x".repeat(16 * 1024)
      const chunked = yield* raw(s.url, {
        method: "POST",
        path: `/entries/${id}/cleanups`,
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json", "transfer-encoding": "chunked" },
        chunks: ["{\"padding\":\"", ...Array.from({ length: 13 }, () => chunk), "\"}"]
      })
      expect(chunked).toMatchObject({ status: 413, body: { error: "payload_too_large" } })
      // just under the cap is fine
      const small = JSON.stringify({ makePrimary: false }) + " ".repeat(60 * 1024)
      expect((yield* call(s.url, key, `/entries/${id}/transcriptions`, json(small))).status).toBe(202)
      expect((yield* call(s.url, undefined, "/healthz")).status).toBe(200)
    }))

  it.scopedLive("paging accepts only plain decimal integers in range", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const bad = ["limit=1e2", "limit=0x10", "limit=%201", "limit=1%20", "limit=+1", "limit=1.0", "limit=-1", "limit=0", "limit=101", "limit=",
        "limit=99999999999999999999", "offset=1e1", "offset=-0", "offset=0x0", "offset=%200", "offset=1.5"]
      for (const query of bad) {
        for (const path of ["/entries", "/notion/syncs"]) {
          const r = yield* call(s.url, key, `${path}?${query}`)
          expect(r.status, `${path}?${query}`).toBe(400)
          expectEnvelope(r, 400, "bad_request")
        }
      }
      for (const [query, limit, offset] of [["limit=1", 1, 0], ["limit=100&offset=0", 100, 0], ["limit=007&offset=3", 7, 3], ["", 20, 0]] as const) {
        const r = yield* call(s.url, key, `/entries?${query}`)
        expect(r.status, query).toBe(200)
        expect(r.body).toMatchObject({ limit, offset })
      }
    }))

  it.scopedLive("list items carry each stage's status, the title and the duration", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const id = yield* upload(s, key)
      const done = yield* untilSync(s, key, id, "success")
      const list = yield* call(s.url, key, "/entries")
      expect(list.status).toBe(200)
      const item = list.body.items.find((i: any) => i.id === id)
      expect(item).toMatchObject({
        transcriptionStatus: "completed",
        cleanupStatus: "completed",
        notionSyncStatus: "success",
        title: done.cleanup.title,
        durationSeconds: done.transcription.durationSeconds
      })
      expect(typeof item.title).toBe("string")
      // a fresh upload: transcription pending, nothing else yet
      const fresh = yield* upload(s, key)
      const again = yield* call(s.url, key, "/entries")
      const freshItem = again.body.items.find((i: any) => i.id === fresh)
      expect(["pending", "processing", "completed"]).toContain(freshItem.transcriptionStatus)
      expect(freshItem).toHaveProperty("cleanupStatus")
      expect(freshItem).toHaveProperty("notionSyncStatus")
      expect(freshItem).toHaveProperty("title")
      expect(freshItem).toHaveProperty("durationSeconds")
    }))

  it.scopedLive("the OpenAPI document describes exactly the envelope for every error", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const spec = (yield* call(s.url, undefined, "/openapi.json")).body
      const schemas = spec.components.schemas as Record<string, any>
      expect(Object.keys(schemas)).not.toContain("HttpApiDecodeError")
      expect(Object.keys(schemas)).not.toContain("Issue")
      expect(JSON.stringify(spec)).not.toContain("HttpApiDecodeError")
      const refs = (schema: any): Array<string> =>
        schema.$ref !== undefined ? [schema.$ref] : (schema.anyOf ?? schema.oneOf ?? []).flatMap(refs)
      let errorResponses = 0
      for (const [path, ops] of Object.entries(spec.paths as Record<string, Record<string, any>>)) {
        for (const [method, op] of Object.entries(ops)) {
          for (const [status, response] of Object.entries(op.responses as Record<string, any>)) {
            if (Number(status) < 400) continue
            errorResponses++
            const schema = response.content?.["application/json"]?.schema
            expect(schema, `${method} ${path} ${status}`).toBeDefined()
            const names = refs(schema)
            expect(names.length, `${method} ${path} ${status}`).toBeGreaterThan(0)
            for (const ref of names) {
              const def = schemas[ref.replace("#/components/schemas/", "")]
              expect(Object.keys(def.properties).sort(), ref).toEqual(["error", "message"])
              expect(def.required.sort()).toEqual(["error", "message"])
            }
          }
        }
      }
      expect(errorResponses).toBeGreaterThan(10)
      // the body-taking POSTs document their (optional) JSON body
      const retranscribe = spec.paths["/entries/{id}/transcriptions"].post
      expect(retranscribe.requestBody.required).toBe(false)
      expect(retranscribe.responses["413"]).toBeDefined()
    }))
})
