/**
 * The upload route's body handling: a multipart form (the audio in field
 * `file`) or a raw body, streamed straight into `VoiceJournal.ingest`.
 * Nothing is buffered; a rejected upload leaves no file and no row, and the
 * client gets its 4xx as a response rather than a connection reset.
 *
 * Every byte of the request counts: a multipart body may be at most the
 * upload limit plus {@link multipartOverhead} in all (other parts included),
 * has at most {@link maxParts} parts and exactly one `file`. A client that
 * sends nothing for the idle timeout is answered `408` and cut off, and what
 * it had sent is removed.
 *
 * The multipart parser is `Multipart.makeChannel` (multipasta), fed from the
 * request with guards against its traps: a closing delimiter split across
 * two reads goes unseen and the request hangs (bytes are handed on with a
 * short hold-back, see {@link multipartFeed}); a body that ends early or an
 * input that fails leaves a file part's reader spinning (such failures are
 * raised beside the parser, never into it); raw UTF-8 in a part's
 * `filename` loses the part's name (part headers reach it as their Latin-1
 * view); a malformed `filename*` throws (a 400 here); and `withMaxParts`
 * silently truncates (parts are counted here).
 *
 * @since 0.1.0
 */
import { type HttpServerRequest, HttpServerResponse, Multipart } from "@effect/platform"
import { NodeHttpServerRequest } from "@effect/platform-node"
import { type BlobStore, Errors, VoiceJournal } from "@voice-journal/core"
import { Channel, Chunk, Data, Deferred, Effect, Exit, Option, Stream } from "effect"
import { type ApiError, CurrentUser } from "./Api.js"
import { type Tagged, toApiError } from "./ApiErrors.js"

/** The multipart field that carries the audio. @since 0.1.0 */
export const uploadField = "file"

/** The most parts a multipart upload may have. @since 0.1.0 */
export const maxParts = 20

/** What a multipart body may carry beyond the file: its framing and a few small fields. @since 0.1.0 */
export const multipartOverhead = 64 * 1024

/** The largest text field (fields are held in memory by the parser; we read none). */
const maxFieldBytes = 64 * 1024

/** Default seconds without a byte before an upload is cut off (`VJ_UPLOAD_IDLE_SECONDS`). @since 0.1.0 */
export const defaultIdleSeconds = 30

/**
 * The client stopped sending (no byte for `idleSeconds`) before the body was
 * complete. Answered by {@link stalledResponse}.
 * @since 0.1.0
 * @category errors
 */
export class UploadStalled extends Data.TaggedError("UploadStalled")<{ readonly idleSeconds: number }> {
  override get message() {
    return `no data for ${this.idleSeconds} s: the upload was cut off; send the whole body without pausing`
  }
}

/**
 * `408` for a stalled upload, with `Connection: close`: Node then closes the
 * socket once the answer is out, so the stalled client cannot hold the
 * connection (or the server's shutdown) any longer.
 * @since 0.1.0
 */
export const stalledResponse = (e: UploadStalled) =>
  HttpServerResponse.unsafeJson({ error: "request_timeout", message: e.message }, { status: 408, headers: { connection: "close" } })

/** @since 0.1.0 */
export interface UploadOptions {
  /** The largest accepted recording. */
  readonly maxBytes: number
  /** Seconds without a byte from the client before the upload is cut off (default {@link defaultIdleSeconds}). */
  readonly idleSeconds?: number | undefined
}

type Failure = Tagged | UploadStalled

/**
 * Starts reading and discarding what the client is still sending, so the 4xx
 * we answer right away reaches it as a response instead of a connection
 * reset. Returns at once. Gives up, and cuts the connection, after
 * `maxBytes` more bytes, `idleSeconds` without any, or 30 s in all.
 * (Node leaves our listener alone: it only drains a request itself when the
 * handler never read from it.) Used by every route that rejects a body.
 * @since 0.1.0
 */
