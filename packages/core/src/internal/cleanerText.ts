/**
 * Text handling for the Cleaner: a conservative token estimate, splitting a
 * transcript into pieces that fit a context window, and sanitising what a
 * model sends back.
 */

const encoder = new TextEncoder()

/**
 * A conservative token estimate: one token per 3 UTF-8 bytes. English runs
 * at about 4 characters a token, so this over-counts it; scripts with
 * multi-byte characters (CJK: 3 bytes, ~1 token a character) are counted by
 * their bytes instead of their characters, which a plain `chars / 3` would
 * under-count.
 */
export const estimateTokens = (text: string): number => Math.ceil(encoder.encode(text).byteLength / 3)

const utf8Length = (codePoint: number) => codePoint < 0x80 ? 1 : codePoint < 0x800 ? 2 : codePoint < 0x10000 ? 3 : 4

/** How many UTF-16 units of `text`, whole code points only, fit in `maxTokens` by {@link estimateTokens}. */
const prefixFitting = (text: string, maxTokens: number): number => {
  const maxBytes = maxTokens * 3
  let bytes = 0
  let units = 0
  for (const ch of text) {
    bytes += utf8Length(ch.codePointAt(0)!)
    if (bytes > maxBytes) break
    units += ch.length
  }
  return units
}

// Latin sentence ends need a following space ("3.5" is no end); CJK ones don't.
const sentenceEnd = /[.!?…]["')\]]?\s|[。！？]|\n/g

/**
 * Splits `text` into pieces whose {@link estimateTokens} is at most
 * `maxTokens`, cutting after the last sentence end in the second half of the
 * window, else at the last whitespace, else between two code points. Only
 * whitespace at the cuts is lost: every word arrives, in order.
 */
export const splitForContext = (text: string, maxTokens: number): ReadonlyArray<string> => {
  const pieces: Array<string> = []
  let rest = text.trim()
  while (rest !== "" && estimateTokens(rest) > maxTokens) {
    const limit = Math.max(1, prefixFitting(rest, maxTokens))
    // one character more than fits: a sentence end or space right after the fitting part is a clean cut too
    const window = rest.slice(0, limit + 1)
    let cut = -1
    for (const m of window.matchAll(sentenceEnd)) {
      const end = m.index + m[0].trimEnd().length // after the punctuation, before any whitespace
      if (end >= limit / 2 && end <= limit) cut = end
    }
    if (cut < 0) {
      const space = window.search(/\s\S*$/)
      cut = space > 0 ? space : limit
    }
    pieces.push(rest.slice(0, cut).trim())
    rest = rest.slice(cut).trim()
  }
  if (rest !== "") pieces.push(rest)
  return pieces
}

// C0 controls except tab and newline, DEL, C1 controls, and the bidirectional
// overrides/isolates that can make text display differently from what it is.
// eslint-disable-next-line no-control-regex
const unsafe = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g

/** Model output is untrusted input for Notion and our API: no control characters, normalised line ends, trimmed. */
export const sanitizeText = (text: string): string => text.replace(/\r\n?/g, "\n").replace(unsafe, "").trim()

/** A title is one line of at most `maxLength` characters (code points, so no emoji is cut in half). */
export const sanitizeTitle = (title: string, maxLength: number): string => {
  const line = sanitizeText(title).replace(/\s+/g, " ")
  const chars = Array.from(line)
  return chars.length <= maxLength ? line : chars.slice(0, maxLength).join("").trimEnd()
}
