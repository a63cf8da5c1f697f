/**
 * Turns an untrusted byte stream into a stored recording. Bytes flow to the
 * `BlobStore` in the body's own buffers, pushed from the body's producer
 * (`BlobStore.BlobBody`: a stream, or a socket's read loop) into the store's
 * sink with limit, sniff and hash as plain code in between; only the first
 * 4,100 bytes (what `file-type` needs) are held back until the content is
 * known to be audio. The size limit is enforced while streaming, the sha256
 * is computed on the way, and on any failure nothing is left behind.
 *
 * The client's Content-Type and filename are never trusted: the type comes
 * from the bytes, the stored name is generated, and the original filename
 * is kept only as (sanitised) metadata.
 *
 * @since 0.1.0
 */
import { fileTypeFromBuffer } from "file-type"
import { Deferred, Effect, Exit, Stream } from "effect"
import { createHash, type Hash } from "node:crypto"
import * as path from "node:path"
import { type BlobBody, type BlobKey, type BlobProducer, type BlobSink, BlobStore, makeKey, producerOf } from "./BlobStore.js"
import { type BlobStoreError, InvalidUpload, PayloadTooLarge, UnsupportedMediaType } from "./Errors.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface IngestOptions<E = never, R = never> {
  readonly maxBytes: number
  readonly originalFilename?: string | undefined
  /** Checks the complete recording's file before it is stored for good (`BlobStore.WriteOptions.inspect`). */
  readonly inspect?: ((path: string) => Effect.Effect<void, E, R>) | undefined
}

/**
 * A recording safely in the blob store.
 * @since 0.1.0
 * @category models
 */
export interface StoredAudio {
  readonly blobKey: BlobKey
  readonly mimeType: string
  readonly sizeBytes: number
  readonly sha256: string
  readonly originalFilename: string | null
}

/** How many leading bytes content sniffing looks at (file-type's sample size). @since 0.1.0 */
export const sniffBytes = 4100

/**
 * The accepted containers, by `file-type` extension, and the audio MIME type
 * stored for each. Browsers' audio-only WebM and Safari's generic-brand MP4
 * are labelled video by `file-type`; they are accepted here as audio, and the
 * transcription stage confirms there is an audio stream (`AudioProbe`).
 * @since 0.1.0
 */
export const acceptedAudio: Readonly<Record<string, string>> = {
  mp3: "audio/mpeg",
  m4a: "audio/mp4",
  m4b: "audio/mp4",
  mp4: "audio/mp4",
  f4a: "audio/mp4",
  "3gp": "audio/3gpp",
  "3g2": "audio/3gpp2",
  wav: "audio/wav",
  ogg: "audio/ogg",
  oga: "audio/ogg",
  opus: "audio/ogg",
  spx: "audio/ogg",
  flac: "audio/flac",
  webm: "audio/webm",
  aac: "audio/aac"
}

/**
 * The normalised audio MIME type of `head` (the first bytes of a file), or
 * `UnsupportedMediaType` naming what it is instead.
 * @since 0.1.0
 */
export const sniffAudio = (head: Uint8Array): Effect.Effect<string, UnsupportedMediaType> =>
  Effect.flatMap(Effect.promise(() => detectAudio(head)), (detected) => typeof detected === "string" ? Effect.succeed(detected) : Effect.fail(detected))

/**
 * Fails the stream with `PayloadTooLarge` as soon as more than `maxBytes`
 * have passed (`Stream.take` counts chunks, not bytes).
 * @since 0.1.0
 */
export const limitBytes = (maxBytes: number) =>
<E, R>(self: Stream.Stream<Uint8Array, E, R>): Stream.Stream<Uint8Array, E | PayloadTooLarge, R> =>
  Stream.mapAccumEffect(self, 0, (total, chunk) => {
    const next = total + chunk.byteLength
    return next > maxBytes ? Effect.fail(new PayloadTooLarge({ maxBytes })) : Effect.succeed([next, chunk] as const)
  })

const concat = (chunks: ReadonlyArray<Uint8Array>): Uint8Array => {
  if (chunks.length === 1) return chunks[0]!
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0))
  let offset = 0
  for (const c of chunks) {
    out.set(c, offset)
    offset += c.byteLength
  }
  return out
}

/**
 * The whole per-chunk work of an upload in one pass, as plain code between
 * the body's producer and the store's sink (no stream step per chunk, and
 * each buffer is hashed while it is fresh in the CPU cache): counts bytes
 * and fails with `PayloadTooLarge` as soon as more than `maxBytes` have
 * passed; holds back the first {@link sniffBytes} bytes until they are known
 * to be audio (the producer is held back meanwhile; the detected type goes
 * to `onDetected`), then lets everything through unchanged; feeds what
 * passes to `hash`. Empty input fails with `InvalidUpload`. A refusal stops
 * the producer at once (it is interrupted).
 */
