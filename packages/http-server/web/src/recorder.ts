/**
 * Recording from the microphone with `MediaRecorder`: Opus in WebM where the
 * browser has it (Chromium, Firefox), AAC in MP4 on Safari. Every second's
 * chunk goes straight into the outbox (IndexedDB), so what was said is kept
 * even if the tab dies mid-sentence. The level meter reads an `AnalyserNode`
 * on the same stream.
 */
import * as Outbox from "./outbox.js"
import { recordingNow } from "./uploader.js"

const candidates = ["audio/webm;codecs=opus", "audio/mp4", "audio/webm", "audio/ogg;codecs=opus"]

export const supportedType = (): string | undefined =>
  typeof MediaRecorder === "undefined" ? undefined : candidates.find((t) => MediaRecorder.isTypeSupported(t))

const extensionOf = (mime: string) => (mime.startsWith("audio/mp4") ? "m4a" : mime.startsWith("audio/ogg") ? "ogg" : "webm")

/** Chunks are handed over (and stored) this often. */
const timesliceMs = 1000

export interface Recorder {
  readonly id: string
  /** Input level 0…1 (RMS of the last frame). */
  level(): number
  /** Milliseconds recorded, pauses excluded. */
  elapsed(): number
  pause(): void
  resume(): void
  readonly paused: () => boolean
  /** Stops, waits until the last chunk is stored, and marks the recording waiting for upload. */
  stop(): Promise<void>
}

export const start = async (userId: string): Promise<Recorder> => {
  const mimeType = supportedType()
  if (mimeType === undefined) throw new Error("this browser cannot record audio (no MediaRecorder); pick a file instead")
  // a note, not a call: no echo cancelling, noise gating or gain pumping between the voice and the transcriber
  const stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } })
  const recorder = new MediaRecorder(stream, { mimeType })
  const id = crypto.randomUUID()
  const createdAt = Date.now()
  const stamp = new Date(createdAt).toISOString().slice(0, 19).replace(/:/g, "-")
  await Outbox.create({
    id,
    idempotencyKey: crypto.randomUUID(),
    userId,
    name: `recording-${stamp}.${extensionOf(recorder.mimeType || mimeType)}`,
    mimeType: recorder.mimeType || mimeType,
    createdAt,
    state: "recording"
  })
  recordingNow.add(id)

  // chunks are stored in order; `stop` waits for the last write
  let seq = 0
  let writes: Promise<void> = Promise.resolve()
  let writeError: Error | undefined
  recorder.ondataavailable = (e) => {
    if (e.data.size === 0) return
    const n = seq++
    writes = writes.then(() => Outbox.appendChunk(id, n, e.data)).then(
      () => undefined,
      (err) => {
        // the device is out of space (or storage was cleared): say so when the recording stops
        writeError ??= err instanceof Error ? err : new Error(String(err))
      }
    )
  }

  const audio = new AudioContext()
  const analyser = audio.createAnalyser()
  analyser.fftSize = 1024
  audio.createMediaStreamSource(stream).connect(analyser)
  const samples = new Float32Array(analyser.fftSize)

  let runningSince = Date.now()
  let before = 0
  let paused = false
  recorder.start(timesliceMs)

  return {
    id,
    level: () => {
      analyser.getFloatTimeDomainData(samples)
      let sum = 0
      for (const s of samples) sum += s * s
      return Math.min(1, Math.sqrt(sum / samples.length) * 4)
    },
    elapsed: () => before + (paused ? 0 : Date.now() - runningSince),
    paused: () => paused,
    pause: () => {
      if (paused) return
      recorder.pause()
      before += Date.now() - runningSince
      paused = true
    },
    resume: () => {
      if (!paused) return
      recorder.resume()
      runningSince = Date.now()
      paused = false
    },
    stop: async () => {
      const stopped = new Promise<void>((resolve) => (recorder.onstop = () => resolve()))
      recorder.stop()
      await stopped
      for (const track of stream.getTracks()) track.stop()
      void audio.close()
      await writes
      await Outbox.update(id, { state: "waiting" })
      recordingNow.delete(id)
      if (writeError !== undefined) throw new Error(`part of the recording could not be saved on this device: ${writeError.message}`)
    }
  }
}
