/**
 * @since 0.1.0
 */
export * as Domain from "./Domain.js"
/** @since 0.1.0 */
export * as Errors from "./Errors.js"
