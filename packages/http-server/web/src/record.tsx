/** The record page: the record button, files, what waits to upload, and the entries. */
import { useEffect, useRef, useState } from "preact/hooks"
import { api, ApiError, type EntrySummary, type Page, type User } from "./api.js"
import * as Format from "./format.js"
import * as Live from "./live.js"
import * as Outbox from "./outbox.js"
import * as Recorder from "./recorder.js"
import { follow } from "./route.js"
import type { Uploader, UploadState } from "./uploader.js"

const RecordPanel = (props: { readonly user: User; readonly uploader: Uploader }) => {
  const [recorder, setRecorder] = useState<Recorder.Recorder | undefined>(undefined)
  const [, setFrame] = useState(0)
  const [error, setError] = useState<string | undefined>(undefined)
  const [stopping, setStopping] = useState(false)

  // redraw the timer and the meter while recording
  useEffect(() => {
    if (recorder === undefined) return
    const timer = setInterval(() => setFrame((n) => n + 1), 100)
    return () => clearInterval(timer)
  }, [recorder])

  const start = async () => {
    setError(undefined)
    try {
      setRecorder(await Recorder.start(props.user.id))
      // the outbox now holds this recording too (it uploads once stopped)
      props.uploader.kick()
    } catch (err) {
      setError(err instanceof Error ? `Cannot record: ${err.message}` : "Cannot record")
    }
  }
  const stop = async () => {
    if (recorder === undefined) return
    setStopping(true)
    try {
      await recorder.stop()
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err))
    } finally {
      setStopping(false)
      setRecorder(undefined)
      props.uploader.kick()
    }
  }

  if (recorder === undefined) {
    return (
      <section class="card record" aria-labelledby="record-heading">
        <h2 id="record-heading">New note</h2>
        <button type="button" class="record-button" onClick={start} aria-label="Start recording">
          <span aria-hidden="true" class="dot" /> Record
        </button>
        {error !== undefined && <p role="alert" class="error">{error}</p>}
      </section>
    )
  }
  const paused = recorder.paused()
  return (
    <section class="card record" aria-labelledby="record-heading">
      <h2 id="record-heading">{paused ? "Paused" : "Recording…"}</h2>
      <p class="elapsed" role="timer" aria-label="Elapsed time">{Format.clock(recorder.elapsed())}</p>
      <label for="level" class="sr-only">Input level</label>
      <meter id="level" class="level" min={0} max={1} value={paused ? 0 : recorder.level()} />
      <div class="row">
        <button type="button" onClick={() => (paused ? recorder.resume() : recorder.pause(), setFrame((n) => n + 1))}>
          {paused ? "Resume" : "Pause"}
        </button>
        <button type="button" class="primary stop" onClick={stop} disabled={stopping}>Stop and upload</button>
      </div>
    </section>
  )
}

const OutboxPanel = (props: { readonly uploader: Uploader }) => {
  const [state, setState] = useState<UploadState | undefined>(undefined)
  useEffect(() => props.uploader.subscribe(setState), [props.uploader])
  if (state === undefined) return null
  const n = state.waiting.length
  const current = state.current === undefined ? undefined : state.waiting.find((r) => r.id === state.current!.id)
  const refused = state.waiting.filter((r) => r.refused === true)
  return (
    <section class="card outbox" aria-labelledby="outbox-heading">
      <h2 id="outbox-heading" class="sr-only">Uploads</h2>
      <p role="status" data-testid="waiting">
        {n === 0 ? "Every recording is uploaded." : `${n} recording${n === 1 ? "" : "s"} waiting to upload`}
      </p>
      {state.current !== undefined && (
        <div>
          <label for="upload-progress">Uploading {current?.name ?? "recording"}</label>
          <progress id="upload-progress" max={state.current.total || 1} value={state.current.loaded} />
        </div>
      )}
      {state.signedOut && <p role="alert" class="error">Your session ended: sign out and in again; the recordings stay here until then.</p>}
      {state.current === undefined && state.retryAt !== undefined && n > refused.length && (
        <p class="note">
          Not uploaded yet ({state.waiting.find((r) => r.lastError !== undefined && r.refused !== true)?.lastError ?? "waiting"}). Trying again
          automatically; <button type="button" class="link" onClick={() => props.uploader.kick()}>retry now</button>
        </p>
      )}
      {refused.map((r) => (
        <p key={r.id} class="error" role="alert">
          The server refused {r.name}: {r.lastError}{" "}
          <button type="button" onClick={async () => (await Outbox.remove(r.id), props.uploader.kick())}>Discard {r.name}</button>
        </p>
      ))}
    </section>
  )
}

