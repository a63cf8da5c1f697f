/**
 * The upload route under careless and hostile clients, over real HTTP with
 * raw sockets where fetch cannot say it: bodies bigger than the limit in
 * other fields, too many parts, two files, UTF-8 filenames, a multipart
 * type without a boundary, and clients that stop sending halfway.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as net from "node:net"
import * as path from "node:path"
import { audioBytes } from "../../core/test/support/Audio.js"
import { call, cli, exitOf, filesIn, freePort, maxUploadBytes, multipart, serve, start, type Running, tempDir } from "./support/TestServer.js"

/** What a raw client saw: the status (and JSON body) if an answer came, else whether the server closed or went silent. */
interface Answer {
  readonly status: number | "closed" | "timeout"
  readonly body?: any
}

/** Parses one HTTP response from `data`, once its head and Content-Length body are in. */
const parseResponse = (data: Buffer): Answer | undefined => {
  const end = data.indexOf("\r\n\r\n")
  if (end < 0) return undefined
  const head = data.subarray(0, end).toString("latin1")
  const status = Number(head.split(" ")[1])
  const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0)
  if (data.length < end + 4 + length) return undefined
  const text = data.subarray(end + 4, end + 4 + length).toString("utf8")
  let body: any = text
  try {
    body = JSON.parse(text)
  } catch {
    // not JSON
  }
  return { status, body }
}

/**
 * Sends a request over a raw socket: `head` verbatim, then `body` pieces with
 * backpressure. The socket stays open (a half-close would make Node abort
 * the request), so pieces shorter than the declared body are a client that
 * stopped sending halfway. `paced` sends one piece at a time. Gives up after 10 s: only to prove the server
 * does not hang, never a timing assertion.
 */
const rawRequest = (url: string, head: string, body: ReadonlyArray<Uint8Array>, options: { readonly paced?: boolean } = {}) =>
  Effect.promise(() =>
    new Promise<Answer>((resolve) => {
      const socket = net.connect(Number(new URL(url).port), "127.0.0.1")
      let data = Buffer.alloc(0)
      let done = false
      const finish = (answer: Answer) => {
        if (done) return
        done = true
        clearTimeout(timer)
        socket.destroy()
        resolve(answer)
      }
      const timer = setTimeout(() => finish({ status: "timeout" }), 10_000)
      socket.on("data", (chunk: Buffer) => {
        data = Buffer.concat([data, chunk])
        const answer = parseResponse(data)
        if (answer !== undefined) finish(answer)
      })
      socket.on("close", () => finish(parseResponse(data) ?? { status: "closed" }))
      // a reset after the server answered (or gave up on us) is expected; "close" follows it
      socket.on("error", () => undefined)
      socket.write(Buffer.from(head, "utf8"))
      let i = 0
      const pump = (): unknown => {
        while (i < body.length && !done) {
          const more = socket.write(body[i++]!)
          // paced like a real client on a network (curl): one piece per turn, so the server reads them apart
          if (options.paced) return more ? setTimeout(pump, 5) : socket.once("drain", () => setTimeout(pump, 5))
          if (!more) return socket.once("drain", pump)
        }
      }
      pump()
    })
  )

const boundary = "vjBoundary7MA4YWxkTrZu0gW"

