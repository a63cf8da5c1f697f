/**
 * The server's HTTP API as the app uses it: same-origin requests carrying
 * the session cookie (never a key in storage). Errors arrive in the API's
 * `{ error, message }` envelope and are thrown as {@link ApiError}.
 */

export interface User {
  readonly id: string
  readonly name: string
}

export type StageStatus = "pending" | "processing" | "done" | "failed" | "retrying" | "success" | string

interface Stage {
  readonly id: string
  readonly status: StageStatus
  readonly attempts: number
  readonly lastError: string | null
  readonly createdAt: string
  readonly updatedAt: string
}

export interface Transcription extends Stage {
  readonly isPrimary: boolean
  readonly engine: string | null
  readonly text: string | null
  readonly durationSeconds: number | null
}

export interface Cleanup extends Stage {
  readonly transcriptionId: string
  readonly isPrimary: boolean
  readonly model: string | null
  readonly title: string | null
  readonly text: string | null
}

export interface NotionSync extends Stage {
  readonly notionPageId: string | null
}

export interface EntrySummary {
  readonly id: string
  readonly originalFilename: string | null
  readonly createdAt: string
  readonly transcriptionStatus: StageStatus | null
  readonly cleanupStatus: StageStatus | null
  readonly notionSyncStatus: StageStatus | null
  readonly title: string | null
  readonly durationSeconds: number | null
}

export interface Entry {
  readonly id: string
  readonly originalFilename: string | null
  readonly mimeType: string
  readonly createdAt: string
  readonly transcription: Transcription | null
  readonly cleanup: Cleanup | null
  readonly notionSync: NotionSync | null
}

export interface Page<A> {
  readonly items: ReadonlyArray<A>
  readonly total: number
  readonly limit: number
  readonly offset: number
}

/** A non-2xx answer: its status and the envelope's code and message. */
export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message)
  }
}

/** Reads the `{ error, message }` envelope (or says what came instead). */
export const errorOf = (status: number, text: string): ApiError => {
  try {
    const body = JSON.parse(text) as { error?: string; message?: string }
    if (typeof body.message === "string") return new ApiError(status, body.error ?? "error", body.message)
  } catch {
    // not the envelope (a proxy's page, an empty body): say the status
  }
  return new ApiError(status, "error", `the server answered ${status}`)
}

const request = async <A>(method: string, path: string, body?: unknown): Promise<A> => {
  const response = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: body === undefined ? {} : { "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) })
  })
  const text = await response.text()
  if (!response.ok) throw errorOf(response.status, text)
  return (text === "" ? undefined : JSON.parse(text)) as A
}

/** Re-runs replace what the entry shows (`makePrimary`); "make primary" on an older run brings it back. */
export const api = {
  session: () => request<{ user: User }>("GET", "/session"),
  signIn: (apiKey: string) => request<{ user: User }>("POST", "/session", { apiKey }),
  signOut: () => request<void>("DELETE", "/session"),
  entries: (limit: number, offset: number) => request<Page<EntrySummary>>("GET", `/entries?limit=${limit}&offset=${offset}`),
  entry: (id: string) => request<Entry>("GET", `/entries/${encodeURIComponent(id)}`),
  transcriptions: (id: string) => request<ReadonlyArray<Transcription>>("GET", `/entries/${encodeURIComponent(id)}/transcriptions`),
  cleanups: (id: string) => request<ReadonlyArray<Cleanup>>("GET", `/entries/${encodeURIComponent(id)}/cleanups`),
  retranscribe: (id: string) => request<Transcription>("POST", `/entries/${encodeURIComponent(id)}/transcriptions`, { makePrimary: true }),
  reclean: (id: string) => request<Cleanup>("POST", `/entries/${encodeURIComponent(id)}/cleanups`, { makePrimary: true }),
  primaryTranscription: (id: string, tid: string) =>
    request<Transcription>("POST", `/entries/${encodeURIComponent(id)}/transcriptions/${encodeURIComponent(tid)}/primary`),
  primaryCleanup: (id: string, cid: string) =>
    request<Cleanup>("POST", `/entries/${encodeURIComponent(id)}/cleanups/${encodeURIComponent(cid)}/primary`),
  syncNotion: (id: string) => request<NotionSync>("POST", `/entries/${encodeURIComponent(id)}/notion-sync`),
  remove: (id: string) => request<void>("DELETE", `/entries/${encodeURIComponent(id)}`)
}

/** The recording, streamed with Range support (so the player seeks). */
export const audioUrl = (id: string) => `/entries/${encodeURIComponent(id)}/audio`