export const discardRest = (request: HttpServerRequest.HttpServerRequest, maxBytes: number, idleSeconds: number) =>
  Effect.sync(() => {
    const incoming = NodeHttpServerRequest.toIncomingMessage(request)
    if (incoming.complete || incoming.destroyed) return
    let seen = 0
    const cut = () => {
      clear()
      incoming.destroy()
    }
    const total = setTimeout(cut, 30_000).unref()
    let idle = setTimeout(cut, idleSeconds * 1000).unref()
    const clear = () => {
      clearTimeout(total)
      clearTimeout(idle)
    }
    incoming.on("data", (chunk: Buffer) => {
      seen += chunk.length
      clearTimeout(idle)
      if (seen > maxBytes) return cut()
      idle = setTimeout(cut, idleSeconds * 1000).unref()
    })
    incoming.once("end", clear)
    incoming.once("close", clear)
    incoming.resume()
  })

/**
 * The request body as a stream that fails with {@link UploadStalled} when no
 * byte arrives for `idleSeconds`. The clock runs only while we wait for the
 * client (time spent writing to disk does not count): one Node timer, armed
 * when the socket's buffer is empty and we wait for it — not
 * `Stream.timeoutFail`, which forks a sleeping fiber for every pull and cost
 * more CPU than the whole ingest path (`pnpm bench:upload`). Reads like
 * `NodeStream.fromReadable` (everything buffered goes out as one chunk), but
 * never destroys the request: that would reset the socket, and the client
 * would see a reset instead of our 4xx.
 */
const requestBody = (request: HttpServerRequest.HttpServerRequest, idleSeconds: number): Stream.Stream<Uint8Array, Failure> =>
  Stream.fromChannel(Channel.suspend(() => {
    const incoming = NodeHttpServerRequest.toIncomingMessage(request)
    if (!incoming.readable) return Channel.void
    let exit: Exit.Exit<void, Failure> | undefined
    const latch = Effect.unsafeMakeLatch(false)
    const onReadable = () => latch.unsafeOpen()
    const onError = (cause: unknown) => {
      exit = Exit.fail({ _tag: "RequestError", message: cause instanceof Error ? cause.message : "the connection failed" })
      latch.unsafeOpen()
    }
    const onEnd = () => {
      exit ??= Exit.void
      latch.unsafeOpen()
    }
    const stalled = () => {
      exit ??= Exit.fail(new UploadStalled({ idleSeconds }))
      latch.unsafeOpen()
    }
    let idle: ReturnType<typeof setTimeout> | undefined
    const waiting = (on: boolean) => {
      clearTimeout(idle)
      idle = on ? setTimeout(stalled, idleSeconds * 1000).unref() : undefined
    }
    incoming.on("readable", onReadable)
    incoming.on("error", onError)
    incoming.on("end", onEnd)
    const read: Channel.Channel<Chunk.Chunk<Uint8Array>, unknown, Failure> = Channel.suspend(function loop(): Channel.Channel<
      Chunk.Chunk<Uint8Array>,
      unknown,
      Failure
    > {
      const chunks: Array<Uint8Array> = []
      for (let item = incoming.read() as Uint8Array | null; item !== null; item = incoming.read() as Uint8Array | null) {
        chunks.push(item)
      }
      if (chunks.length > 0) return Channel.flatMap(Channel.write(Chunk.unsafeFromArray(chunks)), loop)
      if (exit !== undefined) return Channel.fromEffect(exit)
      latch.unsafeClose()
      waiting(true)
      return Channel.flatMap(Channel.fromEffect(Effect.ensuring(latch.await, Effect.sync(() => waiting(false)))), loop)
    })
    return Channel.ensuring(
      read,
      Effect.sync(() => {
        waiting(false)
        incoming.off("readable", onReadable)
        incoming.off("error", onError)
        incoming.off("end", onEnd)
      })
    )
  }))

