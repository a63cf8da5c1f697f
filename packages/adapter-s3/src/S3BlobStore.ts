/**
 * Recordings in S3-compatible object storage (AWS S3, MinIO, Cloudflare R2,
 * Garage, …), so that nodes need no shared filesystem. Objects are named
 * `<prefix>/<key>`; keys are generated ones only (`BlobStore.checkKey`).
 *
 * - Writes stream as a multipart upload (`@aws-sdk/lib-storage`, reading the
 *   body pushed into a `PassThrough`) in parts of
 *   `partSize` with at most `queueSize` in flight, so an upload holds about
 *   `(queueSize + 1) × partSize` whatever the file's size; a body of one
 *   part or less is one `PutObject`. Both are atomic: the object appears
 *   only once it is complete. On failure or interruption the body is ended
 *   and the multipart upload aborted (`AbortMultipartUpload`) before the
 *   write returns, so nothing is left behind.
 * - A process killed mid-upload leaves a pending multipart upload (parts,
 *   no object: nothing visible). Start-up aborts those of this prefix older
 *   than `staleAfter`, like the filesystem store's stale partial files; a
 *   bucket lifecycle rule (`AbortIncompleteMultipartUpload`) does it too.
 * - Reads are `GetObject` streams (`Range` for ranged reads), never buffered.
 * - `localPath` downloads a scoped temp copy for engines that read files.
 *
 * Credentials and region come from the SDK's own chain (`AWS_ACCESS_KEY_ID`,
 * `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, profiles, instance roles) unless
 * given in `client`; they never pass through this module's messages.
 *
 * @since 0.1.0
 */
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  S3Client,
  type S3ClientConfig
} from "@aws-sdk/client-s3"
import { Upload } from "@aws-sdk/lib-storage"
import { FileSystem } from "@effect/platform"
import { NodeFileSystem, NodeStream } from "@effect/platform-node"
import { BlobStore, Errors } from "@voice-journal/core"
import { Chunk, Clock, Duration, Effect, Exit, Layer, Option, Stream } from "effect"
import * as path from "node:path"
import { PassThrough, type Readable } from "node:stream"

/**
 * Where and how to store.
 * @since 0.1.0
 * @category models
 */
export interface Config {
  readonly bucket: string
  /** Objects go under `<prefix>/` ("" or absent: the bucket's root). */
  readonly prefix?: string | undefined
  /**
   * Passed to `S3Client`: `region`, `endpoint` (MinIO, R2, Garage),
   * `forcePathStyle`, `credentials`, … Absent: the SDK's defaults and
   * `AWS_*` environment variables.
   */
  readonly client?: S3ClientConfig | undefined
  /** Bytes per multipart part (S3's minimum, 5 MiB, by default). */
  readonly partSize?: number | undefined
  /** Parts uploaded at once per write (default 2). */
  readonly queueSize?: number | undefined
  /** Keys per `ListObjectsV2` page when listing (default 1000, S3's maximum). */
  readonly pageSize?: number | undefined
  /**
   * Pending multipart uploads (a killed process's) older than this are
   * aborted at start-up (default `BlobStore.defaultStaleAfter`, 1 hour).
   */
  readonly staleAfter?: Duration.DurationInput | undefined
}

/** @since 0.1.0 */
export const defaultPartSize = 5 * 1024 * 1024

/** An SDK or network error in a few words: its name, HTTP status and message (no request, no credentials). */
const describe = (cause: unknown): string => {
  if (typeof cause !== "object" || cause === null) return String(cause)
  const e = cause as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } }
  const code = Errors.networkErrorCode(cause)
  const status = e.$metadata?.httpStatusCode
  return [e.name, status !== undefined ? `HTTP ${status}` : undefined, code !== e.name ? code : undefined, e.message]
    .filter((part) => part !== undefined && part !== "")
    .join(": ")
}