/** One multipart part; `filename` (or a raw `disposition` tail) makes it a file. */
const part = (name: string, value: Uint8Array | string, file?: { readonly filename?: string; readonly disposition?: string }) =>
  Buffer.concat([
    Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="${name}"` +
        (file === undefined ? "" : file.disposition ?? `; filename="${file.filename}"`) +
        (file === undefined ? "" : "\r\nContent-Type: application/octet-stream") + "\r\n\r\n",
      "utf8"
    ),
    typeof value === "string" ? Buffer.from(value, "utf8") : Buffer.from(value),
    Buffer.from("\r\n")
  ])
const closing = Buffer.from(`--${boundary}--\r\n`)

const chunked = (pieces: ReadonlyArray<Uint8Array>): Array<Uint8Array> => [
  ...pieces.map((p) => Buffer.concat([Buffer.from(`${p.byteLength.toString(16)}\r\n`), p, Buffer.from("\r\n")])),
  Buffer.from("0\r\n\r\n")
]

const head = (key: string, headers: Record<string, string>) =>
  `POST /entries HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${key}\r\n` +
  Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("") + "\r\n"

const multipartHead = (key: string, extra: Record<string, string> = {}) =>
  head(key, { "Content-Type": `multipart/form-data; boundary=${boundary}`, ...extra })

/** Nothing in the audio directory (not even a partial file) and no entry. */
const expectNothingStored = (s: Running, key: string) =>
  Effect.gen(function*() {
    expect(filesIn(path.join(s.dir, "audio"))).toEqual([])
    expect((yield* call(s.url, key, "/entries")).body.total).toBe(0)
  })

describe("upload route", () => {
  it.scopedLive("the limit covers the whole multipart body: 11 MB of other fields with a 2 MiB limit is 413, nothing stored", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const wav = audioBytes("wav")
      const piece = "x".repeat(64 * 1024)
      /** 18 parts of `bytes` in all: text fields, or files in fields other than `file` (drained, never stored). */
      const extra = (bytes: number, kind: "text" | "files") =>
        Array.from({ length: 18 }, (_, i) => {
          const value = piece.repeat(Math.ceil(bytes / 18 / piece.length))
          return kind === "text" ? part(`f${i}`, value) : part(`attachment${i}`, value, { filename: `a${i}.txt` })
        })
      const file = part("file", wav, { filename: "a.wav" })
      for (const kind of ["text", "files"] as const) {
        const eleven = extra(11_000_000, kind)
        // chunked, so no Content-Length to reject on: the bytes must be counted as they arrive
        for (const pieces of [[...eleven, file, closing], [file, ...eleven, closing]]) {
          const answer = yield* rawRequest(s.url, multipartHead(key, { "Transfer-Encoding": "chunked" }), chunked(pieces))
          expect(answer.status).toBe(413)
          expect(answer.body.error).toBe("payload_too_large")
          yield* expectNothingStored(s, key)
        }
        // just over the limit: the client sends it all and reads a clean 413
        const over = yield* rawRequest(s.url, multipartHead(key, { "Transfer-Encoding": "chunked" }), chunked([file, ...extra(maxUploadBytes, kind), closing]))
        expect(over.status).toBe(413)
        yield* expectNothingStored(s, key)
      }
      // a file with a few small fields still fits
      const fits = yield* call(s.url, key, "/entries", { method: "POST", body: (() => {
        const form = multipart(wav, "file", "a.wav")
        form.append("note", "hello")
        return form
      })() })
      expect(fits.status).toBe(201)
    }), { timeout: 60_000 })

  it.scopedLive("more than 20 parts is 400 at once, whatever their order, and nothing is stored", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const wav = audioBytes("wav")
      const fields = Array.from({ length: 25 }, (_, i) => part(`f${i}`, "tiny"))
      for (const pieces of [[...fields, part("file", wav, { filename: "a.wav" }), closing], [part("file", wav, { filename: "a.wav" }), ...fields, closing]]) {
        const body = Buffer.concat(pieces)
        const slices = Array.from({ length: Math.ceil(body.length / 65536) }, (_, i) => body.subarray(i * 65536, (i + 1) * 65536))
        // answers within the 10 s bound of rawRequest: it does not hang
        const answer = yield* rawRequest(s.url, multipartHead(key, { "Content-Length": String(body.length) }), slices, { paced: true })
        expect(answer.status).toBe(400)
        expect(answer.body.error).toBe("bad_request")
        expect(answer.body.message).toContain("20")
        yield* expectNothingStored(s, key)
      }
      // with fetch as well (FormData, Content-Length known)
      const form = multipart(wav, "file", "a.wav")
      for (let i = 0; i < 25; i++) form.append(`f${i}`, "tiny")
      const viaFetch = yield* call(s.url, key, "/entries", { method: "POST", body: form, signal: AbortSignal.timeout(10_000) })
      expect(viaFetch.status).toBe(400)
      yield* expectNothingStored(s, key)
    }), { timeout: 60_000 })

  it.scopedLive("a second `file` part is 400 and the first is not kept", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const form = multipart(audioBytes("wav"), "file", "a.wav")
      form.append("file", new Blob([audioBytes("mp3")]), "b.mp3")
      const r = yield* call(s.url, key, "/entries", { method: "POST", body: form, signal: AbortSignal.timeout(10_000) })
      expect(r.status).toBe(400)
      expect(r.body.error).toBe("bad_request")
      expect(r.body.message).toContain("one file")
      yield* expectNothingStored(s, key)
    }))

  it.scopedLive("UTF-8 filenames: multipart (raw UTF-8 and filename*) and the raw body's X-Filename", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const name = "日記.mp3"
      const mp3 = audioBytes("mp3")
      const viaForm = yield* call(s.url, key, "/entries", { method: "POST", body: multipart(mp3, "file", name) })
      expect(viaForm.status).toBe(201)
      expect(viaForm.body.originalFilename).toBe(name)
      const star = Buffer.concat([part("file", mp3, { disposition: `; filename="fallback.mp3"; filename*=UTF-8''${encodeURIComponent(name)}` }), closing])
      const viaStar = yield* rawRequest(s.url, multipartHead(key, { "Content-Length": String(star.length) }), [star])
      expect(viaStar.status).toBe(201)
      expect(viaStar.body.originalFilename).toBe(name)
      // the documented header form: percent-encoded UTF-8
      const viaHeader = yield* call(s.url, key, "/entries", { method: "POST", body: mp3, headers: { "content-type": "audio/mpeg", "x-filename": encodeURIComponent(name) } })
      expect(viaHeader.status).toBe(201)
      expect(viaHeader.body.originalFilename).toBe(name)
      // what curl -H 'X-Filename: 日記.mp3' sends: the UTF-8 bytes as they are
      const viaRawHeader = yield* rawRequest(s.url, head(key, { "Content-Type": "audio/mpeg", "X-Filename": name, "Content-Length": String(mp3.byteLength) }), [mp3])
      expect(viaRawHeader.status).toBe(201)
      expect(viaRawHeader.body.originalFilename).toBe(name)
      // a malformed filename* is the client's mistake, not a crash
      const bad = Buffer.concat([part("file", mp3, { disposition: `; filename*=UTF-8''%E6%97` }), closing])
      const badStar = yield* rawRequest(s.url, multipartHead(key, { "Content-Length": String(bad.length) }), [bad])
      expect(badStar.status).toBe(400)
      expect(badStar.body.error).toBe("bad_request")
      expect((yield* call(s.url, key, "/entries")).body.total).toBe(4)
    }))

  it.scopedLive("a valid body whose closing delimiter arrives split across two reads is stored (the parser does not miss it)", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const body = Buffer.concat([part("file", audioBytes("wav"), { filename: "a.wav" }), closing])
      // every split from just before the closing delimiter's CRLF to its last byte
      const splits = Array.from({ length: closing.length + 2 }, (_, i) => body.length - closing.length - 2 + i)
      for (const at of splits) {
        const answer = yield* rawRequest(s.url, multipartHead(key, { "Content-Length": String(body.length) }), [body.subarray(0, at), body.subarray(at)], { paced: true })
        expect({ at, status: answer.status }).toEqual({ at, status: 201 })
      }
      // an epilogue after the closing delimiter is allowed (RFC 2046) and ignored
      const withEpilogue = Buffer.concat([body, Buffer.from("this is the epilogue\r\n".repeat(10))])
      const epilogue = yield* rawRequest(s.url, multipartHead(key, { "Content-Length": String(withEpilogue.length) }), [withEpilogue])
      expect(epilogue.status).toBe(201)
      expect((yield* call(s.url, key, "/entries")).body.total).toBe(splits.length + 1)
    }), { timeout: 120_000 })

  it.scopedLive("multipart/form-data without a boundary is 400 with the error envelope", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      for (const contentType of ["multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; charset=utf-8"]) {
        const r = yield* call(s.url, key, "/entries", { method: "POST", body: Buffer.concat([part("file", audioBytes("wav"), { filename: "a.wav" }), closing]), headers: { "content-type": contentType }, signal: AbortSignal.timeout(10_000) })
        expect(r.status).toBe(400)
        expect(r.body.error).toBe("bad_request")
        expect(r.body.message).toContain("boundary")
        yield* expectNothingStored(s, key)
      }
    }))

  it.scopedLive("a stalled upload is cut off after the idle timeout: 408 (or closed), no partial file, no row", () =>
    Effect.gen(function*() {
      const s = yield* start({ uploadIdleSeconds: 1 })
      const key = yield* s.key("alice")
      const wav = audioBytes("wav")
      const half = wav.subarray(0, Math.floor(wav.byteLength / 2))
      const rawStall = yield* rawRequest(s.url, head(key, { "Content-Type": "audio/wav", "Content-Length": String(wav.byteLength) }), [half])
      expect([408, "closed"]).toContain(rawStall.status)
      if (rawStall.status === 408) expect(rawStall.body.error).toBe("request_timeout")
      yield* expectNothingStored(s, key)
      // halfway through the file part
      const form = Buffer.concat([part("file", wav, { filename: "a.wav" }), closing])
      const formStall = yield* rawRequest(s.url, multipartHead(key, { "Content-Length": String(form.length) }), [form.subarray(0, form.length / 2)])
      expect([408, "closed"]).toContain(formStall.status)
      yield* expectNothingStored(s, key)
      // the file complete, then the client stalls before the closing boundary: the stored file goes too
      const afterFile = Buffer.concat([part("file", wav, { filename: "a.wav" }), part("note", "hel")])
      const lateStall = yield* rawRequest(s.url, multipartHead(key, { "Content-Length": String(afterFile.length + 1000) }), [afterFile])
      expect([408, "closed"]).toContain(lateStall.status)
      yield* expectNothingStored(s, key)
    }), { timeout: 60_000 })

  it.scopedLive("a stalled upload whose client goes away is released at once: no partial file, no row", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const wav = audioBytes("wav")
      const socket = net.connect(Number(new URL(s.url).port), "127.0.0.1")
      socket.on("error", () => undefined)
      socket.write(head(key, { "Content-Type": "audio/wav", "Content-Length": String(wav.byteLength) }))
      socket.write(wav.subarray(0, wav.byteLength / 2))
      yield* Effect.sleep("500 millis")
      socket.destroy()
      for (let i = 0; i < 100 && filesIn(path.join(s.dir, "audio")).length > 0; i++) yield* Effect.sleep("100 millis")
      yield* expectNothingStored(s, key)
    }))

  it.scopedLive("SIGTERM with a stalled upload: the process exits within idle timeout + grace, and the partial file is gone", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir("vj-upload-stall-")
      const port = yield* Effect.promise(freePort)
      const env = { ...process.env, VJ_DATA_DIR: dir, VJ_PORT: String(port), VJ_SHUTDOWN_GRACE_SECONDS: "1", VJ_UPLOAD_IDLE_SECONDS: "2" }
      const key = cli(env, ["users", "create", "alice"]).trim().split("\n").at(-1)!
      const server = yield* serve(env, port)
      const wav = audioBytes("wav")
      const socket = net.connect(port, "127.0.0.1")
      socket.on("error", () => undefined)
      yield* Effect.addFinalizer(() => Effect.sync(() => socket.destroy()))
      socket.write(head(key, { "Content-Type": "audio/wav", "Content-Length": String(wav.byteLength) }))
      socket.write(wav.subarray(0, wav.byteLength / 2))
      yield* Effect.sleep("300 millis")
      server.kill("SIGTERM")
      // a generous bound that proves the stalled client cannot hold the process
      const code = yield* Effect.promise(() => exitOf(server)).pipe(Effect.timeout("15 seconds"))
      expect(code).toBe(0)
      expect(filesIn(path.join(dir, "audio"))).toEqual([])
    }), { timeout: 60_000 })
})