/**
 * A raw request body as a producer (`BlobStore.BlobProducer`): every socket
 * read goes straight to the ingest's sink in the `data` event that brought
 * it (limit, sniff and hash, then the write queue: plain code, no stream
 * step per read), and the request is paused while the sink is full. Fails
 * with {@link UploadStalled} when no byte arrives for `idleSeconds` while we
 * wait for the client (time the sink holds us back does not count): one
 * Node timer for the whole body. Never destroys the request (interrupted,
 * it only stops listening and pauses it): that would reset the socket, and
 * the client would see a reset instead of our 4xx.
 */
const requestProducer = (request: HttpServerRequest.HttpServerRequest, idleSeconds: number): BlobStore.BlobProducer<Failure, never> =>
(sink) =>
  Effect.async<void, Failure>((resume) => {
    const incoming = NodeHttpServerRequest.toIncomingMessage(request)
    if (!incoming.readable) return resume(Effect.void)
    const idleMs = idleSeconds * 1000
    let lastData = Date.now()
    /** Paused because the sink is full: the idle clock does not run. */
    let heldBack = false
    const onDrained = () => {
      heldBack = false
      lastData = Date.now()
      incoming.resume()
    }
    const onData = (bytes: Uint8Array) => {
      lastData = Date.now()
      if (sink.write(bytes)) return
      heldBack = true
      incoming.pause()
      sink.drained(onDrained)
    }
    const onError = (cause: unknown) =>
      finish(Effect.fail({ _tag: "RequestError", message: cause instanceof Error ? cause.message : "the connection failed" }))
    const onEnd = () => finish(Effect.void)
    const checkIdle = () => {
      const quiet = Date.now() - lastData
      if (heldBack || quiet < idleMs) {
        idle = setTimeout(checkIdle, heldBack ? idleMs : idleMs - quiet).unref()
        return
      }
      finish(Effect.fail(new UploadStalled({ idleSeconds })))
    }
    let idle = setTimeout(checkIdle, idleMs).unref()
    const stop = () => {
      clearTimeout(idle)
      incoming.off("data", onData)
      incoming.off("error", onError)
      incoming.off("end", onEnd)
    }
    const finish = (exit: Effect.Effect<void, Failure>) => {
      stop()
      resume(exit)
    }
    incoming.on("data", onData)
    incoming.on("error", onError)
    incoming.on("end", onEnd)
    return Effect.sync(() => {
      stop()
      // what the client still sends waits in the socket (or for discardRest) instead of flowing to no one
      incoming.pause()
    })
  })

/** The `boundary` parameter of a multipart Content-Type (RFC 2046: 1–70 characters), if any. */
const boundaryOf = (contentType: string): string | undefined => {
  const match = /;\s*boundary\s*=\s*(?:"([^"]*)"|([^;\s]*))/i.exec(contentType)
  const boundary = match?.[1] ?? match?.[2]
  return boundary !== undefined && boundary.length > 0 && boundary.length <= 70 ? boundary : undefined
}

/** Each byte ≥ 0x80 as the UTF-8 of the Latin-1 character with that code (undone by {@link fromLatin1View}). */
const latin1View = (bytes: Buffer): Buffer => {
  let high = 0
  for (const b of bytes) if (b >= 0x80) high++
  if (high === 0) return bytes
  const out = Buffer.allocUnsafe(bytes.length + high)
  let i = 0
  for (const b of bytes) {
    if (b < 0x80) {
      out[i++] = b
    } else {
      out[i++] = 0xc0 | (b >> 6)
      out[i++] = 0x80 | (b & 0x3f)
    }
  }
  return out
}

/**
 * A name that arrived as Latin-1 characters standing for bytes (Node's
 * header values, {@link latin1View}) decoded as the UTF-8 it is; a name that
 * is not valid UTF-8 that way is a real Latin-1 name and stays as it is.
 */
