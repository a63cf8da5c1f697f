/**
 * @since 0.1.0
 */
export * as SqliteJournalStore from "./SqliteJournalStore.js"
