/**
 * Test helpers for adapter authors (needs vitest and @effect/vitest).
 * @since 0.1.0
 */
export * as JournalStoreSuite from "./JournalStoreSuite.js"

/**
 * The `BlobStore` conformance suite (see `BlobStoreSuite.run`).
 * @since 0.1.0
 */
export * as BlobStoreSuite from "./BlobStoreSuite.js"
