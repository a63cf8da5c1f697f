/**
 * @since 0.1.0
 */
export * as Api from "./Api.js"
/** @since 0.1.0 */
export * as ApiErrors from "./ApiErrors.js"
/** @since 0.1.0 */
export * as Cli from "./Cli.js"
/** @since 0.1.0 */
export * as Config from "./Config.js"
/** @since 0.1.0 */
export * as Http from "./Http.js"
/** @since 0.1.0 */
export * as Models from "./Models.js"
/** @since 0.1.0 */
export * as RateLimit from "./RateLimit.js"
/** @since 0.1.0 */
export * as Server from "./Server.js"
/** @since 0.1.0 */
export * as Upload from "./Upload.js"
/** @since 0.1.0 */
export * as WebApp from "./WebApp.js"
