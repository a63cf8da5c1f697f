/**
 * @since 0.1.0
 */
export * as S3BlobStore from "./S3BlobStore.js"

/**
 * @since 0.1.0
 */
export * as S3Url from "./S3Url.js"