const fromLatin1View = (name: string): string => {
  // eslint-disable-next-line no-control-regex
  if (!/[\u0080-\u00ff]/.test(name) || /[^\u0000-\u00ff]/.test(name)) return name
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(Buffer.from(name, "latin1"))
  } catch {
    // not UTF-8: a Latin-1 name, kept as it came
    return name
  }
}

/**
 * The bytes the multipart parser gets, and whether the closing delimiter
 * went past (what follows it, an epilogue, is dropped: the parser would
 * take it for another part). Works around two multipasta traps without
 * parsing the body itself:
 *
 * - it misses a closing `--` that arrives in the write after its delimiter,
 *   and then never finishes (seen in about 8 % of bodies cut into small
 *   random pieces): every chunk is handed on with its last bytes held back
 *   to the next one, so a delimiter and what follows it reach the parser in
 *   one write;
 * - its Content-Disposition parser rejects characters above U+00FF, so a
 *   raw UTF-8 `filename="日記.mp3"` (what browsers and fetch send) loses the
 *   part's name and filename: bytes ≥ 0x80 in part headers are handed on as
 *   their Latin-1 view, and names are decoded back with {@link fromLatin1View}.
 *
 * Delimiters are found with a small window over the chunk edges.
 * @internal
 */
export const multipartFeed = (boundary: string) => {
  const delimiter = Buffer.from(`\r\n--${boundary}`)
  const closingDelimiter = Buffer.from(`\r\n--${boundary}--`)
  const headersEnd = Buffer.from("\r\n\r\n")
  const hold = closingDelimiter.length + 2
  // the parser reads the body as if a CRLF came first (the first delimiter has none): so do the searches
  let closingWindow: Buffer = Buffer.from("\r\n")
  let closed = false
  let inHeaders = false
  let window: Buffer = Buffer.from("\r\n")
  let held: Buffer = Buffer.alloc(0)

  /** Looks for `needle` across the edge (the window holds the previous chunk's last bytes); returns where it ends in `chunk`. */
  const find = (needle: Buffer, previous: Buffer, chunk: Buffer): number => {
    const scan = previous.length === 0 ? chunk : Buffer.concat([previous, chunk.subarray(0, needle.length - 1)])
    const atEdge = previous.length === 0 ? -1 : scan.indexOf(needle)
    if (atEdge >= 0) return atEdge + needle.length - previous.length
    const inside = chunk.indexOf(needle)
    return inside < 0 ? -1 : inside + needle.length
  }
  const tail = (previous: Buffer, chunk: Buffer, n: number) =>
    Buffer.from(Buffer.concat([previous, chunk.subarray(-n)]).subarray(-n))

  /** `chunk` with the part headers in it as their Latin-1 view. */
  const transcode = (chunk: Buffer): Array<Buffer> => {
    const out: Array<Buffer> = []
    let rest = chunk
    while (rest.length > 0) {
      const needle = inHeaders ? headersEnd : delimiter
      const end = find(needle, window, rest)
      if (end < 0) {
        out.push(inHeaders ? latin1View(rest) : rest)
        window = tail(window, rest, needle.length - 1)
        break
      }
      out.push(inHeaders ? latin1View(rest.subarray(0, end)) : rest.subarray(0, end))
      rest = rest.subarray(end)
      inHeaders = !inHeaders
      window = Buffer.alloc(0)
    }
    return out
  }

  return {
    /** The bytes to hand on for `bytes` (possibly none yet). */
    push: (bytes: Uint8Array): ReadonlyArray<Uint8Array> => {
      // after the closing delimiter: an epilogue, which the parser would take for another part
      if (closed) return []
      let chunk = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
      const closingEnd = find(closingDelimiter, closingWindow, chunk)
      closingWindow = tail(closingWindow, chunk, closingDelimiter.length - 1)
      if (closingEnd >= 0) {
        closed = true
        chunk = chunk.subarray(0, closingEnd)
      }
      const all = Buffer.concat([held, ...transcode(chunk)])
      if (all.length <= hold) {
        held = Buffer.from(all)
        return []
      }
      held = Buffer.from(all.subarray(all.length - hold))
      return [all.subarray(0, all.length - hold)]
    },
    /** What is still held, at the end of the body. */
    flush: (): ReadonlyArray<Uint8Array> => (held.length > 0 ? [held] : []),
    closed: () => closed
  }
}

