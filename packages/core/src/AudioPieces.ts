/**
 * Long recordings as pieces an engine accepts. A recording longer than the
 * configured piece length, or larger than the transcriber's byte limit, is
 * transcribed in pieces (see `Pipeline`):
 *
 * 1. **plan** ({@link plan}): cut points near every `pieceSeconds`, each in
 *    the middle of a silence found by ffmpeg's `silencedetect` in the last
 *    {@link searchSeconds} before the boundary; where there is none, a hard
 *    cut, and the next piece starts {@link overlapSeconds} earlier so no
 *    word is lost in the seam;
 * 2. **cut** ({@link AudioPieces}): each piece re-encoded compactly (16 kHz
 *    mono MP3 at 32 kbit/s: 4 kB a second, read by every engine) into a
 *    scoped temporary directory;
 * 3. **stitch** ({@link stitch}): the pieces' segments offset into the whole
 *    recording, the words a hard cut's overlap heard twice dropped once.
 *
 * @since 0.1.0
 */
import type { CommandExecutor } from "@effect/platform/CommandExecutor"
import { Context, Effect, Layer, type Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { undecodable } from "./AudioProbe.js"
import { PermanentError, type TemporaryError } from "./Errors.js"
import * as Command from "./internal/command.js"
import type { Segment } from "./Transcriber.js"

/**
 * A stretch of silence, in seconds from the start of the recording.
 * @since 0.1.0
 */
export interface Silence {
  readonly start: number
  readonly end: number
}

/**
 * One planned piece: `[start, end)` seconds of the recording. `overlap` is how
 * many of its first seconds the piece before it also covers (a hard cut), 0
 * when it starts in a silence.
 * @since 0.1.0
 */
export interface PiecePlan {
  readonly index: number
  readonly start: number
  readonly end: number
  readonly overlap: number
}

/** How far before a boundary a silence is looked for. @since 0.1.0 */
export const searchSeconds = 30
/** What a hard cut repeats of the piece before. @since 0.1.0 */
export const overlapSeconds = 2
/** Bytes per second of an encoded piece (32 kbit/s MP3). @since 0.1.0 */
export const pieceBytesPerSecond = 4000
/** The MIME type of an encoded piece. @since 0.1.0 */
export const pieceMimeType = "audio/mpeg"
/** Room left for the multipart framing around a file that is sent whole. @since 0.1.0 */
export const uploadHeadroomBytes = 64 * 1024

/**
 * The longest piece that is at most `chunkSeconds` and, encoded, fits in
 * `maxBytes` (with 10 % to spare for the container and the request's framing).
 * @since 0.1.0
 */
export const pieceSeconds = (chunkSeconds: number, maxBytes: number | undefined): number =>
  maxBytes === undefined ? chunkSeconds : Math.max(1, Math.min(chunkSeconds, Math.floor((maxBytes * 0.9) / pieceBytesPerSecond)))

/**
 * Whether a recording must go in pieces: longer than `chunkSeconds`, or its
 * file (plus the request's framing) larger than the engine takes. A
 * recording of unknown duration is sent whole.
 * @since 0.1.0
 */
export const needsPieces = (
  recording: { readonly durationSeconds: number | null; readonly sizeBytes: number },
  limits: { readonly chunkSeconds: number; readonly maxBytes: number | undefined }
): boolean =>
  recording.durationSeconds !== null &&
  (recording.durationSeconds > limits.chunkSeconds ||
    (limits.maxBytes !== undefined && recording.sizeBytes + uploadHeadroomBytes > limits.maxBytes))

/**
 * Plans the pieces of a recording of `durationSeconds`: each at most
 * `pieceSeconds` long, cut in the middle of the longest silence within the
 * last `search` seconds before the boundary (the latest of equals), else
 * hard at the boundary with the next piece starting `overlap` seconds
 * earlier.
 * @since 0.1.0
 */
export const plan = (
  durationSeconds: number,
  silences: ReadonlyArray<Silence>,
  options: { readonly pieceSeconds: number; readonly search?: number | undefined; readonly overlap?: number | undefined }
): ReadonlyArray<PiecePlan> => {
  const length = options.pieceSeconds
  // never search more than a quarter of a piece, never overlap more than a tenth
  const search = Math.min(options.search ?? searchSeconds, length / 4)
  const overlap = Math.min(options.overlap ?? overlapSeconds, length / 10)
  const pieces: Array<PiecePlan> = []
  let start = 0
  let startOverlap = 0
  while (durationSeconds - start > length) {
    const target = start + length
    const low = target - search
    let cut: { at: number; width: number } | undefined
    for (const s of silences) {
      const from = Math.max(s.start, low)
      const to = Math.min(s.end, target)
      if (to <= from) continue
      const width = to - from
      if (cut === undefined || width >= cut.width) cut = { at: (from + to) / 2, width }
    }
    if (cut !== undefined) {
      pieces.push({ index: pieces.length, start, end: cut.at, overlap: startOverlap })
      start = cut.at
      startOverlap = 0
    } else {
      pieces.push({ index: pieces.length, start, end: target, overlap: startOverlap })
      start = target - overlap
      startOverlap = overlap
    }
  }
  pieces.push({ index: pieces.length, start, end: durationSeconds, overlap: startOverlap })
  return pieces
}

/**
 * Whether `[start, end)` lies within one silence: nothing for an engine to
 * hear (and some, like a command printing nothing, would fail on it).
 * @since 0.1.0
 */
export const isSilent = (piece: { readonly start: number; readonly end: number }, silences: ReadonlyArray<Silence>): boolean =>
  silences.some((s) => s.start <= piece.start && s.end >= piece.end)

/**
 * A piece's transcript, its segments already in seconds of the whole recording.
 * @since 0.1.0
 */
export interface PieceTranscript {
  readonly overlap: number
  readonly segments: ReadonlyArray<Segment>
}

/** A word as compared across a seam: case, punctuation and spacing ignored. */
const normalise = (word: string): string => word.toLowerCase().replace(/[^\p{L}\p{N}']/gu, "")

/** At most this many words are compared at a seam: far more than two seconds of speech. */
const maxOverlapWords = 20

/**
 * How many words at the start of `next` repeat the end of `previous`: the
 * longest run (up to 20 words) that is both `previous`'s suffix and
 * `next`'s prefix.
 * @since 0.1.0
 */
export const repeatedWords = (previous: ReadonlyArray<string>, next: ReadonlyArray<string>): number => {
  const a = previous.map(normalise).filter((w) => w !== "")
  const b = next.map(normalise).filter((w) => w !== "")
  for (let k = Math.min(a.length, b.length, maxOverlapWords); k > 0; k--) {
    let same = true
    for (let i = 0; i < k && same; i++) same = a[a.length - k + i] === b[i]
    if (same) return k
  }
  return 0
}

const words = (text: string): Array<string> => text.split(/\s+/).filter((w) => w !== "")

/** Drops the first `n` words (as {@link repeatedWords} counts them) from a piece's segments. */
const dropWords = (segments: ReadonlyArray<Segment>, n: number): Array<Segment> => {
  let left = n
  const out: Array<Segment> = []
  for (const segment of segments) {
    if (left === 0) {
      out.push(segment)
      continue
    }
    const ws = words(segment.text)
    let i = 0
    while (i < ws.length && left > 0) {
      if (normalise(ws[i]!) !== "") left--
      i++
    }
    const rest = ws.slice(i).join(" ")
    if (rest !== "") out.push({ ...segment, text: rest })
  }
  return out
}

/**
 * One transcript from the pieces, in order: their segments one after the
 * other, and where a piece overlaps the one before (a hard cut), the words
 * heard twice kept once. Empty segments are dropped; the text is the
 * segments' text joined by spaces.
 * @since 0.1.0
 */
export const stitch = (
  pieces: ReadonlyArray<PieceTranscript>
): { readonly text: string; readonly segments: ReadonlyArray<Segment> } => {
  const segments: Array<Segment> = []
  for (const piece of pieces) {
    let own = piece.segments.map((s) => ({ start: s.start, end: s.end, text: s.text.trim() })).filter((s) => s.text !== "")
    if (piece.overlap > 0 && segments.length > 0) {
      const tail = words(segments.slice(-maxOverlapWords).map((s) => s.text).join(" ")).slice(-maxOverlapWords)
      own = dropWords(own, repeatedWords(tail, words(own.map((s) => s.text).join(" "))))
    }
    segments.push(...own)
  }
  return { text: segments.map((s) => s.text).join(" "), segments }
}

/**
 * Finding silences and cutting pieces (ffmpeg by default).
 * @since 0.1.0
 * @category tags
 */
export class AudioPieces extends Context.Tag("@voice-journal/core/AudioPieces")<AudioPieces, {
  /** The recording's silences (at least {@link minSilenceSeconds} under {@link silenceThreshold}). */
  readonly silences: (input: string) => Effect.Effect<ReadonlyArray<Silence>, PermanentError | TemporaryError>
  /** Writes `[start, end)` of `input` to `output` as a compact piece ({@link pieceMimeType}). */
  readonly cut: (
    input: string,
    piece: { readonly start: number; readonly end: number },
    output: string
  ) => Effect.Effect<void, PermanentError | TemporaryError>
}>() {}

/** What counts as silence: quieter than this… @since 0.1.0 */
export const silenceThreshold = "-35dB"
/** …for at least this long (a pause between sentences, not between words). @since 0.1.0 */
export const minSilenceSeconds = 0.5

/**
 * Parses `silencedetect`'s log lines; a silence still open at the end of
 * the recording ends at `durationSeconds`.
 * @since 0.1.0
 */
export const parseSilences = (log: string, durationSeconds: number): ReadonlyArray<Silence> => {
  const out: Array<Silence> = []
  let open: number | undefined
  for (const m of log.matchAll(/silence_(start|end): (-?[\d.]+)/g)) {
    const t = Math.max(0, Number(m[2]))
    if (m[1] === "start") open = t
    else if (open !== undefined) {
      out.push({ start: open, end: t })
      open = undefined
    }
  }
  if (open !== undefined) out.push({ start: open, end: durationSeconds })
  return out
}

/**
 * @since 0.1.0
 * @category constructors
 */
export const makeFfmpeg = Effect.gen(function*() {
  const executor = yield* Effect.context<CommandExecutor>()
  const ffmpeg = (args: ReadonlyArray<string>) =>
    Command.run(["ffmpeg", "-nostdin", "-hide_banner", "-nostats", ...args]).pipe(
      Effect.provide(executor),
      Effect.mapError((cause) =>
        new PermanentError({ service: "transcriber", message: "the server cannot run ffmpeg: install it", detail: String(cause), cause })
      ),
      // ffmpeg's stderr names paths and memory addresses: log it, don't show it
      Effect.filterOrFail((r) => r.exitCode === 0, (r) => undecodable(`ffmpeg exited with ${r.exitCode}: ${Command.tail(r.stderr)}`))
    )
  return AudioPieces.of({
    silences: (input) =>
      ffmpeg(["-i", input, "-vn", "-af", `silencedetect=noise=${silenceThreshold}:d=${minSilenceSeconds}`, "-f", "null", "-"]).pipe(
        Effect.map((r) => {
          const duration = /Duration: (\d+):(\d+):([\d.]+)/.exec(r.stderr)
          const total = duration ? Number(duration[1]) * 3600 + Number(duration[2]) * 60 + Number(duration[3]) : Infinity
          return parseSilences(r.stderr, total)
        })
      ),
    cut: (input, piece, output) =>
      ffmpeg([
        "-loglevel", "error", "-y",
        // before -i: a fast seek; decoding from there keeps the cut sample-accurate
        "-ss", piece.start.toFixed(3), "-t", (piece.end - piece.start).toFixed(3), "-i", input,
        // LAME's fastest mode: a third less CPU than its default, the same size at 32 kbit/s
        "-vn", "-ac", "1", "-ar", "16000", "-c:a", "libmp3lame", "-b:a", "32k", "-compression_level", "9", "-f", "mp3", output
      ]).pipe(Effect.asVoid)
  })
})

/**
 * `AudioPieces` backed by ffmpeg.
 * @since 0.1.0
 * @category layers
 */
export const layerFfmpeg: Layer.Layer<AudioPieces, never, CommandExecutor> = Layer.effect(AudioPieces, makeFfmpeg)

/**
 * The temporary directory for one transcription run's pieces, named after
 * the run: emptied when acquired (what a killed process left behind is
 * removed when the run resumes here) and removed, with whatever is in it,
 * when the scope closes — on success, failure or interruption.
 * @since 0.1.0
 */
export const temporaryDirectory = (transcriptionId: string): Effect.Effect<string, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const dir = piecesDirectory(transcriptionId)
      fs.rmSync(dir, { recursive: true, force: true })
      fs.mkdirSync(dir, { recursive: true })
      return dir
    }),
    (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
  )

/** Where {@link temporaryDirectory} puts a run's pieces. @since 0.1.0 */
export const piecesDirectory = (transcriptionId: string): string =>
  path.join(os.tmpdir(), `voice-journal-pieces-${transcriptionId.replace(/[^\w-]/g, "_")}`)
