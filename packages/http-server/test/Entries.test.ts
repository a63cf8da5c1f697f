/**
 * Entries over real HTTP, hardened: stage failures tell the user what went
 * wrong without leaking internals (paths, blob keys, memory addresses),
 * primary switches check that the child belongs to the entry in the path,
 * and the audio route answers a missing blob with 404 and serves `Range`.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFileSync } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { audioBytes, audioFile, fixtureDir } from "../../core/test/support/Audio.js"
import { call, type Running, start, waitFor } from "./support/TestServer.js"

/** Deterministic junk (a sha256 chain), so a corrupt fixture is the same on every run. */
const junk = (length: number): Uint8Array => {
  const out = new Uint8Array(length)
  let block = createHash("sha256").update("voice-journal junk").digest()
  for (let i = 0; i < length; i += block.length) {
    out.set(block.subarray(0, Math.min(block.length, length - i)), i)
    block = createHash("sha256").update(block).digest()
  }
  return out
}

/**
 * An OGG/Opus recording whose header pages are intact (it sniffs as
 * audio/ogg) and whose audio pages are junk: ffprobe fails with
 * `[ogg @ 0x…] CRC mismatch!` and `<path>: End of file`.
 */
const corruptOgg = (): Uint8Array => {
  const ogg = Buffer.from(audioBytes("ogg-opus"))
  let pages = 0
  let third = -1
  for (let i = 0; i < ogg.length - 3 && third < 0; i++) {
    if (ogg.toString("latin1", i, i + 4) === "OggS" && ++pages === 3) third = i
  }
  return Buffer.concat([ogg.subarray(0, third), Buffer.from("OggS"), junk(20_000)])
}

/**
 * An M4A whose `moov` comes first (faststart) and whose samples are junk:
 * ffprobe reads the header and exits 0, decoding fails (`[aac @ 0x…]`).
 */
const corruptM4a = (): Uint8Array => {
  const faststart = path.join(fixtureDir, "speech-faststart.m4a")
  if (!fs.existsSync(faststart)) {
    const tmp = path.join(fixtureDir, `.tmp-${process.pid}-faststart.m4a`)
    execFileSync("ffmpeg", ["-loglevel", "error", "-y", "-i", audioFile("m4a"), "-c", "copy", "-movflags", "+faststart", tmp])
    fs.renameSync(tmp, faststart)
  }
  const m4a = Buffer.from(fs.readFileSync(faststart))
  const samples = m4a.indexOf("mdat") + 4 + 200
  return Buffer.concat([m4a.subarray(0, samples), junk(m4a.length - samples)])
}

const uuid = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/i

/** What a user may see: no path, no blob key (or any UUID), no address — and a hint what to do. */
const expectClean = (s: Running, message: string | null) => {
  expect(message).not.toBeNull()
  expect(message).not.toContain("/")
  expect(message).not.toContain("\\")
  expect(message).not.toContain(s.dir)
  expect(message).not.toMatch(uuid)
  expect(message).not.toMatch(/0x[0-9a-f]/i)
  expect(message).not.toMatch(/\.partial-|voice-journal-|fake-openai/)
}

const upload = (s: Running, key: string, bytes: Uint8Array, contentType = "application/octet-stream") =>
  call(s.url, key, "/entries", { method: "POST", body: bytes, headers: { "content-type": contentType } }).pipe(
    Effect.tap((r) => expect(r.status).toBe(201)),
    Effect.map((r) => r.body.id as string)
  )

const json = async (s: Running, key: string, pathname: string) =>
  (await fetch(s.url + pathname, { headers: { authorization: `Bearer ${key}` } })).json() as Promise<any>

/** Waits for the entry's transcription to reach an end state and returns it. */
const transcriptionEnd = (s: Running, key: string, id: string) =>
  waitFor(async () => {
    const entry = await json(s, key, `/entries/${id}`)
    return ["failed", "completed"].includes(entry.transcription?.status) ? entry.transcription : undefined
  })

