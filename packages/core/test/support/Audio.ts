/**
 * Real test audio: speech from espeak-ng, converted with ffmpeg into every
 * container voice-journal accepts, plus files that only pretend to be audio.
 * Files are generated once per machine into a cache directory and reused.
 */
import { execFileSync } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

/** What the fixtures say; pocketsphinx reliably hears "world" and "is" in every container. */
export const SPOKEN_TEXT = "hello world this is a test of the journal"
/** Words the offline engine reliably recognises in {@link SPOKEN_TEXT}. */
export const RECOGNISED_WORDS = ["world", "is"] as const

export type AudioFormat =
  | "wav"
  | "mp3" // with an ID3v2 tag
  | "mp3-no-id3"
  | "m4a" // ftyp brand M4A
  | "mp4-generic" // ftyp brand isom, as Safari records: file-type says video/mp4
  | "ogg-opus"
  | "flac"
  | "webm-opus" // as a browser's MediaRecorder makes it: file-type says video/webm
  | "aac" // ADTS

export const AUDIO_FORMATS: ReadonlyArray<AudioFormat> = [
  "wav", "mp3", "mp3-no-id3", "m4a", "mp4-generic", "ogg-opus", "flac", "webm-opus", "aac"
]

const ffmpegArgs: Record<AudioFormat, { ext: string; args: ReadonlyArray<string> }> = {
  "wav": { ext: "wav", args: ["-ar", "16000", "-ac", "1", "-c:a", "pcm_s16le"] },
  "mp3": { ext: "mp3", args: ["-c:a", "libmp3lame", "-b:a", "64k", "-id3v2_version", "3", "-metadata", "title=journal"] },
  "mp3-no-id3": { ext: "mp3", args: ["-c:a", "libmp3lame", "-b:a", "64k", "-id3v2_version", "0", "-write_id3v1", "0", "-write_xing", "0", "-map_metadata", "-1"] },
  "m4a": { ext: "m4a", args: ["-c:a", "aac", "-b:a", "64k", "-f", "ipod"] },
  "mp4-generic": { ext: "mp4", args: ["-c:a", "aac", "-b:a", "64k", "-f", "mp4", "-brand", "isom"] },
  "ogg-opus": { ext: "ogg", args: ["-c:a", "libopus", "-b:a", "32k", "-f", "ogg"] },
  "flac": { ext: "flac", args: ["-c:a", "flac"] },
  "webm-opus": { ext: "webm", args: ["-c:a", "libopus", "-b:a", "32k", "-f", "webm"] },
  "aac": { ext: "aac", args: ["-c:a", "aac", "-b:a", "64k", "-f", "adts"] }
}

export const fixtureDir = path.join(os.tmpdir(), "voice-journal-audio-fixtures-v1")

const speechWav = (text: string): string => {
  fs.mkdirSync(fixtureDir, { recursive: true })
  const name = `speech-${createHash("sha256").update(text).digest("hex").slice(0, 16)}.wav`
  const out = path.join(fixtureDir, name)
  if (!fs.existsSync(out)) {
    const tmp = path.join(fixtureDir, `.tmp-${process.pid}-${name}`)
    execFileSync("espeak-ng", ["-s", "120", "-v", "en-us", "-w", tmp, text])
    fs.renameSync(tmp, out)
  }
  return out
}

/**
 * Path to a real recording of `text` (default {@link SPOKEN_TEXT}) in the
 * given container. Generated on first use (needs espeak-ng and ffmpeg).
 */
export const audioFile = (format: AudioFormat, text: string = SPOKEN_TEXT): string => {
  const source = speechWav(text)
  const { args, ext } = ffmpegArgs[format]
  const out = path.join(fixtureDir, `${path.basename(source, ".wav")}.${format}.${ext}`)
  if (!fs.existsSync(out)) {
    // same extension, so ffmpeg picks the muxer; rename makes it appear whole
    const tmp = path.join(fixtureDir, `.tmp-${process.pid}-${path.basename(out)}`)
    execFileSync("ffmpeg", ["-loglevel", "error", "-y", "-i", source, ...args, tmp])
    fs.renameSync(tmp, out)
  }
  return out
}

/** Bytes of a real recording. */
export const audioBytes = (format: AudioFormat, text?: string): Uint8Array =>
  new Uint8Array(fs.readFileSync(audioFile(format, text)))

/** A real PNG image (1×1), to be sent as if it were audio. */
export const pngBytes = (): Uint8Array =>
  new Uint8Array(Buffer.from(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==",
    "base64"
  ))

/** The first 64 KiB of the running node binary: a real ELF executable. */
export const elfBytes = (): Uint8Array => {
  const fd = fs.openSync(process.execPath, "r")
  try {
    const buf = Buffer.alloc(64 * 1024)
    const n = fs.readSync(fd, buf, 0, buf.length, 0)
    return new Uint8Array(buf.subarray(0, n))
  } finally {
    fs.closeSync(fd)
  }
}

