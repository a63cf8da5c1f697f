/** One entry: the recording, its texts, the other runs, what went wrong and what to do, delete. */
import { useEffect, useRef, useState } from "preact/hooks"
import { api, ApiError, audioUrl, type Cleanup, type Entry, type Transcription } from "./api.js"
import * as Format from "./format.js"
import * as Live from "./live.js"
import { follow, navigate } from "./route.js"

interface Loaded {
  readonly entry: Entry
  readonly transcriptions: ReadonlyArray<Transcription>
  readonly cleanups: ReadonlyArray<Cleanup>
}

type View = { readonly kind: "loading" } | { readonly kind: "missing" } | { readonly kind: "error"; readonly message: string } | { readonly kind: "ok"; readonly data: Loaded }

const load = async (id: string): Promise<Loaded> => {
  const [entry, transcriptions, cleanups] = await Promise.all([api.entry(id), api.transcriptions(id), api.cleanups(id)])
  return { entry, transcriptions, cleanups }
}

/** Notion page ids are UUIDs; notion.so opens a page by its id without dashes. */
const notionUrl = (pageId: string) => `https://www.notion.so/${pageId.replace(/-/g, "")}`

const what: Record<string, string> = { transcription: "Transcription", cleanup: "Cleanup", notion: "Notion sync" }

/** A failed or retrying stage: the stored reason (the engines' messages say what to fix) and what the buttons do. */
const StageProblem = (props: { readonly stage: string; readonly status: string; readonly lastError: string | null }) => {
  if (props.status !== "failed" && props.status !== "retrying") return null
  return (
    <div class="problem" role="alert">
      <strong>{what[props.stage]} {props.status === "failed" ? "failed" : "will be retried"}:</strong>{" "}
      <span class="reason">{props.lastError ?? "no reason was recorded"}</span>
      <p class="hint">
        {props.status === "failed"
          ? `Fix what the message says, then press “Re-run ${props.stage === "notion" ? "Notion sync" : props.stage}”.`
          : "Nothing to do unless it keeps failing: the server tries again by itself."}
      </p>
    </div>
  )
}

