/**
 * Full-text search over a user's entries: what is indexed, how text and
 * queries are turned into terms, and the request a search takes.
 *
 * One search document per voice entry (table `entry_search`, migration
 * 0009), rewritten by `SqlJournalStore` in the same transaction as every
 * write that changes what it holds: the primary transcription's text, the
 * primary cleanup's title, text and tags. Each dialect indexes it its own way
 * (SQLite: an FTS5 table; PostgreSQL: a `tsvector` column with a GIN index).
 *
 * Text is folded here, not by the database, so both dialects match alike
 * whatever their locale: Unicode compatibility-decomposed, accents (non-spacing
 * marks) removed, lower-cased, then split into runs of letters, digits and
 * spacing marks — any script. Query words get the same treatment, so query
 * syntax never reaches the database: `"`, `*`, `:`, `&`, `NEAR`, quotes or
 * SQL are just separators or words. Words with no separators between them
 * (Chinese, Japanese) are one term; the prefix match on the last word finds
 * their beginnings.
 *
 * Owner and tags are indexed as opaque keys in their own column
 * (`match_keys`), so one index lookup answers "this user's entries with these
 * words and this tag" — no per-user scan, and another user's entries can
 * never match.
 *
 * Ranking (best first): a hit in the title or tags outranks a hit in the
 * cleaned text, which outranks a hit only in the transcript; ties, and
 * tag-only searches, newest first.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"
import type { UserId } from "./Domain.js"

/**
 * The longest query accepted, in characters.
 * @since 0.1.0
 */
export const maxQueryLength = 200

/**
 * The longest tag accepted in a filter, in characters.
 * @since 0.1.0
 */
export const maxTagLength = 100

/**
 * A last word this long or longer also matches words it begins (`walk` →
 * `walking`); shorter ones only match exactly (a one-letter prefix matches
 * half the dictionary).
 * @since 0.1.0
 */
export const minPrefixLength = 3

/** Words longer than this are not indexed (hashes, base64, noise), and a field keeps its first `maxWordsPerField` words. */
const maxWordLength = 100
const maxWordsPerField = 50_000

/**
 * What a search asks for. `q`: words (all must match; the last also as a
 * prefix), at most {@link maxQueryLength} characters; `tag`: only entries
 * carrying this tag, at most {@link maxTagLength}. Neither: every entry (the
 * plain list). Paging as for lists (`limit` default 20, `offset` 0).
 * @since 0.1.0
 */
export interface SearchRequest {
  readonly q?: string | undefined
  readonly tag?: string | undefined
  readonly limit?: number | undefined
  readonly offset?: number | undefined
}

/**
 * A search query that is too long (or a tag filter that is).
 * @since 0.1.0
 */
export class InvalidSearch extends Schema.TaggedError<InvalidSearch>()("InvalidSearch", {
  message: Schema.String
}) {}

const marks = /\p{Mn}/gu
const word = /[\p{L}\p{N}\p{M}]+/gu

/**
 * Case- and accent-folded text: `"Crème BRÛLÉE"` → `"creme brulee"`.
 * @since 0.1.0
 */
export const fold = (text: string): string => text.normalize("NFKD").replace(marks, "").toLowerCase()

/**
 * The folded words of `text`, in order.
 * @since 0.1.0
 */
export const words = (text: string): Array<string> => fold(text).match(word) ?? []

const hex = (s: string) => Array.from(new TextEncoder().encode(s), (b) => b.toString(16).padStart(2, "0")).join("")

/**
 * The opaque index key of an owner: one alphanumeric token, injective.
 * @since 0.1.0
 */
export const ownerKey = (userId: string): string => `o${hex(userId)}`

/**
 * The opaque index key of a tag (exact after folding: `Work` = `work`).
 * @since 0.1.0
 */
export const tagKey = (tag: string): string => `t${hex(fold(tag.trim()))}`

/**
 * The indexed columns of an entry's search document: space-separated folded
 * words (or keys).
 * @since 0.1.0
 */
export interface SearchDocument {
  readonly matchKeys: string
  readonly title: string
  readonly tags: string
  readonly cleaned: string
  readonly transcript: string
}

const field = (text: string | null | undefined) =>
  words(text ?? "").filter((w) => w.length <= maxWordLength).slice(0, maxWordsPerField).join(" ")

/**
 * The document of one entry from its primary rows (null where there is none yet).
 * @since 0.1.0
 */
export const document = (source: {
  readonly userId: string
  readonly title: string | null
  readonly tags: ReadonlyArray<string>
  readonly cleaned: string | null
  readonly transcript: string | null
}): SearchDocument => ({
  matchKeys: [ownerKey(source.userId), ...source.tags.map(tagKey)].join(" "),
  title: field(source.title),
  tags: field(source.tags.join(" ")),
  cleaned: field(source.cleaned),
  transcript: field(source.transcript)
})

/**
 * A parsed search, ready for a dialect to turn into its match expression.
 * `terms` are folded words (all must match, in the text columns); the last
 * one is a prefix when `prefixLast`. `keys` (owner, tags) must all be in
 * `match_keys`.
 * @since 0.1.0
 */
export interface Query {
  readonly userId: UserId
  readonly keys: ReadonlyArray<string>
  readonly terms: ReadonlyArray<string>
  readonly prefixLast: boolean
}

/**
 * Parses a request. `"list"`: no criteria, the plain list; `"nothing"`: a
 * query with no words in it (only punctuation) matches no entry.
 * @since 0.1.0
 */
export const parse = (
  userId: UserId,
  request: { readonly q?: string | undefined; readonly tag?: string | undefined }
): Query | "list" | "nothing" | InvalidSearch => {
  const q = request.q?.trim() ?? ""
  const tag = request.tag?.trim() ?? ""
  if (q.length > maxQueryLength) return new InvalidSearch({ message: `q is longer than ${maxQueryLength} characters` })
  if (tag.length > maxTagLength) return new InvalidSearch({ message: `tag is longer than ${maxTagLength} characters` })
  if (q === "" && tag === "") return "list"
  const terms = [...new Set(words(q))]
  if (q !== "" && terms.length === 0) return "nothing"
  const last = terms[terms.length - 1]
  return {
    userId,
    keys: tag === "" ? [ownerKey(userId)] : [ownerKey(userId), tagKey(tag)],
    terms,
    prefixLast: last !== undefined && last.length >= minPrefixLength
  }
}