const isNotFound = (cause: unknown) => {
  const e = cause as { name?: string; $metadata?: { httpStatusCode?: number } }
  return e?.name === "NoSuchKey" || e?.name === "NotFound" || e?.$metadata?.httpStatusCode === 404
}

/** `take` bytes after the first `skip` bytes of a byte stream; stops reading once it has them. */
const slice = <E>(self: Stream.Stream<Uint8Array, E>, skip: number, take: number): Stream.Stream<Uint8Array, E> =>
  Stream.suspend(() => {
    let toSkip = skip
    let left = take
    return self.pipe(
      Stream.map((bytes) => {
        if (toSkip >= bytes.byteLength) {
          toSkip -= bytes.byteLength
          return bytes.subarray(0, 0)
        }
        const part = bytes.subarray(toSkip, toSkip + left)
        toSkip = 0
        left -= part.byteLength
        return part
      }),
      Stream.takeUntil(() => left === 0),
      Stream.filter((bytes) => bytes.byteLength > 0)
    )
  })

/**
 * The store on one bucket and prefix. Checks at start that the bucket is
 * reachable with the credentials at hand (so a wrong bucket, endpoint or key
 * stops start-up instead of the first upload), then aborts stale multipart
 * uploads. The client is closed with the scope.
 * @since 0.1.0
 * @category constructors
 */
