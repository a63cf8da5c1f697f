/**
 * @since 0.1.0
 */
export * as PgJournalStore from "./PgJournalStore.js"
/** @since 0.1.0 */
export * as PgRequestBudget from "./PgRequestBudget.js"
/** @since 0.1.0 */
export * as PgTestDatabase from "./PgTestDatabase.js"
