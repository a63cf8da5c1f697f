/**
 * Test support for the web app's server side: users and keys on either
 * database, signing in (the session cookie as a browser would send it), and
 * a Server-Sent Events reader on `fetch`.
 */
import { PgJournalStore } from "@voice-journal/adapter-postgres"
import { SqliteJournalStore } from "@voice-journal/adapter-sqlite"
import { BlobStore, type Domain, VoiceJournal, WorkSignal } from "@voice-journal/core"
import { Effect, Layer, Redacted } from "effect"
import type { ServerConfig } from "../../src/Config.js"

const journalOn = (database: ServerConfig["database"], audioDir: string) =>
  VoiceJournal.layer().pipe(Layer.provide(Layer.mergeAll(
    database.kind === "sqlite"
      ? SqliteJournalStore.layer({ filename: database.filename })
      : PgJournalStore.layer({ url: database.url, maxConnections: 2 }),
    BlobStore.layerFileSystem({ directory: audioDir }),
    WorkSignal.layer
  )))

/** A new user with a key, through the library's own code path, on the server's database. */
export const userKey = (database: ServerConfig["database"], audioDir: string, name: string) =>
  Effect.scoped(Effect.flatMap(VoiceJournal.VoiceJournal, (j) => j.createUser(name)).pipe(
    Effect.map((c) => ({ apiKey: Redacted.value(c.apiKey), keyId: c.key.id, userId: c.user.id })),
    Effect.provide(journalOn(database, audioDir))
  )).pipe(Effect.orDie)

/** Revokes a key, as `voice-journal keys revoke` does. */
export const revokeKey = (database: ServerConfig["database"], audioDir: string, userId: Domain.UserId, keyId: Domain.ApiKeyId) =>
  Effect.scoped(Effect.flatMap(VoiceJournal.VoiceJournal, (j) => j.revokeApiKey(userId, keyId)).pipe(
    Effect.provide(journalOn(database, audioDir))
  )).pipe(Effect.orDie)

export interface SignedIn {
  readonly status: number
  readonly body: any
  /** The raw `Set-Cookie` header. */
  readonly setCookie: string | null
  /** `vj_session=<id>`, as a browser sends it back in `Cookie`. */
  readonly cookie: string
  /** The session id alone. */
  readonly sessionId: string
}

/** `POST /session` with `apiKey` (and `origin`, when given). */
export const signIn = (url: string, apiKey: string, origin?: string, init: { readonly fetchImpl?: typeof fetch } = {}) =>
  Effect.promise(async (): Promise<SignedIn> => {
    const response = await (init.fetchImpl ?? fetch)(`${url}/session`, {
      method: "POST",
      headers: { "content-type": "application/json", ...(origin !== undefined ? { origin } : {}) },
      body: JSON.stringify({ apiKey })
    })
    const setCookie = response.headers.get("set-cookie")
    const cookie = setCookie?.split(";")[0] ?? ""
    const text = await response.text()
    let body: any = text
    try {
      body = JSON.parse(text)
    } catch {
      // not JSON
    }
    return { status: response.status, body, setCookie, cookie, sessionId: cookie.split("=")[1] ?? "" }
  })

/** One parsed Server-Sent Event (comments are collected apart). */
export interface SseEvent {
  readonly id: string | undefined
  readonly event: string
  readonly data: any
}

export interface EventReader {
  readonly status: number
  readonly contentType: string | null
  readonly events: ReadonlyArray<SseEvent>
  readonly comments: ReadonlyArray<string>
  /** Resolves with the first event (seen or to come) that `match` accepts. */
  readonly waitFor: (match: (e: SseEvent) => boolean, timeoutMs?: number) => Promise<SseEvent>
  readonly waitForComment: (match: (c: string) => boolean, timeoutMs?: number) => Promise<string>
  /** Resolves when the server ends the stream. */
  readonly ended: Promise<void>
  readonly close: () => void
}

/** Opens `GET /events` with these headers and parses the stream as it arrives. */
export const openEvents = (url: string, headers: Record<string, string>): Promise<EventReader> => {
  const controller = new AbortController()
  return fetch(`${url}/events`, { headers, signal: controller.signal }).then((response) => {
    const events: Array<SseEvent> = []
    const comments: Array<string> = []
    const waiters: Array<() => void> = []
    const changed = () => waiters.splice(0).forEach((w) => w())
    const ended = (async () => {
      if (response.body === null) return
      const decoder = new TextDecoder()
      let buffer = ""
      try {
        for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
          buffer += decoder.decode(chunk, { stream: true })
          let end: number
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end)
            buffer = buffer.slice(end + 2)
            const fields: Record<string, string> = {}
            for (const line of block.split("\n")) {
              if (line.startsWith(":")) comments.push(line.slice(1).trim())
              else {
                const colon = line.indexOf(":")
                if (colon > 0) fields[line.slice(0, colon)] = line.slice(colon + 1).trimStart()
              }
            }
            if (fields.data !== undefined) events.push({ id: fields.id, event: fields.event ?? "message", data: JSON.parse(fields.data) })
            changed()
          }
        }
      } catch {
        // aborted by close()
      }
    })()
    const poll = <A>(find: () => A | undefined, timeoutMs: number, what: string) =>
      new Promise<A>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${what} within ${timeoutMs} ms; events so far: ${JSON.stringify(events)}`)), timeoutMs)
        const check = () => {
          const found = find()
          if (found !== undefined) {
            clearTimeout(timer)
            resolve(found)
          } else waiters.push(check)
        }
        check()
      })
    return {
      status: response.status,
      contentType: response.headers.get("content-type"),
      events,
      comments,
      waitFor: (match, timeoutMs = 60_000) => poll(() => events.find(match), timeoutMs, "matching event"),
      waitForComment: (match, timeoutMs = 60_000) => poll(() => comments.find(match), timeoutMs, "matching comment"),
      ended,
      close: () => controller.abort()
    }
  })
}
