/**
 * The upload route's body handling: a multipart form (the audio in field
 * `file`) or a raw body, streamed straight into `VoiceJournal.ingest`.
 * Nothing is buffered; a rejected upload leaves no file and no row, and the
 * client gets its 4xx as a response rather than a connection reset.
 *
 * @since 0.1.0
 */
import { type HttpServerRequest, Multipart } from "@effect/platform"
import { NodeHttpServerRequest, NodeStream } from "@effect/platform-node"
import { VoiceJournal } from "@voice-journal/core"
import { Effect, Stream } from "effect"
import { CurrentUser } from "./Api.js"
import { orApiError, type Tagged, toApiError } from "./ApiErrors.js"

/** The multipart field that carries the audio. @since 0.1.0 */
export const uploadField = "file"
const maxParts = 20

/**
 * Reads and discards what the client is still sending (at most `maxBytes`
 * more), so a 4xx sent mid-upload reaches it as a response instead of a
 * connection reset. Gives up after 30 s.
 */
const discardRest = (request: HttpServerRequest.HttpServerRequest, maxBytes: number) =>
  Effect.async<void>((resume) => {
    const incoming = NodeHttpServerRequest.toIncomingMessage(request)
    if (incoming.complete || incoming.destroyed) return resume(Effect.void)
    let seen = 0
    const done = () => {
      clearTimeout(timer)
      resume(Effect.void)
    }
    const timer = setTimeout(() => {
      incoming.destroy()
      done()
    }, 30_000)
    incoming.on("data", (chunk: Buffer) => {
      seen += chunk.length
      if (seen > maxBytes) {
        incoming.destroy()
        done()
      }
    })
    incoming.once("end", done)
    incoming.once("close", done)
    incoming.resume()
  })

/**
 * Fails once the request body has ended but the multipart parser has not
 * finished shortly after: a body cut off before its closing boundary would
 * otherwise leave the parser waiting forever.
 */
const truncated = (request: HttpServerRequest.HttpServerRequest) =>
  Effect.async<void>((resume) => {
    const incoming = NodeHttpServerRequest.toIncomingMessage(request)
    if (incoming.complete) return resume(Effect.void)
    incoming.once("end", () => resume(Effect.void))
  }).pipe(
    Effect.zipRight(Effect.sleep("2 seconds")),
    Effect.zipRight(Effect.fail({ _tag: "InvalidUpload", message: "the multipart body ended before its closing boundary" } as const))
  )

/**
 * Streams an upload into `ingest`: multipart (field `file`, other parts
 * drained, at most 20) or a raw body. Rejects on Content-Length before
 * reading a byte.
 * @since 0.1.0
 */
export const upload = (maxBytes: number) =>
  Effect.fn("Http.upload")(function*(request: HttpServerRequest.HttpServerRequest) {
    const user = yield* CurrentUser
    const journal = yield* VoiceJournal.VoiceJournal
    const declared = Number(request.headers["content-length"] ?? Number.NaN)
    if (Number.isFinite(declared) && declared > maxBytes) {
      return yield* Effect.fail({ error: "payload_too_large", message: `upload exceeds the limit of ${maxBytes} bytes` } as const)
    }
    const contentType = request.headers["content-type"] ?? ""
    if (!contentType.toLowerCase().startsWith("multipart/form-data")) {
      const filename = request.headers["x-filename"]
      // not `request.stream`: stopping that destroys the socket, and the client would see a reset instead of our 4xx
      const body = NodeStream.fromReadable(
        () => NodeHttpServerRequest.toIncomingMessage(request),
        (cause) => ({ _tag: "RequestError", message: String(cause) }) as const,
        { closeOnDone: false }
      )
      return yield* orApiError(journal.ingest(user.id, body, { originalFilename: filename, maxBytes })).pipe(
        Effect.tapError(() => discardRest(request, maxBytes))
      )
    }
    let stored: VoiceJournal.EntryDetails | undefined
    let parts = 0
    const consumed = yield* Effect.raceFirst(request.multipartStream.pipe(
      Stream.mapEffect((part) =>
        Effect.gen(function*() {
          parts++
          if (parts > maxParts) return yield* Effect.fail({ _tag: "InvalidUpload", message: `more than ${maxParts} parts` } as const)
          if (!Multipart.isFile(part)) return
          if (part.key === uploadField && stored === undefined) {
            stored = yield* journal.ingest(user.id, part.content, { originalFilename: part.name, maxBytes })
          } else {
            yield* Stream.runDrain(part.content)
          }
        })
      ),
      Stream.runDrain
    ), truncated(request)).pipe(Effect.either)
    if (consumed._tag === "Left") {
      // the body broke after the file was stored: the upload as a whole failed, so nothing stays
      if (stored !== undefined) yield* journal.deleteEntry(user.id, stored.entry.id).pipe(Effect.ignore)
      yield* discardRest(request, maxBytes)
      return yield* toApiError(consumed.left as Tagged)
    }
    if (stored === undefined) {
      return yield* Effect.fail({ error: "bad_request", message: `no file in multipart field "${uploadField}"` } as const)
    }
    return stored
  })

