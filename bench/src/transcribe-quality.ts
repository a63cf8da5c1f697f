/**
 * bench/transcribe-quality — word error rate (WER) and real-time factor
 * (RTF: processing time / audio length; below 1 is faster than real time)
 * of the transcription engines on a corpus made here: SENTENCES sentences
 * spoken by espeak-ng in two voices, each as WAV and re-encoded as
 * WebM/Opus (browsers) and AAC (phones). Engines, in the same run:
 *
 * - pocketsphinx, the fallback (the server's default command), the baseline;
 * - local Whisper (WhisperTranscriber) with the model `serve` would use
 *   (VJ_WHISPER_MODEL in VJ_DATA_DIR/models), when it is installed — if not,
 *   the bench says so and how to get it.
 *
 * Goals (issue 12): Whisper's WER at most a third of pocketsphinx's, and a
 * 1-minute note in at most 30 s on 2 cores (RTF ≤ 0.5).
 *
 * Run: pnpm bench:transcribe-quality   (SENTENCES=24, VJ_DATA_DIR=./data, VJ_WHISPER_MODEL=base)
 */
import { NodeContext } from "@effect/platform-node"
import { Transcriber, WhisperTranscriber } from "@voice-journal/core"
import { Models } from "@voice-journal/http-server"
import { Config } from "@voice-journal/http-server"
import { Effect, Layer } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

const corpus = [
  "the weather was cold and grey when we left the house this morning",
  "i called my mother after lunch and we talked about the garden",
  "remember to buy milk bread and eggs on the way home",
  "the meeting with the new team went better than i expected",
  "tomorrow i want to wake up early and go for a long run",
  "my daughter read her first book out loud to me tonight",
  "the train was late again so i missed the start of the film",
  "we planted tomatoes beans and a small apple tree in spring",
  "i feel tired but happy after a long day of work",
  "the doctor said my knee should heal in about six weeks",
  "we cooked dinner together and watched the sun go down",
  "i need to finish the report before the end of the month",
  "the library downtown has a quiet room on the second floor",
  "my brother is moving to a new city next year",
  "it rained all afternoon so we stayed inside and played cards",
  "i started learning to play the piano three months ago",
  "the coffee shop on the corner makes the best bread in town",
  "we should plan a trip to the mountains in the summer",
  "my phone battery died just before the important call",
  "the children built a big snowman in the park today",
  "i wrote three pages of my novel before breakfast",
  "the car needs new tires before the winter comes",
  "she told me a funny story about her first job",
  "next week i will start a new project at the office"
].slice(0, Number(process.env.SENTENCES ?? 24))

const voices = ["en-us", "en-gb+f3"] as const
const formats = {
  wav: ["-ar", "16000", "-ac", "1", "-c:a", "pcm_s16le"],
  "webm-opus": ["-c:a", "libopus", "-b:a", "32k", "-f", "webm"],
  aac: ["-c:a", "aac", "-b:a", "64k", "-f", "adts"]
} as const
type Format = keyof typeof formats

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vj-bench-quality-"))

interface Clip {
  readonly file: string
  readonly format: Format
  readonly voice: string
  readonly reference: string
  readonly seconds: number
}

const clips: Array<Clip> = []
for (const [i, sentence] of corpus.entries()) {
  for (const voice of voices) {
    const wav = path.join(dir, `s${i}-${voice}.src.wav`)
    execFileSync("espeak-ng", ["-v", voice, "-s", "150", "-w", wav, sentence])
    const seconds = Number(execFileSync("ffprobe", ["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", wav]).toString())
    for (const [format, args] of Object.entries(formats) as Array<[Format, ReadonlyArray<string>]>) {
      const ext = format === "webm-opus" ? "webm" : format
      const file = path.join(dir, `s${i}-${voice}.${ext}`)
      execFileSync("ffmpeg", ["-loglevel", "error", "-y", "-i", wav, ...args, file])
      clips.push({ file, format, voice, reference: sentence, seconds })
    }
  }
}