/**
 * The multipart parts of the request. Failures of the body itself (too
 * large, stalled, ended before its closing delimiter, the connection) are not
 * raised into the parser — a file part being read when its input fails would
 * spin forever — but reported to `failures`, and the input then waits for the
 * caller to give up (it races `failures`).
 */
const multipartParts = (
  request: HttpServerRequest.HttpServerRequest,
  boundary: string,
  limit: number,
  idleSeconds: number,
  failures: Deferred.Deferred<never, Failure>
) => {
  const feed = multipartFeed(boundary)
  const tooLarge = new Errors.PayloadTooLarge({ maxBytes: limit })
  const input = requestBody(request, idleSeconds).pipe(
    Stream.mapAccumEffect(0, (total, chunk) => {
      const next = total + chunk.byteLength
      return next > limit ? Effect.fail(tooLarge) : Effect.succeed([next, feed.push(chunk)] as const)
    }),
    Stream.flattenIterables,
    Stream.concat(Stream.suspend(() =>
      feed.closed()
        ? Stream.fromIterable(feed.flush())
        : Stream.fail(new Errors.InvalidUpload({ message: "the multipart body ended before its closing boundary" }))
    )),
    Stream.catchAll((e: Failure) => Stream.fromEffect(Deferred.fail(failures, e)).pipe(Stream.drain, Stream.concat(Stream.never)))
  )
  return Stream.pipeThroughChannel(input, Multipart.makeChannel<never>(request.headers))
}

/** Maps what reading a multipart body can raise to our error shapes. */
const multipartFailure = (e: Multipart.MultipartError): Tagged =>
  e.reason === "FieldTooLarge"
    ? { _tag: "PayloadTooLarge", message: `a form field exceeds ${maxFieldBytes} bytes (only the "${uploadField}" part is read)` }
    : { _tag: "InvalidUpload", message: "the multipart body is malformed (a part's headers could not be read)" }

/**
 * Reads a client's filename from `X-Filename`: percent-encoded UTF-8
 * (`%E6%97%A5%E8%A8%98.mp3`, the documented form), or UTF-8 sent as it is
 * (what `curl -H 'X-Filename: 日記.mp3'` does; Node reads header bytes as
 * Latin-1, so they are decoded again).
 * @since 0.1.0
 */
export const headerFilename = (value: string | undefined): string | undefined => {
  if (value === undefined) return undefined
  const name = fromLatin1View(value)
  if (!/%[0-9a-f]{2}/i.test(name)) return name
  try {
    return decodeURIComponent(name)
  } catch {
    // a literal "%" in a plain name ("100% done.mp3"): kept as it came
    return name
  }
}

/**
 * Streams an upload into `ingest`: multipart (field `file`, other parts
 * drained, at most 20) or a raw body. Rejects on Content-Length before
 * reading a byte. Fails with {@link UploadStalled} when the client stops
 * sending; answer it with {@link stalledResponse}.
 * @since 0.1.0
 */