export const make = (config: Config) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const { bucket } = config
    const prefix = (config.prefix ?? "").replace(/^\/+|\/+$/g, "")
    const root = prefix === "" ? "" : `${prefix}/`
    const where = `s3://${bucket}/${prefix}`
    const partSize = config.partSize ?? defaultPartSize
    const queueSize = config.queueSize ?? 2
    const client = yield* Effect.acquireRelease(
      Effect.sync(() => new S3Client({ ...config.client })),
      (c) => Effect.sync(() => c.destroy())
    )
    const fail = (operation: string, key: string) => (cause: unknown) =>
      new Errors.BlobStoreError({
        operation,
        key,
        message: isNotFound(cause) ? `blob ${key} does not exist` : `blob ${operation} failed for ${key} in ${where}: ${describe(cause)}`,
        cause
      })
    const objectKey = (key: BlobStore.BlobKey) => Effect.map(BlobStore.checkKey(key), (k) => `${root}${k}`)
    const send = <A>(operation: string, key: string, request: (signal: AbortSignal) => Promise<A>) =>
      Effect.tryPromise({ try: request, catch: fail(operation, key) })

    yield* send("init", where, (abortSignal) => client.send(new HeadBucketCommand({ Bucket: bucket }), { abortSignal })).pipe(
      Effect.mapError((e) =>
        new Errors.BlobStoreError({
          operation: "init",
          key: where,
          message: `cannot use bucket "${bucket}" (${describe(e.cause)}): check the bucket name, AWS_ENDPOINT_URL, AWS_REGION and the credentials`,
          cause: e.cause
        })
      )
    )

    // a killed process's upload is a pending multipart upload: invisible, but it holds its parts until aborted
    const staleBefore = (yield* Clock.currentTimeMillis) - Duration.toMillis(config.staleAfter ?? BlobStore.defaultStaleAfter)
    yield* Stream.paginateChunkEffect(
      { keyMarker: undefined as string | undefined, uploadIdMarker: undefined as string | undefined },
      (markers) =>
        send("init", where, (abortSignal) =>
          client.send(
            new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: root, KeyMarker: markers.keyMarker, UploadIdMarker: markers.uploadIdMarker }),
            { abortSignal }
          )).pipe(Effect.map((out) => [
            Chunk.fromIterable(out.Uploads ?? []),
            out.IsTruncated === true ? Option.some({ keyMarker: out.NextKeyMarker, uploadIdMarker: out.NextUploadIdMarker }) : Option.none()
          ] as const))
    ).pipe(
      Stream.filter((u) => u.Key !== undefined && u.UploadId !== undefined && (u.Initiated?.getTime() ?? 0) < staleBefore),
      Stream.runForEach((u) =>
        send("remove", u.Key!, (abortSignal) =>
          client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId }), { abortSignal }))
      ),
      // what is left costs storage, not correctness (and a lifecycle rule may clear it): start anyway, but say so
      Effect.catchAll((e) => Effect.logWarning(`could not abort stale multipart uploads in ${where}`, e.message))
    )

    const read = (key: BlobStore.BlobKey, range?: BlobStore.ByteRange | undefined): Stream.Stream<Uint8Array, Errors.BlobStoreError> =>
      Stream.unwrap(Effect.gen(function*() {
        const Key = yield* objectKey(key)
        const Range = range === undefined ? undefined : `bytes=${range.offset}-${range.offset + range.length - 1}`
        const out = yield* send("read", key, (abortSignal) => client.send(new GetObjectCommand({ Bucket: bucket, Key, Range }), { abortSignal }))
        // a Node stream in Node: bytes flow as they arrive, destroyed (socket freed) when the reader stops early
        const body = out.Body as Readable | undefined
        if (body === undefined) return Stream.empty
        const bytes = NodeStream.fromReadable<Errors.BlobStoreError, Uint8Array>(() => body, fail("read", key))
        if (range === undefined) return bytes
        // some S3-compatible servers answer a Range with more than asked (the whole object, or `bytes=0-0` as all of it):
        // cut what was asked for out of what came
        const served = /^bytes (\d+)-(\d+)\//.exec(out.ContentRange ?? "")
        const start = served === null ? 0 : Number(served[1])
        if (served !== null && start === range.offset && Number(served[2]) === range.offset + range.length - 1) return bytes
        return slice(bytes, range.offset - start, range.length)
      }))

    const stat = (key: BlobStore.BlobKey) =>
      Effect.flatMap(objectKey(key), (Key) =>
        Effect.tryPromise({
          try: (abortSignal) => client.send(new HeadObjectCommand({ Bucket: bucket, Key }), { abortSignal }),
          catch: (cause) => cause
        }).pipe(
          Effect.map((out) => Option.some({ sizeBytes: out.ContentLength ?? 0 })),
          // a missing blob is an answer (the caller decides what it means), not a failure
          Effect.catchIf(isNotFound, () => Effect.succeedNone),
          Effect.mapError(fail("stat", key))
        ))

    const localPath = (key: BlobStore.BlobKey) =>
      Effect.gen(function*() {
        yield* objectKey(key)
        const dir = yield* fs.makeTempDirectoryScoped({ prefix: "vj-s3-" }).pipe(Effect.mapError(fail("read", key)))
        const file = path.join(dir, key)
        yield* Stream.run(read(key), fs.sink(file)).pipe(Effect.mapError((e) => (e._tag === "BlobStoreError" ? e : fail("read", key)(e))))
        return file
      })
    const remove = (key: BlobStore.BlobKey) =>
      Effect.flatMap(objectKey(key), (Key) =>
        send("remove", key, (abortSignal) => client.send(new DeleteObjectCommand({ Bucket: bucket, Key }), { abortSignal }))).pipe(
          Effect.asVoid
        )

    /**
     * The inspection of a written object runs on a downloaded copy (the
     * object is complete by then; an upload keeps no local file). If it
     * fails, or is interrupted, the object goes before the write returns; a
     * process killed meanwhile leaves an object no row points to, which the
     * orphan sweep removes.
     */
    const inspected = <E, R>(key: BlobStore.BlobKey, inspect: ((path: string) => Effect.Effect<void, E, R>) | undefined) =>
      inspect === undefined ? Effect.void : Effect.scoped(Effect.flatMap(localPath(key), inspect)).pipe(
        Effect.onError(() =>
          remove(key).pipe(Effect.catchAll((e) => Effect.logWarning(`${e.message}: an object that failed its inspection is left to the orphan sweep`)))
        )
      )

    const service: BlobStore.BlobStoreService = {
      write: <E, R, E2, R2>(key: BlobStore.BlobKey, body: BlobStore.BlobBody<E, R>, options?: BlobStore.WriteOptions<E2, R2>) =>
        Effect.flatMap(objectKey(key), (Key) =>
          Effect.gen(function*() {
            let sizeBytes = 0
            let bodyFailure: Option.Option<E> = Option.none()
            // the body is pushed into this, and the upload reads it as it has room (backpressure)
            const readable = new PassThrough({ highWaterMark: 256 * 1024 })
            const sink: BlobStore.BlobSink = {
              write: (bytes) => {
                sizeBytes += bytes.byteLength
                return readable.write(bytes)
              },
              // already drained (the producer asked late): room now
              drained: (resume) => (readable.writableNeedDrain ? void readable.once("drain", resume) : resume())
            }
            const pushed = BlobStore.producerOf(body)(sink).pipe(
              Effect.tapError((e) => Effect.sync(() => (bodyFailure = Option.some(e)))),
              // a failed body fails the upload (lib-storage then aborts the multipart upload)
              Effect.onExit((exit) => Effect.sync(() => Exit.isSuccess(exit) ? readable.end() : readable.destroy(new Error("blob body failed"))))
            )
            const upload = new Upload({ client, params: { Bucket: bucket, Key, Body: readable }, partSize, queueSize, leavePartsOnError: false })
            const uploaded = Effect.async<void, E | Errors.BlobStoreError>((resume) => {
              // done() settles only after lib-storage aborted the multipart upload of a failed body
              const done = upload.done()
              done.then(
                () => resume(Effect.void),
                (cause) => resume(Option.isSome(bodyFailure) ? Effect.fail(bodyFailure.value) : Effect.fail(fail("write", key)(cause)))
              )
              // interrupted: end the body with an error, which fails the upload the same way, and wait for it
              return Effect.promise(() => {
                readable.destroy(new Error("blob write interrupted"))
                return done.then(() => undefined, () => undefined)
              })
            })
            // a failed upload stops the body, a failed body the upload
            return yield* Effect.all([pushed, uploaded], { concurrency: 2, discard: true }).pipe(
              Effect.ensuring(Effect.sync(() => readable.destroy())),
              Effect.tapError((e) =>
                e instanceof Errors.BlobStoreError
                  ? Effect.logWarning(`${e.message} (if aborting its multipart upload failed too, a start after staleAfter aborts it)`)
                  : Effect.void
              ),
              Effect.zipRight(inspected(key, options?.inspect)),
              Effect.map(() => ({ sizeBytes }))
            )
          })),
      read,
      stat,
      exists: (key) => Effect.map(stat(key), Option.isSome),
      localPath,
      remove,
      list: Stream.paginateChunkEffect(undefined as string | undefined, (token) =>
        send("list", where, (abortSignal) =>
          client.send(
            new ListObjectsV2Command({ Bucket: bucket, Prefix: root, MaxKeys: config.pageSize ?? 1000, ContinuationToken: token }),
            { abortSignal }
          )).pipe(Effect.map((out) => {
            const blobs: Array<BlobStore.BlobInfo> = []
            for (const object of out.Contents ?? []) {
              const key = object.Key?.slice(root.length) ?? ""
              // only our blobs directly under the prefix; S3 always sends LastModified (now if not: never swept early)
              if (object.Key?.startsWith(root) && BlobStore.isKey(key)) blobs.push({ key, modifiedAt: object.LastModified ?? new Date() })
            }
            return [
              Chunk.fromIterable(blobs),
              out.IsTruncated === true && out.NextContinuationToken !== undefined ? Option.some(out.NextContinuationToken) : Option.none()
            ] as const
          })))
    }
    return service
  })

/**
 * The S3 blob store as the `BlobStore` layer.
 * @since 0.1.0
 * @category layers
 */
export const layer = (config: Config): Layer.Layer<BlobStore.BlobStore, Errors.BlobStoreError> =>
  Layer.scoped(BlobStore.BlobStore, make(config)).pipe(Layer.provide(NodeFileSystem.layer))
