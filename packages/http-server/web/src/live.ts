/**
 * Live stage changes from `GET /events` (Server-Sent Events, the signed-in
 * user's only). `EventSource` reconnects by itself and sends `Last-Event-ID`,
 * so nothing is missed across a dropped connection; the views refetch what
 * an event touches.
 */
export interface StageEvent {
  readonly entryId: string
  readonly stage: string
  readonly status: string
}

type Listener = (e: StageEvent) => void
const listeners = new Set<Listener>()
let source: EventSource | undefined

export const connect = () => {
  if (source !== undefined) return
  source = new EventSource("/events", { withCredentials: true })
  source.addEventListener("stage", (message) => {
    let event: StageEvent
    try {
      event = JSON.parse((message as MessageEvent<string>).data) as StageEvent
    } catch {
      console.warn("ignored a stage event that is not JSON", message)
      return
    }
    for (const l of listeners) l(event)
  })
}

export const disconnect = () => {
  source?.close()
  source = undefined
}

export const subscribe = (listener: Listener) => {
  listeners.add(listener)
  return () => void listeners.delete(listener)
}
