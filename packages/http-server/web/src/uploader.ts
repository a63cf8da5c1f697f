/**
 * Uploads the outbox: the signed-in user's waiting recordings, oldest
 * first, one at a time, with upload progress. A recording leaves the outbox
 * only on `201`/`200`. Network failures, `408`, `429` and `5xx` are retried
 * with exponential backoff (1 s doubling to 60 s, or the server's
 * `Retry-After`), at once when the browser comes back online, and on the
 * next visit (the outbox is in IndexedDB). A recording the server refuses for
 * good (a `4xx` such as an unsupported file) stays, marked with the reason,
 * until the user discards it.
 */
import { type EntrySummary, errorOf } from "./api.js"
import * as Outbox from "./outbox.js"

export interface UploadState {
  /** Every recording of this user still in the outbox. */
  readonly waiting: ReadonlyArray<Outbox.Recording>
  /** The one on the wire, with its progress. */
  readonly current: { readonly id: string; readonly loaded: number; readonly total: number } | undefined
  /** When the next attempt is due after a failure (ms since epoch). */
  readonly retryAt: number | undefined
  /** The sign-in ran out (401): uploads wait for a new one. */
  readonly signedOut: boolean
}

/** Recordings this tab is still recording: not uploaded until they stop. */
export const recordingNow = new Set<string>()

const minDelayMs = 1_000
const maxDelayMs = 60_000

interface Answer {
  readonly status: number
  readonly text: string
  readonly retryAfter: string | null
}

const send = (recording: Outbox.Recording, blob: Blob, onProgress: (loaded: number, total: number) => void) =>
  new Promise<Answer>((resolve, reject) => {
    const xhr = new XMLHttpRequest()
    xhr.open("POST", "/entries")
    xhr.withCredentials = true
    xhr.setRequestHeader("Idempotency-Key", recording.idempotencyKey)
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : blob.size)
    xhr.onload = () => resolve({ status: xhr.status, text: xhr.responseText, retryAfter: xhr.getResponseHeader("retry-after") })
    xhr.onerror = () => reject(new Error("the upload was interrupted (offline or the server is unreachable)"))
    xhr.onabort = () => reject(new Error("the upload was aborted"))
    const form = new FormData()
    form.append("file", blob, recording.name)
    xhr.send(form)
  })

const retryable = (status: number) => status === 408 || status === 429 || status >= 500

export class Uploader {
  private state: UploadState = { waiting: [], current: undefined, retryAt: undefined, signedOut: false }
  private readonly listeners = new Set<(s: UploadState) => void>()
  private running = false
  private again = false
  private failures = 0
  private timer: ReturnType<typeof setTimeout> | undefined

  constructor(private readonly userId: string, private readonly onUploaded: (entry: EntrySummary) => void) {
    addEventListener("online", this.onOnline)
  }

  stop() {
    removeEventListener("online", this.onOnline)
    clearTimeout(this.timer)
    this.listeners.clear()
  }

  subscribe(listener: (s: UploadState) => void) {
    this.listeners.add(listener)
    listener(this.state)
    return () => void this.listeners.delete(listener)
  }

  private set(change: Partial<UploadState>) {
    this.state = { ...this.state, ...change }
    for (const l of this.listeners) l(this.state)
  }

  private readonly onOnline = () => {
    this.failures = 0
    this.kick()
  }

  /** Lists the outbox again and uploads what is waiting (a no-op while a pass runs, which then runs once more). */
  kick() {
    if (this.running) {
      this.again = true
      return
    }
    clearTimeout(this.timer)
    this.running = true
    void this.pass().finally(() => {
      this.running = false
      if (this.again) {
        this.again = false
        this.kick()
      }
    })
  }

  private async mine() {
    const waiting = (await Outbox.all()).filter((r) => r.userId === this.userId)
    this.set({ waiting })
    return waiting
  }

  private async pass() {
    const waiting = await this.mine()
    for (const recording of waiting) {
      if (recording.refused === true || recordingNow.has(recording.id)) continue
      const outcome = await this.attempt(recording)
      if (outcome === "retry") return this.scheduleRetry()
      if (outcome === "signed-out") return
    }
    this.set({ retryAt: undefined })
  }

  private retryAfterMs: number | undefined

  private scheduleRetry() {
    const backoff = Math.min(maxDelayMs, minDelayMs * 2 ** this.failures)
    const delay = Math.max(backoff, this.retryAfterMs ?? 0)
    this.failures++
    this.retryAfterMs = undefined
    this.set({ retryAt: Date.now() + delay })
    this.timer = setTimeout(() => this.kick(), delay)
  }

  private async attempt(recording: Outbox.Recording): Promise<"done" | "retry" | "refused" | "signed-out"> {
    const blob = await Outbox.blobOf(recording)
    this.set({ current: { id: recording.id, loaded: 0, total: blob.size } })
    try {
      const answer = await send(recording, blob, (loaded, total) => this.set({ current: { id: recording.id, loaded, total } }))
      if (answer.status === 200 || answer.status === 201) {
        await Outbox.remove(recording.id)
        this.failures = 0
        this.set({ current: undefined, signedOut: false })
        await this.mine()
        this.onUploaded(JSON.parse(answer.text) as EntrySummary)
        return "done"
      }
      const error = errorOf(answer.status, answer.text)
      await Outbox.update(recording.id, { lastError: error.message })
      if (answer.status === 401) {
        this.set({ current: undefined, signedOut: true })
        return "signed-out"
      }
      if (retryable(answer.status)) {
        const seconds = Number(answer.retryAfter)
        if (Number.isFinite(seconds) && seconds > 0) this.retryAfterMs = seconds * 1000
        this.set({ current: undefined })
        await this.mine()
        return "retry"
      }
      await Outbox.update(recording.id, { refused: true })
      this.set({ current: undefined })
      await this.mine()
      return "refused"
    } catch (e) {
      await Outbox.update(recording.id, { lastError: e instanceof Error ? e.message : String(e) })
      this.set({ current: undefined })
      await this.mine()
      return "retry"
    }
  }
}
