/**
 * The port every place a journal entry goes implements: a Notion database
 * (`NotionPublisher.toDestination`), a Markdown folder (`MarkdownFolder`),
 * a signed webhook (`Webhook`). The pipeline's `delivery` stage runs each
 * delivery row through it with the stages' machinery (claim, heartbeat,
 * fenced completion, `RetryPolicy`), so a destination only says how to put
 * one document there.
 *
 * **Idempotent per entry.** `deliver` may run again for the same entry —
 * after a crash, a retry, a re-sync. It learns what an earlier try made
 * from `previous.externalRef` (the page id, the file name, the message id)
 * and reports a reference through `previous.record` *before* its side
 * effect is complete, so a crash between "delivered" and "row updated"
 * finds it instead of making a second one. Failures are exactly one of
 * `TemporaryError` (retried; `retryAfterMillis` honoured), `PermanentError`,
 * or {@link DestinationGone}.
 *
 * @since 0.2.0
 */
import { type Effect, Schema } from "effect"
import type { CleanedEntry, DeliveryId, EntryId, Transcription, UserId, VoiceEntry } from "./Domain.js"
import { type PermanentError, Service, type TemporaryError } from "./Errors.js"

/**
 * What is delivered: one cleaned entry with its structured sections.
 * @since 0.2.0
 * @category models
 */
export interface Document {
  /** The delivery row: a webhook's `webhook-id`, stable across retries. */
  readonly deliveryId: DeliveryId
  readonly entryId: EntryId
  readonly userId: UserId
  readonly title: string
  /** The cleaned text. */
  readonly text: string
  /** The raw transcript. */
  readonly transcript: string
  readonly summary: string | null
  readonly actionItems: ReadonlyArray<string>
  readonly tags: ReadonlyArray<string>
  /** Further sections a cleanup template declared, by name. */
  readonly sections: Readonly<Record<string, string>>
  readonly createdAt: Date
  readonly durationSeconds: number | null
}

/**
 * What an earlier try left, and where to report a reference at once.
 * @since 0.2.0
 * @category models
 */
export interface Previous {
  /** The reference an earlier try (or the last delivery of this entry here) recorded. */
  readonly externalRef: string | null
  /** Persists a reference before the delivery completes; a failure fails the try. */
  readonly record: (ref: string) => Effect.Effect<void, TemporaryError | PermanentError>
}

/**
 * The receiver said it is gone for good (a webhook's `410 Gone`): the
 * delivery fails and the destination is disabled, saying why.
 * @since 0.2.0
 * @category errors
 */
export class DestinationGone extends Schema.TaggedError<DestinationGone>()("DestinationGone", {
  service: Service,
  message: Schema.String
}) {}

/**
 * @since 0.2.0
 * @category models
 */
export type DeliveryError = TemporaryError | PermanentError | DestinationGone

/**
 * One configured destination, ready to deliver.
 * @since 0.2.0
 * @category models
 */
export interface Destination {
  readonly deliver: (document: Document, previous: Previous) => Effect.Effect<{ readonly externalRef: string }, DeliveryError>
  /** Checks the destination can be reached and accepts us (`destinations test`), delivering nothing lasting. */
  readonly test: Effect.Effect<void, DeliveryError>
  /** Removes what a delivery made, when the entry is deleted (only destinations that do: the Markdown folder). */
  readonly remove?: ((entryId: EntryId, externalRef: string) => Effect.Effect<void, DeliveryError>) | undefined
}

/** Fields a structured cleanup adds to `CleanedEntry` (read as optional until every store has them). */
interface Structured {
  readonly summary?: string | null | undefined
  readonly actionItems?: ReadonlyArray<string> | undefined
  readonly tags?: ReadonlyArray<string> | undefined
  readonly sections?: Readonly<Record<string, string>> | undefined
}

/**
 * The document a delivery row carries.
 * @since 0.2.0
 */
export const documentOf = (input: {
  readonly deliveryId: DeliveryId
  readonly entry: VoiceEntry
  readonly cleanup: CleanedEntry
  readonly transcription: Transcription
}): Document => {
  const structured = input.cleanup as CleanedEntry & Structured
  return {
    deliveryId: input.deliveryId,
    entryId: input.entry.id,
    userId: input.entry.userId,
    title: input.cleanup.title ?? "Voice note",
    text: input.cleanup.text ?? "",
    transcript: input.transcription.text ?? "",
    summary: structured.summary ?? null,
    actionItems: structured.actionItems ?? [],
    tags: structured.tags ?? [],
    sections: structured.sections ?? {},
    createdAt: input.entry.createdAt,
    durationSeconds: input.transcription.durationSeconds
  }
}