const words = (text: string) => text.toLowerCase().replace(/[^a-z0-9' ]+/g, " ").split(/\s+/).filter((w) => w !== "")

/** Word-level edit distance (substitutions + deletions + insertions). */
const editDistance = (ref: ReadonlyArray<string>, hyp: ReadonlyArray<string>) => {
  let previous = Array.from({ length: hyp.length + 1 }, (_, j) => j)
  for (let i = 1; i <= ref.length; i++) {
    const row = [i]
    for (let j = 1; j <= hyp.length; j++) {
      row[j] = Math.min(previous[j]! + 1, row[j - 1]! + 1, previous[j - 1]! + (ref[i - 1] === hyp[j - 1] ? 0 : 1))
    }
    previous = row
  }
  return previous[hyp.length]!
}

interface Score {
  errors: number
  refWords: number
  seconds: number
  audioSeconds: number
  failures: number
}

const measure = (name: string, layer: Layer.Layer<Transcriber.Transcriber>) =>
  Effect.gen(function*() {
    const transcriber = yield* Transcriber.Transcriber
    const byFormat = new Map<Format, Score>()
    for (const clip of clips) {
      const score = byFormat.get(clip.format) ?? { errors: 0, refWords: 0, seconds: 0, audioSeconds: 0, failures: 0 }
      byFormat.set(clip.format, score)
      const started = performance.now()
      const heard = yield* transcriber.transcribe({ path: clip.file, mimeType: "audio/wav" }).pipe(
        Effect.map((t) => t.text),
        // "recognised no speech" and the like count as every word missed
        Effect.catchAll((e) => Effect.sync(() => (score.failures++, console.error(`  ${name} ${path.basename(clip.file)}: ${e.message}`), "")))
      )
      score.seconds += (performance.now() - started) / 1000
      score.audioSeconds += clip.seconds
      const ref = words(clip.reference)
      score.errors += editDistance(ref, words(heard))
      score.refWords += ref.length
    }
    return { name, byFormat }
  }).pipe(Effect.provide(layer))

const pocketsphinx = Transcriber.layerCommand({
  command: Transcriber.parseCommandLine(Config.defaultTranscribeCommand),
  convert: "wav16k"
}).pipe(Layer.provide(NodeContext.layer))

const dataDir = path.resolve(process.env.INIT_CWD ?? process.cwd(), process.env.VJ_DATA_DIR ?? "./data")
const modelName = process.env.VJ_WHISPER_MODEL ?? Models.defaultModel
const model = Models.find(modelName)
const modelPath = model !== undefined ? Models.pathOf(dataDir, model) : path.resolve(modelName)

const program = Effect.gen(function*() {
  const seconds = clips.filter((c) => c.format === "wav").reduce((s, c) => s + c.seconds, 0)
  console.log(
    `corpus: ${corpus.length} sentences × ${voices.length} voices (${voices.join(", ")}) × ${Object.keys(formats).length} formats = ${clips.length} clips, ${
      seconds.toFixed(0)
    } s of speech per format; ${os.availableParallelism()} cores, load ${os.loadavg()[0]!.toFixed(1)}`
  )
  const results = [yield* measure("pocketsphinx", pocketsphinx)]
  if (fs.existsSync(modelPath)) {
    const whisper = WhisperTranscriber.layer({ modelPath, language: process.env.VJ_LANGUAGE ?? "auto" }).pipe(Layer.provide(NodeContext.layer))
    results.push(yield* measure(`whisper ${path.basename(modelPath)}`, whisper))
  } else {
    console.log(`\nWhisper not measured: no model at ${modelPath}.`)
    console.log(`Get it with: pnpm voice-journal models pull ${model?.name ?? Models.defaultModel}   (then run this bench again)`)
  }
  console.log("\nengine                    format      WER      RTF   failed")
  for (const r of results) {
    for (const [format, s] of r.byFormat) {
      console.log(
        `${r.name.padEnd(25)} ${format.padEnd(10)} ${(100 * s.errors / s.refWords).toFixed(1).padStart(5)}%  ${
          (s.seconds / s.audioSeconds).toFixed(3).padStart(6)
        }   ${s.failures}`
      )
    }
  }
  const overall = (r: (typeof results)[number]) => {
    const all = [...r.byFormat.values()]
    const sum = (f: (s: Score) => number) => all.reduce((a, s) => a + f(s), 0)
    return { wer: sum((s) => s.errors) / sum((s) => s.refWords), rtf: sum((s) => s.seconds) / sum((s) => s.audioSeconds) }
  }
  const base = overall(results[0]!)
  console.log(`\npocketsphinx overall: WER ${(100 * base.wer).toFixed(1)}%, RTF ${base.rtf.toFixed(3)} (a 1-minute note in ${(60 * base.rtf).toFixed(1)} s)`)
  if (results[1] !== undefined) {
    const w = overall(results[1])
    console.log(
      `${results[1].name} overall: WER ${(100 * w.wer).toFixed(1)}%, RTF ${w.rtf.toFixed(3)} (a 1-minute note in ${(60 * w.rtf).toFixed(1)} s)`
    )
    console.log(
      `WER ratio whisper/pocketsphinx: ${(w.wer / base.wer).toFixed(2)} (goal ≤ 0.33); 1-minute note: ${(60 * w.rtf).toFixed(1)} s (goal ≤ 30 s)`
    )
  }
})

Effect.runPromise(program).finally(() => fs.rmSync(dir, { recursive: true, force: true }))