describe("stage failures tell the user what to do and leak nothing", () => {
  it.scopedLive("undecodable audio (ffprobe): lastError has no path, blob key or address, and says what to do", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const id = yield* upload(s, key, corruptOgg())
      const t = yield* transcriptionEnd(s, key, id)
      expect(t.status).toBe("failed")
      expectClean(s, t.lastError)
      expect(t.lastError).toMatch(/could not be decoded/)
      expect(t.lastError).toMatch(/upload it again|convert/i)
    }))

  it.scopedLive("ffmpeg cannot convert the audio (command transcriber, wav16k): no address, says what to do", () =>
    Effect.gen(function*() {
      const s = yield* start({
        transcription: { kind: "command", command: "pocketsphinx_continuous -infile {input} -logfn /dev/null", convert: "wav16k" }
      })
      const key = yield* s.key("alice")
      const id = yield* upload(s, key, corruptM4a())
      const t = yield* transcriptionEnd(s, key, id)
      expect(t.status).toBe("failed")
      expectClean(s, t.lastError)
      expect(t.lastError).toMatch(/could not be decoded/)
      expect(t.lastError).toMatch(/upload it again|convert/i)
    }))

  it.scopedLive("the engine fails (command transcriber): its stderr with the blob's path stays in the log", () =>
    Effect.gen(function*() {
      // `cat` names the file it cannot open — the blob's absolute path — on stderr
      const s = yield* start({ transcription: { kind: "command", command: "cat {input}.absent", convert: "none" } })
      const key = yield* s.key("alice")
      const id = yield* upload(s, key, audioBytes("wav"))
      const t = yield* transcriptionEnd(s, key, id)
      expect(t.status).toBe("failed")
      expectClean(s, t.lastError)
      expect(t.lastError).toMatch(/cat/)
      expect(t.lastError).toMatch(/server log/)
    }))

  it.scopedLive("the OpenAI-compatible server rejects the audio: paths in its answer stay out of lastError", () =>
    Effect.gen(function*() {
      // ffprobe accepts the header; the fake server's ffmpeg fails and echoes its temp path
      const s = yield* start()
      const key = yield* s.key("alice")
      const id = yield* upload(s, key, corruptM4a())
      const t = yield* transcriptionEnd(s, key, id)
      expect(t.status).toBe("failed")
      expectClean(s, t.lastError)
      expect(t.lastError).toContain("415")
    }))
})

/** An entry of `key`'s user whose transcription and cleanup are completed (and primary). */
const processedEntry = (s: Running, key: string) =>
  Effect.gen(function*() {
    const id = yield* upload(s, key, audioBytes("wav"))
    yield* waitFor(async () => (await json(s, key, `/entries/${id}`)).cleanup?.status === "completed" ? true : undefined)
    return id
  })

describe("primary switches check that the child belongs to the entry in the path", () => {
  it.scopedLive("a transcription or cleanup of entry B made primary through entry A: 404, and nothing changes", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const a = yield* processedEntry(s, key)
      const b = yield* processedEntry(s, key)
      // a second, completed, non-primary transcription and cleanup on B
      const t2 = (yield* call(s.url, key, `/entries/${b}/transcriptions`, { method: "POST", body: "{}", headers: { "content-type": "application/json" } })).body
      yield* waitFor(async () =>
        (await json(s, key, `/entries/${b}/transcriptions`)).find((t: any) => t.id === t2.id)?.status === "completed" ? true : undefined
      )
      const c2 = (yield* call(s.url, key, `/entries/${b}/cleanups`, { method: "POST", body: "{}", headers: { "content-type": "application/json" } })).body
      yield* waitFor(async () =>
        (await json(s, key, `/entries/${b}/cleanups`)).find((c: any) => c.id === c2.id)?.status === "completed" ? true : undefined
      )
      const before = {
        a: { t: yield* call(s.url, key, `/entries/${a}/transcriptions`), c: yield* call(s.url, key, `/entries/${a}/cleanups`) },
        b: { t: yield* call(s.url, key, `/entries/${b}/transcriptions`), c: yield* call(s.url, key, `/entries/${b}/cleanups`) }
      }
      expect(before.b.t.body.find((t: any) => t.id === t2.id).isPrimary).toBe(false)
      expect(before.b.c.body.find((c: any) => c.id === c2.id).isPrimary).toBe(false)

      const wrongT = yield* call(s.url, key, `/entries/${a}/transcriptions/${t2.id}/primary`, { method: "POST" })
      expect(wrongT.status).toBe(404)
      expect(wrongT.body.error).toBe("not_found")
      expect(typeof wrongT.body.message).toBe("string")
      const wrongC = yield* call(s.url, key, `/entries/${a}/cleanups/${c2.id}/primary`, { method: "POST" })
      expect(wrongC.status).toBe(404)
      expect(wrongC.body.error).toBe("not_found")

      // nothing changed on either entry
      const primaries = (rows: ReadonlyArray<any>) => rows.map((r) => [r.id, r.isPrimary])
      expect(primaries((yield* call(s.url, key, `/entries/${b}/transcriptions`)).body)).toEqual(primaries(before.b.t.body))
      expect(primaries((yield* call(s.url, key, `/entries/${b}/cleanups`)).body)).toEqual(primaries(before.b.c.body))
      expect(primaries((yield* call(s.url, key, `/entries/${a}/transcriptions`)).body)).toEqual(primaries(before.a.t.body))
      expect(primaries((yield* call(s.url, key, `/entries/${a}/cleanups`)).body)).toEqual(primaries(before.a.c.body))

      // through the right entry it works
      const right = yield* call(s.url, key, `/entries/${b}/transcriptions/${t2.id}/primary`, { method: "POST" })
      expect(right.status).toBe(200)
      expect(right.body.isPrimary).toBe(true)
      const rightC = yield* call(s.url, key, `/entries/${b}/cleanups/${c2.id}/primary`, { method: "POST" })
      expect(rightC.status).toBe(200)
      expect(rightC.body.isPrimary).toBe(true)
    }))
})