export const EntryPage = (props: { readonly id: string }) => {
  const [view, setView] = useState<View>({ kind: "loading" })
  const [busy, setBusy] = useState<string | undefined>(undefined)
  const [notice, setNotice] = useState<string | undefined>(undefined)
  const [confirming, setConfirming] = useState(false)
  const latest = useRef(0)

  const refresh = () => {
    const ask = ++latest.current
    load(props.id).then(
      (data) => ask === latest.current && setView({ kind: "ok", data }),
      (err) => {
        if (ask !== latest.current) return
        if (err instanceof ApiError && err.status === 404) setView({ kind: "missing" })
        else setView({ kind: "error", message: err instanceof Error ? err.message : String(err) })
      }
    )
  }
  useEffect(() => {
    setView({ kind: "loading" })
    refresh()
    return Live.subscribe((e) => e.entryId === props.id && refresh())
  }, [props.id])

  const act = (label: string, action: () => Promise<unknown>, after?: () => void) => async () => {
    setBusy(label)
    setNotice(undefined)
    try {
      await action()
      if (after !== undefined) after()
      else refresh()
    } catch (err) {
      setNotice(err instanceof Error ? `${label} failed: ${err.message}` : `${label} failed`)
    } finally {
      setBusy(undefined)
    }
  }

  const back = <p><a href="/app" onClick={follow("/app")}>← All entries</a></p>
  if (view.kind === "loading") return <main>{back}<p aria-busy="true">Loading…</p></main>
  if (view.kind === "missing") {
    return <main>{back}<h1>Entry not found</h1><p>There is no such entry in your journal (it may have been deleted).</p></main>
  }
  if (view.kind === "error") return <main>{back}<p role="alert" class="error">The entry cannot be loaded: {view.message}</p></main>

  const { entry, transcriptions, cleanups } = view.data
  const t = entry.transcription
  const c = entry.cleanup
  const n = entry.notionSync
  const title = c?.title ?? entry.originalFilename ?? "Untitled recording"
  return (
    <main class="entry">
      {back}
      <h1>{title}</h1>
      <p class="meta"><time dateTime={entry.createdAt}>{Format.date(entry.createdAt)}</time> · {Format.duration(t?.durationSeconds ?? null)}</p>
      <audio controls preload="metadata" src={audioUrl(entry.id)} aria-label="Recording" />

      {t !== null && <StageProblem stage="transcription" status={t.status} lastError={t.lastError} />}
      {c !== null && <StageProblem stage="cleanup" status={c.status} lastError={c.lastError} />}
      {n !== null && <StageProblem stage="notion" status={n.status} lastError={n.lastError} />}
      {notice !== undefined && <p role="alert" class="error">{notice}</p>}

      <section aria-labelledby="cleaned-heading">
        <h2 id="cleaned-heading">Journal text <span class={`badge ${c?.status ?? "none"}`}>{Format.stageLabel(c?.status ?? null)}</span></h2>
        <div class="text" data-testid="cleaned-text">{c?.text ?? <em>Not cleaned yet.</em>}</div>
      </section>
      <section aria-labelledby="transcript-heading">
        <h2 id="transcript-heading">Transcript <span class={`badge ${t?.status ?? "none"}`}>{Format.stageLabel(t?.status ?? null)}</span></h2>
        <div class="text" data-testid="transcript">{t?.text ?? <em>Not transcribed yet.</em>}</div>
      </section>

      <section aria-labelledby="actions-heading" class="actions">
        <h2 id="actions-heading" class="sr-only">Actions</h2>
        <button type="button" disabled={busy !== undefined} onClick={act("Re-run transcription", () => api.retranscribe(entry.id))}>Re-run transcription</button>
        <button type="button" disabled={busy !== undefined || t?.status !== "completed"} onClick={act("Re-run cleanup", () => api.reclean(entry.id))}>Re-run cleanup</button>
        <button type="button" disabled={busy !== undefined || c?.status !== "completed"} onClick={act("Re-run Notion sync", () => api.syncNotion(entry.id))}>Re-run Notion sync</button>
        {n?.notionPageId != null && <a class="button" href={notionUrl(n.notionPageId)} target="_blank" rel="noopener noreferrer">Open in Notion</a>}
      </section>

      <section aria-labelledby="runs-heading">
        <h2 id="runs-heading">Transcriptions ({transcriptions.length})</h2>
        <ol class="runs" data-testid="transcriptions">
          {transcriptions.map((run) => (
            <li key={run.id} data-run-id={run.id} class={run.isPrimary ? "primary-run" : ""}>
              <span class="meta">{Format.date(run.createdAt)} · {run.engine ?? "engine"} · {Format.stageLabel(run.status)}{run.isPrimary ? " · primary" : ""}</span>
              <div class="text">{run.text ?? run.lastError ?? ""}</div>
              {!run.isPrimary && run.status === "completed" && (
                <button type="button" disabled={busy !== undefined}
                  onClick={act("Make primary", () => api.primaryTranscription(entry.id, run.id))}>Make this transcription primary</button>
              )}
            </li>
          ))}
        </ol>
        <h2>Cleanups ({cleanups.length})</h2>
        <ol class="runs" data-testid="cleanups">
          {cleanups.map((run) => (
            <li key={run.id} data-run-id={run.id} class={run.isPrimary ? "primary-run" : ""}>
              <span class="meta">{Format.date(run.createdAt)} · {run.model ?? "model"} · {Format.stageLabel(run.status)}{run.isPrimary ? " · primary" : ""}</span>
              <div class="text">{run.text ?? run.lastError ?? ""}</div>
              {!run.isPrimary && run.status === "completed" && (
                <button type="button" disabled={busy !== undefined}
                  onClick={act("Make primary", () => api.primaryCleanup(entry.id, run.id))}>Make this cleanup primary</button>
              )}
            </li>
          ))}
        </ol>
      </section>

      <section aria-labelledby="delete-heading" class="danger">
        <h2 id="delete-heading" class="sr-only">Delete</h2>
        {confirming
          ? (
            <div role="alertdialog" aria-labelledby="confirm-text">
              <p id="confirm-text">Delete “{title}” with its recording and texts? This cannot be undone.</p>
              <div class="row">
                <button type="button" class="destructive" disabled={busy !== undefined}
                  onClick={act("Delete", () => api.remove(entry.id), () => navigate("/app"))}>Yes, delete it</button>
                <button type="button" onClick={() => setConfirming(false)}>Cancel</button>
              </div>
            </div>
          )
          : <button type="button" class="destructive" onClick={() => setConfirming(true)}>Delete entry</button>}
      </section>
    </main>
  )
}
