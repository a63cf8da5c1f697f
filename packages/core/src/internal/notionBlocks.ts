/**
 * The page body as Notion blocks, split to Notion's request limits
 * (https://developers.notion.com/reference/request-limits): 2,000 characters
 * per `text.content`, 100 elements per array, two nesting levels, 1,000 block
 * elements and 500 KB per request.
 *
 * Everything here is a pure, deterministic function of the entry, which is
 * what lets an interrupted publish be finished by counting the blocks that
 * already exist and appending only the rest.
 */
import type { BlockObjectRequest } from "@notionhq/client"

/** Notion's documented limits. */
export const limits = {
  richTextChars: 2000,
  childrenPerRequest: 100,
  elementsPerRequest: 1000,
  payloadBytes: 500_000
} as const

/** What one request may carry; the byte budget keeps a margin under 500 KB for properties and JSON framing. */
export interface Budget {
  readonly count: number
  readonly elements: number
  readonly bytes: number
}

/** The budget of one create/append request (450 KB of blocks, the margin `notion-helper` uses). */
export const requestBudget: Budget = { count: limits.childrenPerRequest, elements: limits.elementsPerRequest, bytes: 450_000 }

const isHighSurrogate = (code: number) => code >= 0xd800 && code <= 0xdbff

/**
 * Splits text into paragraphs (at blank lines) and each paragraph into
 * pieces of at most `max` UTF-16 units, preferring to cut just after
 * whitespace and never inside a surrogate pair. The pieces of a paragraph
 * concatenate back to exactly that paragraph: only the blank lines between
 * paragraphs (which become block boundaries) and whitespace at a paragraph's
 * ends are dropped.
 */
export const splitText = (text: string, max: number = limits.richTextChars): ReadonlyArray<string> =>
  text.split(/\n\s*\n/).map((p) => p.trim()).filter((p) => p !== "").flatMap((paragraph) => {
    const pieces: Array<string> = []
    let rest = paragraph
    while (rest.length > max) {
      let cut = max
      // the last whitespace in the second half of the window, if any: cut after it
      for (let i = max - 1; i >= max / 2; i--) {
        if (/\s/.test(rest[i]!)) {
          cut = i + 1
          break
        }
      }
      if (isHighSurrogate(rest.charCodeAt(cut - 1))) cut -= 1
      pieces.push(rest.slice(0, cut))
      rest = rest.slice(cut)
    }
    pieces.push(rest)
    return pieces
  })

/** A paragraph block holding one piece of text. */
export const paragraph = (content: string): BlockObjectRequest => ({
  object: "block",
  type: "paragraph",
  paragraph: { rich_text: [{ type: "text", text: { content } }] }
})

/** A to-do block (unchecked): one action item. */
export const toDo = (content: string): BlockObjectRequest => ({
  object: "block",
  type: "to_do",
  to_do: { rich_text: [{ type: "text", text: { content: content.slice(0, limits.richTextChars) } }], checked: false }
})

const toggle = (children: ReadonlyArray<BlockObjectRequest>): BlockObjectRequest => ({
  object: "block",
  type: "toggle",
  toggle: { rich_text: [{ type: "text", text: { content: "Transcript" } }], children: children as Array<never> }
})

const sizeOf = (block: BlockObjectRequest) => Buffer.byteLength(JSON.stringify(block), "utf8")
const elementsOf = (block: BlockObjectRequest): number => {
  const body = (block as unknown as Record<string, { children?: ReadonlyArray<BlockObjectRequest> } | undefined>)[block.type as string]
  return 1 + (body?.children ?? []).reduce((n, c) => n + elementsOf(c), 0)
}

/**
 * Groups blocks, in order, into requests that stay within `budget` (count,
 * block elements, bytes). A block is never split; every block fits a request
 * on its own because its text is at most 2,000 characters.
 */
export const batches = (blocks: ReadonlyArray<BlockObjectRequest>, budget: Budget = requestBudget): ReadonlyArray<ReadonlyArray<BlockObjectRequest>> => {
  const out: Array<Array<BlockObjectRequest>> = []
  let current: Array<BlockObjectRequest> = []
  let elements = 0
  let bytes = 0
  for (const block of blocks) {
    const e = elementsOf(block)
    const b = sizeOf(block)
    if (current.length > 0 && (current.length + 1 > budget.count || elements + e > budget.elements || bytes + b > budget.bytes)) {
      out.push(current)
      current = []
      elements = 0
      bytes = 0
    }
    current.push(block)
    elements += e
    bytes += b
  }
  if (current.length > 0) out.push(current)
  return out
}

/**
 * The page body: the cleaned text as top-level paragraphs, the action items
 * as to-do blocks, then one toggle
 * holding the raw transcript. The toggle is created with as many transcript
 * paragraphs as fit a third of a request (`toggleInitial`), the rest are
 * appended to it.
 */
export interface PageBody {
  /** Everything before the toggle: the cleaned text's paragraphs, then the action items' to-dos. */
  readonly text: ReadonlyArray<BlockObjectRequest>
  /** Every top-level block in order: `text`, then the toggle. */
  readonly top: ReadonlyArray<BlockObjectRequest>
  /** Every paragraph of the transcript, in order (the toggle's children). */
  readonly transcript: ReadonlyArray<BlockObjectRequest>
  /** How many of `transcript` the toggle carries when it is created. */
  readonly toggleInitial: number
}

export const pageBody = (
  input: { readonly text: string; readonly transcript: string; readonly actionItems?: ReadonlyArray<string> | undefined }
): PageBody => {
  const text = [
    ...splitText(input.text).map(paragraph),
    ...(input.actionItems ?? []).map((item) => item.trim()).filter((item) => item !== "").map(toDo)
  ]
  const transcript = splitText(input.transcript).map(paragraph)
  const initial = batches(transcript, { ...requestBudget, bytes: requestBudget.bytes / 3, elements: requestBudget.elements / 2 })[0] ?? []
  return { text, top: [...text, toggle(initial)], transcript, toggleInitial: initial.length }
}