/**
 * Sentences of clearly different lengths (about 1, 2, 3, 4 and 5 seconds
 * of speech), so an engine can tell them apart by length alone
 * (`FakeOpenAiTranscription`'s `sentences` mode).
 */
export const LONG_SENTENCES = [
  "good morning",
  "we walked along the river today",
  "my sister called to say that she will visit us soon",
  "the train was late again so I read a book about old ships on the platform",
  "in the evening we cooked dinner together and talked for hours about the places we want to see next summer"
] as const

/** A long recording of {@link LONG_SENTENCES} said over and over, 1.5 s of silence after each. */
export interface LongRecording {
  readonly file: string
  /** Every sentence said, in order. */
  readonly spoken: ReadonlyArray<string>
  readonly durationSeconds: number
}

const ffmpeg = (...args: ReadonlyArray<string>) => execFileSync("ffmpeg", ["-nostdin", "-loglevel", "error", "-y", ...args])

/**
 * A recording of at least `seconds`, made once per machine and cached: the
 * five sentences (espeak-ng), each followed by 1.5 s of silence, as one
 * cycle repeated with ffmpeg (`-stream_loop`, no re-encoding), in
 * `format`: `mp3` (32 kbit/s, compact) or `wav-stereo` (44.1 kHz 16-bit
 * stereo: 176 kB a second, to make a large file).
 */
export const longRecording = (seconds: number, format: "mp3" | "wav-stereo" = "mp3"): LongRecording => {
  fs.mkdirSync(fixtureDir, { recursive: true })
  const ext = format === "mp3" ? "mp3" : "wav"
  const codec = format === "mp3" ? ["-ar", "16000", "-ac", "1", "-c:a", "libmp3lame", "-b:a", "32k"] : ["-ar", "44100", "-ac", "2", "-c:a", "pcm_s16le"]
  const cycle = path.join(fixtureDir, `long-cycle-v1.${format}.${ext}`)
  if (!fs.existsSync(cycle)) {
    const silence = path.join(fixtureDir, "long-silence-1.5s.wav")
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=22050:cl=mono", "-t", "1.5", "-c:a", "pcm_s16le", silence)
    const list = path.join(fixtureDir, `.tmp-${process.pid}-cycle.txt`)
    fs.writeFileSync(list, LONG_SENTENCES.flatMap((s) => [`file '${speechWav(s)}'`, `file '${silence}'`]).join("\n"))
    const tmp = path.join(fixtureDir, `.tmp-${process.pid}-${path.basename(cycle)}`)
    ffmpeg("-f", "concat", "-safe", "0", "-i", list, ...codec, tmp)
    fs.rmSync(list)
    fs.renameSync(tmp, cycle)
  }
  const cycleSeconds = Number(execFileSync("ffprobe", ["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", cycle]).toString())
  const cycles = Math.ceil(seconds / cycleSeconds)
  const out = path.join(fixtureDir, `long-${cycles}x.${format}.${ext}`)
  if (!fs.existsSync(out)) {
    const tmp = path.join(fixtureDir, `.tmp-${process.pid}-${path.basename(out)}`)
    ffmpeg("-stream_loop", String(cycles - 1), "-i", cycle, "-c", "copy", tmp)
    fs.renameSync(tmp, out)
  }
  const durationSeconds = Number(execFileSync("ffprobe", ["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", out]).toString())
  return { file: out, spoken: Array.from({ length: cycles }, () => LONG_SENTENCES).flat(), durationSeconds }
}

/**
 * What the fake microphone says: short, because Chromium loops the file from
 * its own start, not from when recording starts — any 4 s recording must hold
 * one whole "world … is".
 */
export const MICROPHONE_TEXT = "hello world this is"

/**
 * Speech as a 48 kHz mono WAV, what Chromium's fake microphone plays
 * (`--use-file-for-fake-audio-capture`, looped) in the web app's browser tests.
 */
export const fakeMicrophoneWav = (text: string = MICROPHONE_TEXT): string => {
  fs.mkdirSync(fixtureDir, { recursive: true })
  const out = path.join(fixtureDir, `mic48k-${createHash("sha256").update(text).digest("hex").slice(0, 16)}.wav`)
  if (!fs.existsSync(out)) {
    const spoken = path.join(fixtureDir, `.tmp-${process.pid}-mic-speech.wav`)
    const tmp = path.join(fixtureDir, `.tmp-${process.pid}-${path.basename(out)}`)
    // a little faster than the other fixtures: pocketsphinx hears this short phrase better at 140 words/min
    execFileSync("espeak-ng", ["-s", "140", "-v", "en-us", "-w", spoken, text])
    // a short pause after the words, so the loop keeps the repetitions apart
    execFileSync("ffmpeg", ["-loglevel", "error", "-y", "-i", spoken, "-af", "apad=pad_dur=0.25", "-ar", "48000", "-ac", "1", "-c:a", "pcm_s16le", "-f", "wav", tmp])
    fs.rmSync(spoken)
    fs.renameSync(tmp, out)
  }
  return out
}