export const upload = (options: UploadOptions) => {
  const { maxBytes } = options
  const idleSeconds = options.idleSeconds ?? defaultIdleSeconds
  const reject = (request: HttpServerRequest.HttpServerRequest, e: Failure): Effect.Effect<never, ApiError | UploadStalled> =>
    e._tag === "UploadStalled"
      ? Effect.fail(e as UploadStalled)
      : discardRest(request, maxBytes, idleSeconds).pipe(Effect.zipRight(toApiError(e)))
  return Effect.fn("Http.upload")(function*(request: HttpServerRequest.HttpServerRequest) {
    const user = yield* CurrentUser
    const journal = yield* VoiceJournal.VoiceJournal
    const contentType = request.headers["content-type"] ?? ""
    const isMultipart = /^multipart\/form-data\s*(;|$)/i.test(contentType)
    const declared = Number(request.headers["content-length"] ?? Number.NaN)
    const bodyLimit = isMultipart ? maxBytes + multipartOverhead : maxBytes
    // validated by the route's header schema (1–200 characters)
    const idempotencyKey = request.headers["idempotency-key"]
    if (Number.isFinite(declared) && declared > bodyLimit) {
      return yield* Effect.fail({ error: "payload_too_large", message: `upload exceeds the limit of ${maxBytes} bytes` } as const)
    }
    if (!isMultipart) {
      const body = requestProducer(request, idleSeconds)
      return yield* journal.ingest(user.id, body, { originalFilename: headerFilename(request.headers["x-filename"]), maxBytes, idempotencyKey }).pipe(
        Effect.catchAll((e) => reject(request, e))
      )
    }
    const boundary = boundaryOf(contentType)
    if (boundary === undefined) {
      return yield* reject(request, {
        _tag: "InvalidUpload",
        message: "multipart/form-data needs a boundary parameter: Content-Type: multipart/form-data; boundary=<1–70 characters>"
      })
    }
    let stored: (VoiceJournal.EntryDetails & { readonly replayed: boolean }) | undefined
    let parts = 0
    const failures = yield* Deferred.make<never, Failure>()
    const consume = multipartParts(request, boundary, bodyLimit, idleSeconds, failures).pipe(
      Stream.mapError(multipartFailure),
      Stream.runForEach((part) =>
        Effect.gen(function*() {
          if (++parts > maxParts) {
            return yield* Effect.fail(new Errors.InvalidUpload({ message: `a multipart upload has at most ${maxParts} parts` }))
          }
          if (!Multipart.isFile(part)) return
          if (part.key !== uploadField) return yield* Stream.runDrain(part.content.pipe(Stream.mapError(multipartFailure)))
          if (stored !== undefined) {
            return yield* Effect.fail(
              new Errors.InvalidUpload({ message: `only one file per upload: the body has a second "${uploadField}" part` })
            )
          }
          stored = yield* journal.ingest(user.id, part.content.pipe(Stream.mapError(multipartFailure)), {
            originalFilename: fromLatin1View(part.name),
            maxBytes,
            idempotencyKey
          })
        })
      ),
      // multipasta throws a URIError from its parser for a malformed `filename*=` (e.g. `UTF-8''%E6%97`)
      Effect.catchSomeDefect((defect) =>
        defect instanceof URIError
          ? Option.some(Effect.fail(new Errors.InvalidUpload({ message: "the file part's filename* is not valid percent-encoded UTF-8" })))
          : Option.none()
      ),
      Multipart.withLimits({ maxParts: Option.none(), maxFileSize: Option.none(), maxTotalSize: Option.none(), maxFieldSize: maxFieldBytes })
    )
    const consumed = yield* Effect.raceFirst(consume, Deferred.await(failures)).pipe(
      // the upload as a whole failed or was interrupted (client gone, shutdown): a file stored before that does not stay
      Effect.onExit((exit) =>
        // (a replayed entry is the first upload's: it stays)
        Exit.isFailure(exit) && stored !== undefined && !stored.replayed
          ? journal.deleteEntry(user.id, stored.entry.id).pipe(
            Effect.catchAll((e) => Effect.logWarning("could not remove the entry of a failed upload", e))
          )
          : Effect.void
      ),
      Effect.either
    )
    if (consumed._tag === "Left") return yield* reject(request, consumed.left)
    if (stored === undefined) {
      return yield* reject(request, { _tag: "InvalidUpload", message: `no file in multipart field "${uploadField}"` })
    }
    return stored
  })
}
