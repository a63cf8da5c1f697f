/**
 * The typed failures of voice-journal. Integrations map every failure to
 * exactly one of {@link TemporaryError} (worth retrying) or
 * {@link PermanentError} (retrying cannot help); storage and upload failures
 * have their own classes so a caller can act on them.
 *
 * @since 0.1.0
 */
import { Predicate, Schema } from "effect"

/**
 * Which external service a failure came from.
 * @since 0.1.0
 */
export const Service = Schema.Literal("transcriber", "ollama", "notion", "markdown-folder", "webhook", "blob-store", "database")
/** @since 0.1.0 */
export type Service = typeof Service.Type

/**
 * A failure that may go away on its own: connection refused or reset,
 * timeouts, 408/409/429/5xx/529. `retryAfterMillis` carries a server's
 * `Retry-After`, which the retry policy honours over its own backoff.
 * As for {@link PermanentError}, `message` is for users and `detail` for the log.
 *
 * @since 0.1.0
 * @category errors
 */
export class TemporaryError extends Schema.TaggedError<TemporaryError>()("TemporaryError", {
  service: Service,
  message: Schema.String,
  status: Schema.optional(Schema.Number),
  retryAfterMillis: Schema.optional(Schema.Number),
  /** What only the operator should see (a program's stderr, a path): logged, never stored or answered. */
  detail: Schema.optional(Schema.String),
  cause: Schema.optional(Schema.Defect)
}) {}

/**
 * A failure that retrying cannot fix: bad credentials, a missing model or
 * database, validation errors, undecodable audio. The message says what a
 * person must do about it when that is known (e.g. `ollama pull <model>`).
 * `message` may be shown to users (it is stored as a stage's `lastError`):
 * paths, blob keys and a program's raw output go in `detail`, which is only logged.
 *
 * @since 0.1.0
 * @category errors
 */
export class PermanentError extends Schema.TaggedError<PermanentError>()("PermanentError", {
  service: Service,
  message: Schema.String,
  status: Schema.optional(Schema.Number),
  /** What only the operator should see (a program's stderr, a path): logged, never stored or answered. */
  detail: Schema.optional(Schema.String),
  cause: Schema.optional(Schema.Defect)
}) {}

/**
 * What a stage can fail with.
 * @since 0.1.0
 */
export type StageError = TemporaryError | PermanentError

/** @since 0.1.0 */
export const isTemporaryError = (u: unknown): u is TemporaryError => Predicate.isTagged(u, "TemporaryError")
/** @since 0.1.0 */
export const isPermanentError = (u: unknown): u is PermanentError => Predicate.isTagged(u, "PermanentError")

/**
 * Removes what must never reach a user from a message: absolute paths
 * (`/srv/data/audio/…`, `C:\\…`, `~/…`), UUIDs (blob keys and the temp files
 * named after them) and memory addresses (ffmpeg's `[ogg @ 0x55bb…]`). The
 * last line of defence before a stage's reason is stored as `lastError`;
 * integrations already keep such detail in `detail`, which is only logged.
 *
 * @since 0.1.0
 */