describe("GET /entries/{id}/audio", () => {
  it.scopedLive("the blob is gone: 404 not_found with the envelope, not an empty 200", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const id = yield* upload(s, key, audioBytes("wav"))
      const blobs = fs.readdirSync(s.config.audioDir).filter((f) => uuid.test(f))
      expect(blobs.length).toBe(1)
      fs.rmSync(path.join(s.config.audioDir, blobs[0]!))
      const r = yield* call(s.url, key, `/entries/${id}/audio`)
      expect(r.status).toBe(404)
      expect(r.headers.get("content-type")).toContain("application/json")
      expect(r.body).toEqual({ error: "not_found", message: "the recording's audio is missing" })
      // a range request is answered the same way
      expect((yield* call(s.url, key, `/entries/${id}/audio`, { headers: { range: "bytes=0-9" } })).status).toBe(404)
    }))

  it.scopedLive("Range: 206 with Content-Range for first-last, open and suffix ranges; 416 when unsatisfiable", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const bytes = audioBytes("wav")
      const size = bytes.byteLength
      const id = yield* upload(s, key, bytes)
      // the in-process fake transcription server blocks the event loop while it
      // decodes; let it finish so kept-alive connections are not cut meanwhile
      yield* transcriptionEnd(s, key, id)
      const get = (range?: string) =>
        Effect.promise(async () => {
          const r = await fetch(`${s.url}/entries/${id}/audio`, {
            headers: { authorization: `Bearer ${key}`, ...(range !== undefined ? { range } : {}) }
          })
          return { status: r.status, headers: r.headers, body: new Uint8Array(await r.arrayBuffer()) }
        })

      const full = yield* get()
      expect(full.status).toBe(200)
      expect(full.headers.get("accept-ranges")).toBe("bytes")
      expect(full.headers.get("content-length")).toBe(String(size))
      expect(full.body).toEqual(bytes)

      const cases: ReadonlyArray<readonly [string, number, number]> = [
        ["bytes=0-99", 0, 99],
        ["bytes=100-", 100, size - 1],
        ["bytes=-500", size - 500, size - 1],
        [`bytes=${size - 10}-${size + 1000}`, size - 10, size - 1], // last beyond the end: clamped
        [`bytes=-${size + 1000}`, 0, size - 1], // suffix longer than the file: all of it
        ["bytes=5-5", 5, 5]
      ]
      for (const [range, first, last] of cases) {
        const r = yield* get(range)
        expect(r.status, range).toBe(206)
        expect(r.headers.get("content-range"), range).toBe(`bytes ${first}-${last}/${size}`)
        expect(r.headers.get("content-length"), range).toBe(String(last - first + 1))
        expect(r.headers.get("accept-ranges"), range).toBe("bytes")
        expect(r.headers.get("content-type"), range).toBe("audio/wav")
        expect(r.body, range).toEqual(bytes.subarray(first, last + 1))
      }

      for (const range of [`bytes=${size}-`, `bytes=${size + 5}-${size + 10}`, "bytes=-0"]) {
        const r = yield* get(range)
        expect(r.status, range).toBe(416)
        expect(r.headers.get("content-range"), range).toBe(`bytes */${size}`)
        expect(r.headers.get("accept-ranges"), range).toBe("bytes")
        expect(JSON.parse(new TextDecoder().decode(r.body)).error, range).toBe("range_not_satisfiable")
      }

      // several ranges: the full body or the first range; a malformed or foreign unit is ignored (full 200)
      const multi = yield* get("bytes=0-9,20-29")
      expect([200, 206]).toContain(multi.status)
      expect(multi.body).toEqual(multi.status === 200 ? bytes : bytes.subarray(0, 10))
      for (const range of ["bytes=abc", "items=0-9", "bytes=9-5", "bytes=1e2-"]) {
        const r = yield* get(range)
        expect(r.status, range).toBe(200)
        expect(r.body, range).toEqual(bytes)
      }
    }))
})