const FilePicker = (props: { readonly user: User; readonly uploader: Uploader }) => {
  const [over, setOver] = useState(false)
  const add = async (files: FileList | null) => {
    if (files === null) return
    for (const file of Array.from(files)) await Outbox.addFile(props.user.id, file)
    props.uploader.kick()
  }
  return (
    <section
      class={`card drop ${over ? "over" : ""}`}
      aria-labelledby="files-heading"
      data-testid="drop-zone"
      onDragOver={(e) => (e.preventDefault(), setOver(true))}
      onDragLeave={() => setOver(false)}
      onDrop={(e) => {
        e.preventDefault()
        setOver(false)
        void add(e.dataTransfer?.files ?? null)
      }}
    >
      <h2 id="files-heading">Existing recordings</h2>
      <p>Drop audio files here, or</p>
      <label class="button" for="files">Choose files</label>
      <input id="files" class="sr-only" type="file" accept="audio/*,.m4a,.mp3,.wav,.ogg,.opus,.webm,.flac,.aac" multiple
        onChange={(e) => {
          const input = e.target as HTMLInputElement
          void add(input.files).then(() => (input.value = ""))
        }} />
    </section>
  )
}

const pageSize = 20

const StageBadge = (props: { readonly name: string; readonly status: string | null }) => (
  <span class={`badge ${props.status ?? "none"}`}>{props.name}: {Format.stageLabel(props.status)}</span>
)

export const EntriesList = (props: { readonly uploaded: number }) => {
  const [offset, setOffset] = useState(0)
  const [page, setPage] = useState<Page<EntrySummary> | undefined>(undefined)
  const [error, setError] = useState<string | undefined>(undefined)
  const [changes, setChanges] = useState(0)
  const latest = useRef(0)

  useEffect(() => Live.subscribe(() => setChanges((n) => n + 1)), [])
  useEffect(() => {
    const ask = ++latest.current
    api.entries(pageSize, offset).then(
      (p) => ask === latest.current && (setPage(p), setError(undefined)),
      (err) => ask === latest.current && setError(err instanceof ApiError ? err.message : "The entries cannot be loaded while offline.")
    )
  }, [offset, props.uploaded, changes])

  return (
    <section class="card" aria-labelledby="entries-heading">
      <h2 id="entries-heading">Entries {page !== undefined && <span class="count">({page.total})</span>}</h2>
      {error !== undefined && <p class="note">{error}</p>}
      {page !== undefined && page.items.length === 0 && <p>No entries yet: record one.</p>}
      <ol class="entries">
        {page?.items.map((e) => (
          <li key={e.id} data-entry-id={e.id}>
            <a href={`/app/entries/${e.id}`} onClick={follow(`/app/entries/${e.id}`)}>
              <span class="title">{e.title ?? e.originalFilename ?? "Untitled recording"}</span>
            </a>
            <span class="meta">
              <time dateTime={e.createdAt}>{Format.date(e.createdAt)}</time> · {Format.duration(e.durationSeconds)}
            </span>
            <span class="stages">
              <StageBadge name="Transcript" status={e.transcriptionStatus} />
              <StageBadge name="Cleanup" status={e.cleanupStatus} />
              <StageBadge name="Notion" status={e.notionSyncStatus} />
            </span>
          </li>
        ))}
      </ol>
      {page !== undefined && page.total > pageSize && (
        <nav class="row" aria-label="Pages">
          <button type="button" disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - pageSize))}>Newer</button>
          <span>{offset + 1}–{Math.min(page.total, offset + pageSize)} of {page.total}</span>
          <button type="button" disabled={offset + pageSize >= page.total} onClick={() => setOffset(offset + pageSize)}>Older</button>
        </nav>
      )}
    </section>
  )
}

export const RecordPage = (props: { readonly user: User; readonly uploader: Uploader; readonly uploaded: number }) => (
  <main>
    <RecordPanel user={props.user} uploader={props.uploader} />
    <OutboxPanel uploader={props.uploader} />
    <FilePicker user={props.user} uploader={props.uploader} />
    <EntriesList uploaded={props.uploaded} />
  </main>
)
