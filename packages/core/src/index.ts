/**
 * @since 0.1.0
 */
export * as ApiKeys from "./ApiKeys.js"
/** @since 0.1.0 */
export * as AudioPieces from "./AudioPieces.js"
/** @since 0.1.0 */
export * as AudioProbe from "./AudioProbe.js"
/** @since 0.1.0 */
export * as BlobStore from "./BlobStore.js"
/** @since 0.1.0 */
export * as BlobSweeper from "./BlobSweeper.js"
/** @since 0.1.0 */
export * as Cleaner from "./Cleaner.js"
/** @since 0.2.0 */
export * as Destination from "./Destination.js"
/** @since 0.2.0 */
export * as Destinations from "./Destinations.js"
/** @since 0.1.0 */
export * as Domain from "./Domain.js"
/** @since 0.1.0 */
export * as EntrySearch from "./EntrySearch.js"
/** @since 0.1.0 */
export * as Errors from "./Errors.js"
/** @since 0.1.0 */
export * as Ingest from "./Ingest.js"
/** @since 0.2.0 */
export * as MarkdownFolder from "./MarkdownFolder.js"
/** @since 0.1.0 */
export * as JournalStore from "./JournalStore.js"
/** @since 0.1.0 */
export * as JournalEvents from "./JournalEvents.js"
/** @since 0.1.0 */
export * as Metrics from "./Metrics.js"
/** @since 0.1.0 */
export * as Migrations from "./Migrations.js"
/** @since 0.1.0 */
export * as NotionPublisher from "./NotionPublisher.js"
/** @since 0.1.0 */
export * as Pipeline from "./Pipeline.js"
/** @since 0.1.0 */
export * as RequestBudget from "./RequestBudget.js"
/** @since 0.1.0 */
export * as RetryPolicy from "./RetryPolicy.js"
/** @since 0.2.0 */
export * as SecretBox from "./SecretBox.js"
/** @since 0.1.0 */
export * as SqlJournalStore from "./SqlJournalStore.js"
/** @since 0.1.0 */
export * as Transcriber from "./Transcriber.js"
/** @since 0.1.0 */
export * as VoiceJournal from "./VoiceJournal.js"
/** @since 0.1.0 */
export * as WhisperTranscriber from "./WhisperTranscriber.js"
/** @since 0.1.0 */
export * as WorkSignal from "./WorkSignal.js"
/** @since 0.1.0 */
export * as WatchFolder from "./WatchFolder.js"
/** @since 0.2.0 */
export * as Webhook from "./Webhook.js"
