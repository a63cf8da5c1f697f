/** How times, durations and stage states read on screen. */

export const clock = (ms: number) => {
  const s = Math.floor(ms / 1000)
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`
}

export const duration = (seconds: number | null) => (seconds === null ? "—" : clock(seconds * 1000))

export const date = (iso: string) =>
  new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" })

/** A stage's state in words; `null` means the stage has not started (or is not configured). */
export const stageLabel = (status: string | null) => {
  switch (status) {
    case null:
      return "—"
    case "completed":
    case "success":
      return "done"
    case "processing":
      return "working"
    default:
      return status
  }
}

export const bytes = (n: number) => (n < 1024 * 1024 ? `${Math.ceil(n / 1024)} KB` : `${(n / 1024 / 1024).toFixed(1)} MB`)
