/**
 * The server over real HTTP: real SQLite, real audio, pocketsphinx behind
 * the OpenAI-compatible loopback server, loopback Ollama and Notion.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import * as path from "node:path"
import { type AudioFormat, audioBytes, elfBytes, pngBytes, RECOGNISED_WORDS } from "../../core/test/support/Audio.js"
import { call, filesIn, maxUploadBytes, multipart, packageDir, start, waitFor } from "./support/TestServer.js"

describe("HTTP server", () => {
  for (const format of ["mp3", "m4a", "wav"] as const) {
    for (const mode of ["multipart", "raw"] as const) {
      it.scopedLive(`upload ${format} as ${mode}: 201, then the entry completes through the pipeline`, () =>
        Effect.gen(function*() {
          const s = yield* start()
          const key = yield* s.key("alice")
          const bytes = audioBytes(format)
          const created = yield* call(s.url, key, "/entries", mode === "multipart"
            ? { method: "POST", body: multipart(bytes, "file", `note.${format}`) }
            : { method: "POST", body: bytes, headers: { "content-type": "audio/mpeg", "x-filename": `note.${format}` } })
          expect(created.status).toBe(201)
          expect(created.body.sizeBytes).toBe(bytes.byteLength)
          expect(created.body.originalFilename).toBe(`note.${format}`)
          expect(created.body).not.toHaveProperty("blobKey")
          expect(created.body).not.toHaveProperty("userId")
          const done = yield* waitFor(async () => {
            const r = await fetch(`${s.url}/entries/${created.body.id}`, { headers: { authorization: `Bearer ${key}` } })
            const entry = await r.json() as any
            return entry.notionSync?.status === "success" ? entry : undefined
          })
          for (const word of RECOGNISED_WORDS) expect(done.transcription.text.toLowerCase()).toContain(word)
          expect(done.cleanup.status).toBe("completed")
          expect(s.notion.pages().length).toBe(1)
          const audio = yield* Effect.promise(() => fetch(`${s.url}/entries/${created.body.id}/audio`, { headers: { authorization: `Bearer ${key}` } }))
          expect(audio.headers.get("content-type")).toBe(created.body.mimeType)
          expect(new Uint8Array(yield* Effect.promise(() => audio.arrayBuffer()))).toEqual(bytes)
        }))
    }
  }

  it.scopedLive("accepts what browsers and phones record, whatever file-type calls it", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const expected: Partial<Record<AudioFormat, string>> = {
        "webm-opus": "audio/webm", "mp4-generic": "audio/mp4", "mp3-no-id3": "audio/mpeg", "ogg-opus": "audio/ogg", "flac": "audio/flac"
      }
      for (const [format, mime] of Object.entries(expected)) {
        const r = yield* call(s.url, key, "/entries", { method: "POST", body: audioBytes(format as AudioFormat), headers: { "content-type": "video/webm" } })
        expect(r.status).toBe(201)
        expect(r.body.mimeType).toBe(mime)
      }
    }))

  it.scopedLive("rejects bad uploads with the right status and leaves no file and no row", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const audioDir = path.join(s.dir, "audio")
      const expectNothingStored = Effect.gen(function*() {
        expect(filesIn(audioDir)).toEqual([])
        expect((yield* call(s.url, key, "/entries")).body.total).toBe(0)
      })
      // over the limit, announced by Content-Length: 413 before a byte is read
      const big = new Uint8Array(maxUploadBytes + 1)
      big.set(audioBytes("wav").subarray(0, 44))
      const tooBig = yield* call(s.url, key, "/entries", { method: "POST", body: big, headers: { "content-type": "audio/wav" } })
      expect(tooBig.status).toBe(413)
      expect(tooBig.body.error).toBe("payload_too_large")
      yield* expectNothingStored
      // over the limit without Content-Length (chunked): 413 or a reset, never a stored file
      const chunked = yield* Effect.promise(() =>
        new Promise<number | string>((resolve) => {
          const req = http.request(`${s.url}/entries`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "audio/wav", "transfer-encoding": "chunked" } }, (res) => {
            res.resume()
            resolve(res.statusCode ?? 0)
          })
          req.on("error", (e) => resolve((e as NodeJS.ErrnoException).code ?? "error"))
          req.write(audioBytes("wav").subarray(0, 44))
          const chunk = new Uint8Array(64 * 1024)
          let sent = 0
          const pump = () => {
            while (sent < maxUploadBytes * 2) {
              sent += chunk.length
              if (!req.write(chunk)) return req.once("drain", pump)
            }
            req.end()
          }
          pump()
        })
      )
      expect([413, "ECONNRESET", "EPIPE"]).toContain(chunked)
      yield* expectNothingStored
      // spoofed content
      for (const [bytes, detected] of [[pngBytes(), "image/png"], [elfBytes(), "application/x-elf"]] as const) {
        const raw = yield* call(s.url, key, "/entries", { method: "POST", body: bytes, headers: { "content-type": "audio/mpeg", "x-filename": "song.mp3" } })
        expect(raw.status).toBe(415)
        expect(raw.body.message).toContain(detected)
        const form = yield* call(s.url, key, "/entries", { method: "POST", body: multipart(bytes, "file", "song.mp3") })
        expect(form.status).toBe(415)
      }
      // empty, missing field, truncated multipart
      expect((yield* call(s.url, key, "/entries", { method: "POST", body: new Uint8Array(0), headers: { "content-type": "audio/mpeg" } })).status).toBe(400)
      expect((yield* call(s.url, key, "/entries", { method: "POST", body: multipart(audioBytes("wav"), "other") })).status).toBe(400)
      const truncated = "--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n" +
        Buffer.from(audioBytes("wav").subarray(0, 8000)).toString("latin1")
      const cut = yield* call(s.url, key, "/entries", {
        method: "POST",
        body: Buffer.from(truncated, "latin1"),
        headers: { "content-type": "multipart/form-data; boundary=XYZ" }
      })
      expect(cut.status).toBe(400)
      yield* expectNothingStored
    }))

  it.scopedLive("the CLI uploads a file with progress and follows it through every stage", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const file = path.join(s.dir, "note.m4a")
      fs.writeFileSync(file, audioBytes("m4a"))
      const { code, stderr, stdout } = yield* Effect.promise(() =>
        new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
          const child = spawn(process.execPath, ["--import", "tsx", "--conditions=source", "src/bin.ts", "upload", file], {
            cwd: packageDir,
            env: { ...process.env, VJ_URL: s.url, VJ_API_KEY: key }
          })
          let stdout = ""
          let stderr = ""
          child.stdout.on("data", (d) => (stdout += d))
          child.stderr.on("data", (d) => (stderr += d))
          child.on("exit", (code) => resolve({ code, stdout, stderr }))
        })
      )
      expect(code).toBe(0)
      expect(stderr).toContain("note.m4a: 100%")
      expect(stdout).toMatch(/note\.m4a → entry [0-9a-f-]{36} \(audio\/mp4\)/)
      expect(stdout).toContain("transcription completed, cleanup completed, notion success")
      expect(s.notion.pages().length).toBe(1)
      expect(stdout + stderr).not.toContain(key)
    }))

  it.scopedLive("authentication: no key or a wrong key is 401; health, OpenAPI and docs are open", () =>
    Effect.gen(function*() {
      const s = yield* start()
      expect((yield* call(s.url, undefined, "/entries")).status).toBe(401)
      const wrong = yield* call(s.url, "vj_not-a-real-key", "/entries")
      expect(wrong.status).toBe(401)
      expect(wrong.body).toEqual({ error: "unauthorized", message: expect.any(String) })
      expect((yield* call(s.url, undefined, "/healthz")).body).toEqual({ status: "ok" })
      expect((yield* call(s.url, undefined, "/readyz")).body).toEqual({ status: "ready" })
      const openapi = yield* call(s.url, undefined, "/openapi.json")
      expect(openapi.status).toBe(200)
      expect(Object.keys(openapi.body.paths)).toContain("/entries/{id}")
      expect((yield* call(s.url, undefined, "/docs")).status).toBe(200)
    }))

  it.scopedLive("two users: neither can read, list, delete, re-run or sync the other's entries (404, not 403)", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const alice = yield* s.key("alice")
      const bob = yield* s.key("bob")
      const created = yield* call(s.url, alice, "/entries", { method: "POST", body: audioBytes("wav"), headers: { "content-type": "audio/wav" } })
      const id = created.body.id as string
      const done = yield* waitFor(async () => {
        const r = await fetch(`${s.url}/entries/${id}`, { headers: { authorization: `Bearer ${alice}` } })
        const e = await r.json() as any
        return e.notionSync?.status === "success" ? e : undefined
      })
      const attempts: Array<[string, string, RequestInit?]> = [
        ["GET", `/entries/${id}`],
        ["GET", `/entries/${id}/audio`],
        ["GET", `/entries/${id}/transcriptions`],
        ["POST", `/entries/${id}/transcriptions`, { body: "{}", headers: { "content-type": "application/json" } }],
        ["POST", `/entries/${id}/transcriptions/${done.transcription.id}/primary`],
        ["GET", `/entries/${id}/cleanups`],
        ["POST", `/entries/${id}/cleanups`, { body: "{}", headers: { "content-type": "application/json" } }],
        ["POST", `/entries/${id}/cleanups/${done.cleanup.id}/primary`],
        ["POST", `/entries/${id}/notion-sync`],
        ["POST", `/notion/syncs/${done.notionSync.id}/retry`],
        ["DELETE", `/entries/${id}`]
      ]
      for (const [method, pathname, init] of attempts) {
        const r = yield* call(s.url, bob, pathname, { method, ...init })
        expect([method, pathname, r.status]).toEqual([method, pathname, 404])
        expect(r.body.error).toBe("not_found")
      }
      expect((yield* call(s.url, bob, "/entries")).body.total).toBe(0)
      expect((yield* call(s.url, bob, "/notion/syncs")).body.total).toBe(0)
      // alice still has everything
      expect((yield* call(s.url, alice, `/entries/${id}`)).status).toBe(200)
      expect((yield* call(s.url, alice, "/notion/syncs?status=success")).body.total).toBe(1)
      // and can delete it: rows and audio go
      expect((yield* call(s.url, alice, `/entries/${id}`, { method: "DELETE" })).status).toBe(204)
      expect(filesIn(path.join(s.dir, "audio"))).toEqual([])
    }))

  it.scopedLive("paging: newest first, totals; out-of-range limit or offset is 400", () =>
    Effect.gen(function*() {
      const s = yield* start({ transcription: { kind: "command", command: "true", convert: "none" } })
      const key = yield* s.key("alice")
      const ids: Array<string> = []
      for (let i = 0; i < 3; i++) {
        ids.push((yield* call(s.url, key, "/entries", { method: "POST", body: audioBytes("wav"), headers: { "content-type": "audio/wav" } })).body.id)
      }
      const page = yield* call(s.url, key, "/entries?limit=2&offset=1")
      expect(page.body.total).toBe(3)
      expect(page.body.items.map((e: any) => e.id)).toEqual([ids[1], ids[0]])
      for (const q of ["limit=0", "limit=101", "limit=abc", "offset=-1"]) {
        const r = yield* call(s.url, key, `/entries?${q}`)
        expect([q, r.status, r.body.error]).toEqual([q, 400, "bad_request"])
      }
    }))
})