const admitAudio = (maxBytes: number, hash: Hash, onDetected: (mime: string) => void) =>
<E, R>(body: BlobProducer<E, R>): BlobProducer<E | PayloadTooLarge | UnsupportedMediaType | InvalidUpload, R> =>
(sink) =>
  Effect.flatMap(Deferred.make<never, PayloadTooLarge | UnsupportedMediaType | InvalidUpload>(), (refused) => {
    let total = 0
    let held: Array<Uint8Array> = []
    let heldBytes = 0
    let passing = false
    let sniffing: Promise<void> | undefined
    /** The producer's resume while it waits for the sniff. */
    let resumeAfterSniff: (() => void) | undefined
    let stopped = false
    const refuse = (e: PayloadTooLarge | UnsupportedMediaType | InvalidUpload) => {
      stopped = true
      Deferred.unsafeDone(refused, Exit.fail(e))
    }
    const sniff = (): Promise<void> => {
      const head = concat(held)
      held = []
      return detectAudio(head).then((detected) => {
        // the write is over (interrupted, or failed elsewhere): nothing more reaches the sink
        if (stopped) return
        if (typeof detected !== "string") return refuse(detected)
        onDetected(detected)
        passing = true
        // the head, then what came while it was looked at
        const arrived = [head, ...held]
        held = []
        let room = true
        for (const bytes of arrived) {
          hash.update(bytes)
          room = sink.write(bytes)
        }
        const resume = resumeAfterSniff
        resumeAfterSniff = undefined
        if (resume !== undefined) room ? resume() : sink.drained(resume)
      }, (cause) => {
        stopped = true
        Deferred.unsafeDone(refused, Exit.die(cause))
      })
    }
    const admitted: BlobSink = {
      write: (bytes) => {
        // refused: the producer is being stopped; what it still pushes goes nowhere
        if (stopped) return false
        total += bytes.byteLength
        if (total > maxBytes) {
          refuse(new PayloadTooLarge({ maxBytes }))
          return false
        }
        if (passing) {
          hash.update(bytes)
          return sink.write(bytes)
        }
        held.push(bytes)
        heldBytes += bytes.byteLength
        if (heldBytes >= sniffBytes && sniffing === undefined) sniffing = sniff()
        // held back until the sniff has answered
        return sniffing === undefined
      },
      drained: (resume) => {
        if (passing) return sink.drained(resume)
        resumeAfterSniff = resume
      }
    }
    // a body shorter than the sniff sample is checked when it ends
    const ended = Effect.suspend(() => {
      if (sniffing === undefined) {
        if (heldBytes === 0) return Effect.fail(new InvalidUpload({ message: "the upload is empty" }))
        sniffing = sniff()
      }
      const sniffed = sniffing
      return Effect.zipRight(Effect.promise(() => sniffed), Effect.suspend(() => (passing ? Effect.void : Deferred.await(refused))))
    })
    return Effect.raceFirst(Effect.zipRight(body(admitted), ended), Deferred.await(refused)).pipe(
      Effect.ensuring(Effect.sync(() => {
        stopped = true
      }))
    )
  })

/** The normalised audio MIME type of `head`, or the refusal naming what it is instead. */
const detectAudio = (head: Uint8Array): Promise<string | UnsupportedMediaType> =>
  head.byteLength === 0
    ? Promise.resolve(new UnsupportedMediaType({}))
    : fileTypeFromBuffer(head, { mpegOffsetTolerance: 10 }).then((type) => {
      const accepted = type === undefined ? undefined : acceptedAudio[type.ext]
      return accepted ?? new UnsupportedMediaType(type === undefined ? {} : { detected: type.mime })
    })

/** Keeps a client's filename as harmless metadata: base name, no control characters, ≤ 255 chars. */
export const sanitizeFilename = (name: string | undefined): string | null => {
  if (name === undefined) return null
  // eslint-disable-next-line no-control-regex
  const base = path.posix.basename(name.replace(/\\/g, "/")).replace(/[\u0000-\u001f\u007f]/g, "").trim()
  return base === "" || base === "." || base === ".." ? null : base.slice(0, 255)
}

/**
 * Streams `body` into the blob store as a new recording.
 * @since 0.1.0
 */
export const ingest = <E, R, E2 = never, R2 = never>(
  body: BlobBody<E, R>,
  options: IngestOptions<E2, R2>
): Effect.Effect<
  StoredAudio,
  E | E2 | PayloadTooLarge | UnsupportedMediaType | InvalidUpload | BlobStoreError,
  R | R2 | BlobStore
> =>
  Effect.gen(function*() {
    const blobs = yield* BlobStore
    const blobKey = makeKey()
    let detected: string | undefined
    const hash = createHash("sha256")
    const { sizeBytes } = yield* blobs.write(
      blobKey,
      admitAudio(options.maxBytes, hash, (mime) => {
        detected = mime
      })(producerOf(body)),
      { inspect: options.inspect }
    )
    // a successful write means every byte passed the sniff, which set the type
    const mimeType = detected!
    return {
      blobKey,
      mimeType,
      sizeBytes,
      sha256: hash.digest("hex"),
      originalFilename: sanitizeFilename(options.originalFilename)
    }
  })
