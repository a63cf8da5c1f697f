/**
 * The S3 blob store against a real S3 server on loopback (s3rver): the
 * BlobStore conformance suite, plus what is particular to object storage —
 * aborted multipart uploads, scoped local copies, start-up checks and the
 * `s3://` URL.
 */
import { CreateBucketCommand, ListMultipartUploadsCommand, ListObjectsV2Command } from "@aws-sdk/client-s3"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { BlobStore } from "@voice-journal/core"
import { BlobStoreSuite } from "@voice-journal/core/testing"
import { Context, Effect, Either, Exit, Fiber, Layer, Scope, Stream } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as S3BlobStore from "../src/S3BlobStore.js"
import * as S3Url from "../src/S3Url.js"
import * as LoopbackS3 from "./support/LoopbackS3.js"

const here = path.dirname(fileURLToPath(import.meta.url))
const prefix = "voice/audio"

const serverScope = Effect.runSync(Scope.make())
let s3: LoopbackS3.LoopbackS3
beforeAll(async () => {
  s3 = await Effect.runPromise(Scope.extend(LoopbackS3.make, serverScope))
})
afterAll(() => Effect.runPromise(Scope.close(serverScope, Exit.void)))

let buckets = 0
/** A new, empty bucket on the loopback server. */
const freshBucket = Effect.suspend(() => {
  const bucket = `vj-suite-${++buckets}`
  return Effect.as(Effect.promise(() => s3.client.send(new CreateBucketCommand({ Bucket: bucket }))), bucket)
})

const configFor = (bucket: string, extra: Partial<S3BlobStore.Config> = {}): S3BlobStore.Config => ({
  bucket,
  prefix,
  client: {
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey }
  },
  // two keys per ListObjectsV2 page: every listing in the suite pages
  pageSize: 2,
  ...extra
})

const pendingUploads = (bucket: string) =>
  Effect.promise(() => s3.client.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).pipe(
    Effect.map((out) => (out.Uploads ?? []).map((u) => `pending multipart upload of ${u.Key}`))
  )

/** Pending multipart uploads, and objects that are not `<prefix>/<generated key>`. */
const leftovers = (bucket: string) =>
  Effect.gen(function*() {
    const objects = yield* Effect.promise(() => s3.client.send(new ListObjectsV2Command({ Bucket: bucket })))
    const strays = (objects.Contents ?? [])
      .map((o) => o.Key ?? "")
      .filter((key) => !(key.startsWith(`${prefix}/`) && BlobStore.isKey(key.slice(prefix.length + 1))))
    return [...(yield* pendingUploads(bucket)), ...strays]
  })

BlobStoreSuite.run("S3 (s3rver on loopback)", {
  // the loopback server runs in this process, so its own buffers (parts being stored) count too
  maxHeldBytes: 96 * 1024 * 1024,
  freshStorage: Effect.map(freshBucket, (bucket) => ({
    open: (options) => S3BlobStore.layer(configFor(bucket, { staleAfter: options?.staleAfter })),
    leftovers: leftovers(bucket),
    writeInAnotherProcess: (key) =>
      BlobStoreSuite.spawnWriter(
        ["--import", "tsx", "--conditions=source", path.join(here, "support", "writer-process.ts"), JSON.stringify(configFor(bucket)), key],
        here
      )
  } satisfies BlobStoreSuite.Storage))
})

const openStore = (config: S3BlobStore.Config) =>
  Layer.build(S3BlobStore.layer(config)).pipe(Effect.map((ctx) => Context.get(ctx, BlobStore.BlobStore)))

describe("S3BlobStore", () => {
  it.scopedLive("an upload interrupted after several parts: no object and no pending multipart upload (ListMultipartUploads)", () =>
    Effect.gen(function*() {
      const bucket = yield* freshBucket
      const blobs = yield* openStore(configFor(bucket))
      const key = BlobStore.makeKey()
      let sent = 0
      const part = new Uint8Array(1024 * 1024).fill(3)
      const body = Stream.repeatValue(part).pipe(Stream.take(12), Stream.tap(() => Effect.sync(() => (sent += part.byteLength))), Stream.concat(Stream.never))
      const fiber = yield* Effect.fork(blobs.write(key, body))
      // the upload is under way: a pending multipart upload holding parts
      while ((yield* pendingUploads(bucket)).length === 0 || sent < 12 * 1024 * 1024) yield* Effect.sleep("20 millis")
      expect(yield* pendingUploads(bucket)).toEqual([`pending multipart upload of ${prefix}/${key}`])
      yield* Fiber.interrupt(fiber)
      expect(yield* pendingUploads(bucket)).toEqual([])
      expect(yield* leftovers(bucket)).toEqual([])
      expect(yield* blobs.exists(key)).toBe(false)
    }), { timeout: 60_000 })

  it.scopedLive("localPath is a temp copy removed when its scope closes", () =>
    Effect.gen(function*() {
      const blobs = yield* openStore(configFor(yield* freshBucket))
      const key = BlobStore.makeKey()
      const bytes = new Uint8Array(300_000).map((_, i) => i % 251)
      yield* blobs.write(key, Stream.make(bytes))
      const file = yield* Effect.scoped(Effect.map(blobs.localPath(key), (file) => {
        expect(fs.readFileSync(file).equals(bytes)).toBe(true)
        return file
      }))
      expect(fs.existsSync(file)).toBe(false)
      expect(fs.existsSync(path.dirname(file))).toBe(false)
    }))

  it.scopedLive("start-up fails with a clear message for a missing bucket or unknown credentials; the secret is in no message", () =>
    Effect.gen(function*() {
      const missing = yield* Effect.flip(openStore(configFor("no-such-bucket")))
      expect(missing._tag).toBe("BlobStoreError")
      expect(missing.message).toContain(`cannot use bucket "no-such-bucket"`)
      expect(missing.message).toContain("404")
      const bucket = yield* freshBucket
      const denied = yield* Effect.flip(openStore(configFor(bucket, {
        client: { ...configFor(bucket).client, credentials: { accessKeyId: "AKIAUNKNOWN", secretAccessKey: s3.secretAccessKey } }
      })))
      expect(denied.message).toContain(`cannot use bucket "${bucket}"`)
      expect(denied.message).toContain("403")
      for (const e of [missing, denied]) expect(JSON.stringify({ message: e.message, key: e.key })).not.toContain(s3.secretAccessKey)
    }))

  it("S3Url.parse: s3://bucket[/prefix]; anything else says what it expects", () => {
    expect(S3Url.parse("s3://my-bucket")).toEqual(Either.right({ bucket: "my-bucket", prefix: "" }))
    expect(S3Url.parse("s3://my-bucket/")).toEqual(Either.right({ bucket: "my-bucket", prefix: "" }))
    expect(S3Url.parse("s3://my-bucket/voice/audio/")).toEqual(Either.right({ bucket: "my-bucket", prefix: "voice/audio" }))
    for (const bad of ["s3://", "s3:///prefix", "http://bucket/x", "bucket/x", "s3://b", "s3://bucket/a/../b", "s3://bucket/x?region=eu", "s3://bu cket"]) {
      expect(Either.isLeft(S3Url.parse(bad)), bad).toBe(true)
    }
  })
})
