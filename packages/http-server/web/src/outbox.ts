/**
 * Nothing lost: every recording lives in IndexedDB from its first second
 * until the server has answered `201` (or `200`, the same entry again) for
 * it. A recording is a row plus its chunks, written as `MediaRecorder`
 * hands them over, so a closed tab or a crash keeps what was said. Each
 * recording carries its own `Idempotency-Key`, made once when it is created:
 * a retry after a lost answer finds the first entry instead of making a
 * second one.
 */

export interface Recording {
  readonly id: string
  /** Sent as `Idempotency-Key` on every attempt. */
  readonly idempotencyKey: string
  /** Whose it is: only the signed-in user's recordings are uploaded. */
  readonly userId: string
  readonly name: string
  readonly mimeType: string
  readonly createdAt: number
  /** `recording` while chunks still arrive (or until the tab that recorded it is gone). */
  readonly state: "recording" | "waiting"
  /** The last failure, shown to the user (kept until an attempt succeeds). */
  readonly lastError?: string
  /** Set when the server refused it for good (4xx other than 401/408/429): not retried. */
  readonly refused?: boolean
}

interface Chunk {
  readonly recordingId: string
  readonly seq: number
  readonly data: Blob
}

const dbName = "voice-journal"

let opened: Promise<IDBDatabase> | undefined
const db = (): Promise<IDBDatabase> =>
  (opened ??= new Promise((resolve, reject) => {
    const open = indexedDB.open(dbName, 1)
    open.onupgradeneeded = () => {
      const d = open.result
      d.createObjectStore("recordings", { keyPath: "id" })
      d.createObjectStore("chunks", { keyPath: ["recordingId", "seq"] })
    }
    open.onsuccess = () => resolve(open.result)
    open.onerror = () => reject(open.error)
  }))

/** Runs `work` in one transaction and resolves when it has committed (not merely when the request succeeded). */
const transact = async <A>(stores: Array<string>, mode: IDBTransactionMode, work: (t: IDBTransaction) => IDBRequest<A> | void): Promise<A> => {
  const d = await db()
  return new Promise<A>((resolve, reject) => {
    const t = d.transaction(stores, mode)
    const r = work(t)
    t.oncomplete = () => resolve(r === undefined ? (undefined as A) : r.result)
    t.onerror = () => reject(t.error)
    t.onabort = () => reject(t.error ?? new Error("IndexedDB transaction aborted"))
  })
}

export const create = (recording: Recording) => transact(["recordings"], "readwrite", (t) => void t.objectStore("recordings").put(recording))

export const update = async (id: string, change: Partial<Recording>) => {
  await transact(["recordings"], "readwrite", (t) => {
    const store = t.objectStore("recordings")
    const get = store.get(id)
    get.onsuccess = () => {
      if (get.result !== undefined) store.put({ ...get.result, ...change })
    }
  })
}

export const appendChunk = (recordingId: string, seq: number, data: Blob) =>
  transact(["chunks"], "readwrite", (t) => void t.objectStore("chunks").put({ recordingId, seq, data } satisfies Chunk))

export const all = (): Promise<Array<Recording>> =>
  transact(["recordings"], "readonly", (t) => t.objectStore("recordings").getAll() as IDBRequest<Array<Recording>>)
    .then((rs) => rs.sort((a, b) => a.createdAt - b.createdAt))

const range = (id: string) => IDBKeyRange.bound([id, 0], [id, Number.MAX_SAFE_INTEGER])

/** The recording's bytes, its chunks in order. */
export const blobOf = async (recording: Recording): Promise<Blob> => {
  const chunks = await transact(["chunks"], "readonly", (t) => t.objectStore("chunks").getAll(range(recording.id)) as IDBRequest<Array<Chunk>>)
  return new Blob(chunks.sort((a, b) => a.seq - b.seq).map((c) => c.data), { type: recording.mimeType })
}

/** Removes a recording and its chunks in one transaction (after the server has it, or when the user discards it). */
export const remove = (id: string) =>
  transact(["recordings", "chunks"], "readwrite", (t) => {
    t.objectStore("recordings").delete(id)
    t.objectStore("chunks").delete(range(id))
  })

/** Stores a picked or dropped file as a waiting recording (one chunk). */
export const addFile = async (userId: string, file: File) => {
  const recording: Recording = {
    id: crypto.randomUUID(),
    idempotencyKey: crypto.randomUUID(),
    userId,
    name: file.name,
    mimeType: file.type || "application/octet-stream",
    createdAt: Date.now(),
    state: "recording"
  }
  await create(recording)
  await appendChunk(recording.id, 0, file)
  await update(recording.id, { state: "waiting" })
}
