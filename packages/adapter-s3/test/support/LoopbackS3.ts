/**
 * A real S3 server on loopback for tests: `s3rver` (npm), which speaks the
 * S3 REST protocol — PutObject, multipart uploads (Create/UploadPart/
 * Complete), ranged GetObject, HeadObject, DeleteObject, ListObjectsV2 with
 * continuation tokens — on a temp directory. It checks that the access key
 * id exists but does not verify SigV4 signatures, so a wrong secret passes.
 *
 * s3rver 3.7.1 lacks two operations the store relies on, added here on its
 * own upload store (`<bucket>/._S3rver_uploads/<uploadId>/{key,1,2,…}`) and
 * answered with the XML of the S3 API reference:
 * - AbortMultipartUpload: `DELETE /bucket/key?uploadId=…` (204; 404 NoSuchUpload)
 * - ListMultipartUploads: `GET /bucket?uploads[&prefix=…]`
 */
import { CreateBucketCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3"
import { Effect } from "effect"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as os from "node:os"
import * as path from "node:path"

const require = createRequire(import.meta.url)

interface KoaContext {
  readonly method: string
  readonly path: string
  readonly query: Record<string, string | undefined>
  status: number
  type: string
  body: unknown
}
interface S3rverInstance {
  middleware: Array<(ctx: KoaContext, next: () => Promise<void>) => Promise<void>>
  run(): Promise<{ port: number }>
  close(): Promise<void>
}
const S3rver = require("s3rver") as new(options: Record<string, unknown>) => S3rverInstance
const Account = require("s3rver/lib/models/account.js") as { DUMMY_ACCOUNT: { createKeyPair(id: string, secret: string): void } }

export interface LoopbackS3 {
  /** `http://127.0.0.1:<port>` */
  readonly endpoint: string
  readonly accessKeyId: string
  /** A random secret per server: a leak shows in any log that contains it (s3rver does not check it). */
  readonly secretAccessKey: string
  readonly region: string
  /** A client for checking what the server holds (path-style, these credentials). */
  readonly client: S3Client
  /** Where s3rver keeps its files. */
  readonly directory: string
  readonly createBucket: (bucket: string) => Effect.Effect<void>
  /** Every object of the bucket (first 1000), key and size. */
  readonly objects: (bucket: string) => Effect.Effect<ReadonlyArray<{ readonly key: string; readonly size: number }>>
}

const xml = (ctx: KoaContext, status: number, body: string) => {
  ctx.status = status
  ctx.type = "application/xml"
  ctx.body = `<?xml version="1.0" encoding="UTF-8"?>\n${body}`
}

const escape = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")

/** The two multipart operations s3rver 3.7.1 does not have (see the module comment). */
const multipartAdditions = (directory: string) => async (ctx: KoaContext, next: () => Promise<void>) => {
  const [, bucket, ...keyParts] = ctx.path.split("/")
  const uploadsDir = path.join(directory, bucket ?? "", "._S3rver_uploads")
  if (ctx.method === "DELETE" && keyParts.length > 0 && ctx.query.uploadId !== undefined) {
    const dir = path.join(uploadsDir, path.basename(ctx.query.uploadId))
    if (!fs.existsSync(dir)) {
      return xml(ctx, 404, `<Error><Code>NoSuchUpload</Code><Message>The specified upload does not exist.</Message></Error>`)
    }
    fs.rmSync(dir, { recursive: true, force: true })
    ctx.status = 204
    ctx.body = null
    return
  }
  if (ctx.method === "GET" && keyParts.filter((p) => p !== "").length === 0 && "uploads" in ctx.query) {
    const prefix = ctx.query.prefix ?? ""
    const uploads = (fs.existsSync(uploadsDir) ? fs.readdirSync(uploadsDir) : [])
      .flatMap((id) => {
        const keyFile = path.join(uploadsDir, id, "key")
        // s3rver writes the key file just after making the directory: until then the upload is not initiated
        const key = fs.existsSync(keyFile) ? fs.readFileSync(keyFile, "utf8") : ""
        return key === "" ? [] : [{ id, key, initiated: fs.statSync(keyFile).mtime }]
      })
      .filter((u) => u.key.startsWith(prefix))
      .sort((a, b) => (a.key === b.key ? a.id.localeCompare(b.id) : a.key.localeCompare(b.key)))
    return xml(
      ctx,
      200,
      `<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>${escape(bucket!)}</Bucket>` +
        `<KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker><Prefix>${escape(prefix)}</Prefix><MaxUploads>1000</MaxUploads>` +
        `<IsTruncated>false</IsTruncated>` +
        uploads.map((u) =>
          `<Upload><Key>${escape(u.key)}</Key><UploadId>${u.id}</UploadId><Initiated>${u.initiated.toISOString()}</Initiated>` +
          `<StorageClass>STANDARD</StorageClass></Upload>`
        ).join("") +
        `</ListMultipartUploadsResult>`
    )
  }
  return next()
}

/** Starts a loopback S3 server on a free port; stopped (and its files removed) when the scope closes. */
export const make = Effect.acquireRelease(
  Effect.promise(async () => {
    const directory = fs.mkdtempSync(path.join(os.tmpdir(), "vj-s3rver-"))
    const accessKeyId = `vjtest${randomBytes(4).toString("hex")}`
    const secretAccessKey = `vj-secret-${randomBytes(16).toString("hex")}`
    Account.DUMMY_ACCOUNT.createKeyPair(accessKeyId, secretAccessKey)
    const server = new S3rver({ address: "127.0.0.1", port: 0, silent: true, directory, vhostBuckets: false })
    server.middleware.unshift(multipartAdditions(directory))
    const { port } = await server.run()
    const endpoint = `http://127.0.0.1:${port}`
    const region = "us-east-1"
    const client = new S3Client({ endpoint, region, forcePathStyle: true, credentials: { accessKeyId, secretAccessKey } })
    const createBucket = (bucket: string) => Effect.promise(() => client.send(new CreateBucketCommand({ Bucket: bucket }))).pipe(Effect.asVoid)
    const objects = (bucket: string) =>
      Effect.promise(() => client.send(new ListObjectsV2Command({ Bucket: bucket }))).pipe(
        Effect.map((out) => (out.Contents ?? []).map((o) => ({ key: o.Key ?? "", size: o.Size ?? 0 })))
      )
    return { server, s3: { endpoint, accessKeyId, secretAccessKey, region, client, directory, createBucket, objects } satisfies LoopbackS3 }
  }),
  ({ s3, server }) =>
    Effect.promise(async () => {
      s3.client.destroy()
      await server.close()
      fs.rmSync(s3.directory, { recursive: true, force: true })
    })
).pipe(Effect.map(({ s3 }) => s3))