export const redactInternals = (text: string): string =>
  text
    // ffmpeg's log context: "[ogg @ 0x55bb…] CRC mismatch!" → "CRC mismatch!"
    .replace(/\[[^\]\n]*? @ 0x[0-9a-f]+\]\s*/gi, "")
    // quoted paths may hold spaces: '/tmp/my notes.wav'
    .replace(/(['"`])(?:\/|~\/|[A-Za-z]:\\)[^'"`\n]*\1/g, "<path>")
    // a path starts a word (not "and/or", not a URL's "//host/x")
    .replace(/(?<![\w.:/~\\-])(?:~?\/)[^\s'"`,;:()<>[\]{}]+/g, "<path>")
    .replace(/\b[A-Za-z]:\\[^\s'"`,;()<>[\]{}]*/g, "<path>")
    .replace(/\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/gi, "<id>")
    .replace(/\b0x[0-9a-f]{4,}\b/gi, "<address>")
    .replace(/\s+/g, " ")
    .trim()

/**
 * The thing asked for does not exist *for this user*. Rows owned by another
 * user are reported the same way, so their existence is never revealed.
 *
 * @since 0.1.0
 * @category errors
 */
export class NotFound extends Schema.TaggedError<NotFound>()("NotFound", {
  resource: Schema.String,
  id: Schema.String
}) {
  override get message() {
    return `${this.resource} ${this.id} not found`
  }
}

/**
 * The database refused a second primary transcription or cleanup for one
 * voice entry (partial unique index).
 *
 * @since 0.1.0
 * @category errors
 */
export class PrimaryConflict extends Schema.TaggedError<PrimaryConflict>()("PrimaryConflict", {
  table: Schema.String,
  entryId: Schema.String
}) {
  override get message() {
    return `${this.table}: voice entry ${this.entryId} already has a primary row`
  }
}

/**
 * The request is well-formed but the rows are not in a state that allows it
 * (e.g. making an unfinished transcription primary, syncing an entry that has
 * no cleanup yet).
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidState extends Schema.TaggedError<InvalidState>()("InvalidState", {
  message: Schema.String
}) {}

/**
 * The name is already used by another of this user's rows of that kind
 * (e.g. a second cleanup template called "Work").
 *
 * @since 0.2.0
 * @category errors
 */
export class NameTaken extends Schema.TaggedError<NameTaken>()("NameTaken", {
  resource: Schema.String,
  name: Schema.String
}) {
  override get message() {
    return `a ${this.resource} named "${this.name}" already exists`
  }
}

/**
 * A worker's lease on a stage row was lost (it expired and another worker
 * claimed the row). The worker must stop writing; the other one owns it now.
 *
 * @since 0.1.0
 * @category errors
 */
export class LeaseLost extends Schema.TaggedError<LeaseLost>()("LeaseLost", {
  table: Schema.String,
  id: Schema.String
}) {
  override get message() {
    return `lease on ${this.table} ${this.id} was lost`
  }
}

/**
 * The database failed in a way the caller cannot fix (connection lost,
 * constraint the API should have prevented, …).
 *
 * `busy: true` means the database stayed locked by another process for the
 * adapter's whole retry budget (SQLite: a backup or a `sqlite3` shell holding
 * a write lock). Nothing was written; the same call may succeed shortly, so
 * the HTTP server answers `503` with `Retry-After`.
 *
 * @since 0.1.0
 * @category errors
 */
export class StoreError extends Schema.TaggedError<StoreError>()("StoreError", {
  message: Schema.String,
  busy: Schema.optional(Schema.Boolean),
  cause: Schema.optional(Schema.Defect)
}) {}

/**
 * True for a {@link StoreError} that reports a database busy (locked) for the
 * whole retry budget.
 * @since 0.1.0
 */
export const isStoreBusy = (u: unknown): u is StoreError => Predicate.isTagged(u, "StoreError") && (u as StoreError).busy === true

/**
 * An upload was larger than the configured limit. Nothing was stored.
 * @since 0.1.0
 * @category errors
 */
export class PayloadTooLarge extends Schema.TaggedError<PayloadTooLarge>()("PayloadTooLarge", {
  maxBytes: Schema.Number
}) {
  override get message() {
    return `upload exceeds the limit of ${this.maxBytes} bytes`
  }
}

/**
 * The recording is longer than the configured maximum
 * (`VoiceJournalConfig.maxAudioSeconds`): refused at ingest, nothing kept.
 * @since 0.1.0
 * @category errors
 */
export class AudioTooLong extends Schema.TaggedError<AudioTooLong>()("AudioTooLong", {
  durationSeconds: Schema.Number,
  maxSeconds: Schema.Number
}) {
  override get message() {
    return `the recording is ${formatSeconds(this.durationSeconds)} long; the longest accepted is ${formatSeconds(this.maxSeconds)}`
  }
}

/** "45 s", "12 min", "4.5 h": how long a recording is, as people say it. */
const formatSeconds = (s: number): string =>
  s < 120 ? `${Math.round(s)} s` : s < 7200 ? `${Math.round(s / 60)} min` : `${Number((s / 3600).toFixed(1))} h`

/**
 * The uploaded bytes are not one of the accepted audio containers.
 * `detected` is what content sniffing found (or undefined if nothing known).
 * @since 0.1.0
 * @category errors
 */
export class UnsupportedMediaType extends Schema.TaggedError<UnsupportedMediaType>()("UnsupportedMediaType", {
  detected: Schema.optional(Schema.String)
}) {
  override get message() {
    return this.detected === undefined
      ? "unsupported media type: the content is not a recognised audio format"
      : `unsupported media type: the content is ${this.detected}, not an accepted audio format`
  }
}

/**
 * An upload that cannot be read: empty, truncated or malformed.
 * @since 0.1.0
 * @category errors
 */
export class InvalidUpload extends Schema.TaggedError<InvalidUpload>()("InvalidUpload", {
  message: Schema.String
}) {}

/**
 * Classifies an HTTP failure status from any integration.
 *
 * | Status                      | Class     | Why                                      |
 * |-----------------------------|-----------|------------------------------------------|
 * | 408 Request Timeout         | temporary | the server gave up waiting; try again    |
 * | 409 Conflict                | temporary | Notion `conflict_error` says "try again" |
 * | 425 Too Early               | temporary | replay later                             |
 * | 429 Too Many Requests       | temporary | rate limited; honour `Retry-After`       |
 * | 500–599 (incl. 529)         | temporary | server trouble, overload, gateway        |
 * | any other 4xx               | permanent | our request or credentials are wrong     |
 *
 * Integrations refine this with what their body says (e.g. Ollama's
 * "model not found" is permanent with an instruction).
 *
 * @since 0.1.0
 */
export const isTemporaryStatus = (status: number): boolean =>
  status === 408 || status === 409 || status === 425 || status === 429 || status >= 500

/**
 * Builds the error for an HTTP failure `status` (see {@link isTemporaryStatus}).
 * @since 0.1.0
 */
export const fromHttpStatus = (
  service: Service,
  status: number,
  message: string,
  options: {
    readonly retryAfterMillis?: number | undefined
    readonly detail?: string | undefined
    readonly cause?: unknown
  } = {}
): TemporaryError | PermanentError => {
  const extra = {
    ...(options.detail !== undefined ? { detail: options.detail } : {}),
    ...(options.cause !== undefined ? { cause: options.cause } : {})
  }
  return isTemporaryStatus(status)
    ? new TemporaryError({
      service,
      status,
      message,
      ...(options.retryAfterMillis !== undefined ? { retryAfterMillis: options.retryAfterMillis } : {}),
      ...extra
    })
    : new PermanentError({ service, status, message, ...extra })
}

/**
 * Parses a `Retry-After` header (delta-seconds or an HTTP date) into
 * milliseconds from `now`. Unparseable or missing values give `undefined`.
 * @since 0.1.0
 */
export const parseRetryAfter = (header: string | null | undefined, now: number = Date.now()): number | undefined => {
  if (header === null || header === undefined || header.trim() === "") return undefined
  const trimmed = header.trim()
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Math.round(Number(trimmed) * 1000)
  const at = Date.parse(trimmed)
  return Number.isNaN(at) ? undefined : Math.max(0, at - now)
}

const temporaryNetworkCodes = new Set([
  "ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "EPIPE", "ETIMEDOUT", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH",
  "ENETUNREACH", "UND_ERR_SOCKET", "UND_ERR_CONNECT_TIMEOUT", "UND_ERR_HEADERS_TIMEOUT", "UND_ERR_BODY_TIMEOUT",
  "UND_ERR_CLOSED"
])

/**
 * Classifies a failure that happened below HTTP (no response at all):
 * refused or reset connections, DNS hiccups and timeouts are temporary;
 * anything else is treated as temporary too, since without a response we
 * cannot know that retrying is useless — the bounded retry budget stops it.
 * @since 0.1.0
 */
export const fromTransportError = (service: Service, cause: unknown): TemporaryError => {
  const code = networkErrorCode(cause)
  const text = cause instanceof Error ? cause.message : String(cause)
  return new TemporaryError({
    service,
    message: code !== undefined && temporaryNetworkCodes.has(code) ? `${service} unreachable (${code}): ${text}` : `${service} request failed: ${text}`,
    cause
  })
}

/**
 * Finds a Node/undici error code (`ECONNREFUSED`, …) on an error or its causes.
 * @since 0.1.0
 */
export const networkErrorCode = (u: unknown, depth = 0): string | undefined => {
  if (depth > 5 || typeof u !== "object" || u === null) return undefined
  const code = (u as { code?: unknown }).code
  if (typeof code === "string") return code
  return networkErrorCode((u as { cause?: unknown }).cause, depth + 1)
}

/**
 * The blob store could not read, write or remove audio.
 * @since 0.1.0
 * @category errors
 */
export class BlobStoreError extends Schema.TaggedError<BlobStoreError>()("BlobStoreError", {
  operation: Schema.String,
  key: Schema.String,
  message: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {}

/**
 * The entry exists but its audio is gone from the blob store (deleted by
 * hand, a lost volume). The message is for users; the blob key is not in it.
 * @since 0.1.0
 * @category errors
 */
export class AudioMissing extends Schema.TaggedError<AudioMissing>()("AudioMissing", {
  entryId: Schema.String
}) {
  override get message() {
    return "the recording's audio is missing"
  }
}

/**
 * A byte range that lies wholly outside a recording of `sizeBytes` bytes
 * (HTTP 416).
 * @since 0.1.0
 * @category errors
 */
export class RangeNotSatisfiable extends Schema.TaggedError<RangeNotSatisfiable>()("RangeNotSatisfiable", {
  sizeBytes: Schema.Number
}) {
  override get message() {
    return `the requested range lies outside the recording (${this.sizeBytes} bytes)`
  }
}

/**
 * An upload's `Idempotency-Key` was already used by the same user within its
 * window: the upload is a retry, and `entryId` is the entry the first one
 * made. Nothing was written for this one.
 * @since 0.1.0
 * @category errors
 */
export class IdempotencyKeyUsed extends Schema.TaggedError<IdempotencyKeyUsed>()("IdempotencyKeyUsed", {
  entryId: Schema.String
}) {
  override get message() {
    return `this Idempotency-Key already made entry ${this.entryId}`
  }
}
