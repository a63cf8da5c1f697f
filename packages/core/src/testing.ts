/**
 * Test helpers for adapter authors (needs vitest and @effect/vitest).
 * @since 0.1.0
 */
export * as JournalStoreSuite from "./JournalStoreSuite.js"
