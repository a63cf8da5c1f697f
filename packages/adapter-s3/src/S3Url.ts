/**
 * The `s3://bucket/prefix` URL that selects object storage (`VJ_BLOB_URL`).
 * Its own module, free of the AWS SDK, so that reading a configuration does
 * not load the SDK when object storage is not used.
 *
 * @since 0.1.0
 */
import { Either } from "effect"

/**
 * `s3://bucket/prefix` as a bucket and a prefix (no leading or trailing
 * slash), or why it is not one.
 * @since 0.1.0
 */
export const parse = (url: string): Either.Either<{ readonly bucket: string; readonly prefix: string }, string> => {
  const match = /^s3:\/\/([^/?#]*)(\/[^?#]*)?$/.exec(url)
  if (match === null) return Either.left("must look like s3://bucket or s3://bucket/prefix (no query, no fragment)")
  const bucket = match[1]!
  // S3's bucket naming rules (3-63 of lowercase letters, digits, dots and hyphens; legacy buckets may have more)
  if (!/^[a-zA-Z0-9][a-zA-Z0-9._-]{1,254}$/.test(bucket)) return Either.left(`"${bucket}" is not a bucket name`)
  const segments = (match[2] ?? "").split("/").filter((s) => s !== "")
  if (segments.some((s) => s === "." || s === "..")) return Either.left("the prefix must not contain . or .. segments")
  return Either.right({ bucket, prefix: segments.join("/") })
}

