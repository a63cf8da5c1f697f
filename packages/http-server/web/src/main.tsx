/**
 * The voice-journal web app: sign in once, record (or pick files), watch
 * entries become journal text live, fix an entry. Routes: `/app` (record and
 * the list) and `/app/entries/<id>` (one entry).
 */
import { render } from "preact"
import { useEffect, useMemo, useState } from "preact/hooks"
import { api, ApiError, type User } from "./api.js"
import { EntryPage } from "./entry.js"
import * as Live from "./live.js"
import { RecordPage } from "./record.js"
import { navigate, usePath } from "./route.js"
import { Uploader } from "./uploader.js"
import "./app.css"

/** The last signed-in user's id and name (never a key): lets the record page work offline. */
const lastUserKey = "vj.lastUser"

type Session =
  | { readonly phase: "loading" }
  | { readonly phase: "signed-out"; readonly note?: string }
  | { readonly phase: "signed-in"; readonly user: User; readonly offline: boolean }

const SignIn = (props: { readonly note?: string | undefined; readonly onSignedIn: (u: User) => void }) => {
  const [key, setKey] = useState("")
  const [error, setError] = useState<string | undefined>(undefined)
  const [busy, setBusy] = useState(false)
  const submit = async (e: Event) => {
    e.preventDefault()
    setBusy(true)
    setError(undefined)
    try {
      const { user } = await api.signIn(key.trim())
      setKey("")
      props.onSignedIn(user)
    } catch (err) {
      setError(err instanceof ApiError ? err.message : "The server cannot be reached; check the connection and try again.")
    } finally {
      setBusy(false)
    }
  }
  return (
    <main class="narrow">
      <h1>Voice journal</h1>
      <form onSubmit={submit} class="card">
        <p>Sign in with your API key once; this browser then keeps a session (the key itself is not stored).</p>
        {props.note !== undefined && <p class="note">{props.note}</p>}
        <label for="api-key">API key</label>
        <input id="api-key" name="apiKey" type="password" autoComplete="current-password" required value={key}
          onInput={(e) => setKey((e.target as HTMLInputElement).value)} placeholder="vj_…" />
        {error !== undefined && <p role="alert" class="error">{error}</p>}
        <button type="submit" class="primary" disabled={busy}>Sign in</button>
      </form>
    </main>
  )
}

const App = () => {
  const [session, setSession] = useState<Session>({ phase: "loading" })
  const path = usePath()

  useEffect(() => {
    api.session().then(
      ({ user }) => signedIn(user),
      (err) => {
        if (err instanceof ApiError) return setSession({ phase: "signed-out" })
        // no network: the last user may still record; uploads wait in the outbox
        const last = localStorage.getItem(lastUserKey)
        if (last !== null) return setSession({ phase: "signed-in", user: JSON.parse(last) as User, offline: true })
        setSession({ phase: "signed-out", note: "The server cannot be reached; sign in once it can." })
      }
    )
  }, [])

  const signedIn = (user: User) => {
    localStorage.setItem(lastUserKey, JSON.stringify({ id: user.id, name: user.name }))
    setSession({ phase: "signed-in", user, offline: false })
  }

  const user = session.phase === "signed-in" ? session.user : undefined
  const [uploaded, setUploaded] = useState(0)
  const uploader = useMemo(() => (user === undefined ? undefined : new Uploader(user.id, () => setUploaded((n) => n + 1))), [user?.id])
  useEffect(() => {
    if (uploader === undefined) return
    uploader.kick()
    Live.connect()
    return () => {
      uploader.stop()
      Live.disconnect()
    }
  }, [uploader])

  const signOut = async () => {
    try {
      await api.signOut()
    } catch (err) {
      console.warn("sign-out failed; the session cookie stays until it expires", err)
    }
    localStorage.removeItem(lastUserKey)
    setSession({ phase: "signed-out" })
    navigate("/app")
  }

  if (session.phase === "loading") return <main class="narrow"><p aria-busy="true">Loading…</p></main>
  if (session.phase === "signed-out" || uploader === undefined) {
    return <SignIn note={session.phase === "signed-out" ? session.note : undefined} onSignedIn={signedIn} />
  }
  const entryId = /^\/app\/entries\/([^/]+)$/.exec(path)?.[1]
  return (
    <>
      <header class="bar">
        <a href="/app" class="brand" onClick={(e) => (e.preventDefault(), navigate("/app"))}>Voice journal</a>
        <span class="who">{session.user.name}</span>
        <button type="button" onClick={signOut}>Sign out</button>
      </header>
      {session.offline && <p class="note" role="status">Offline: recordings are kept on this device and upload when the server is back.</p>}
      {entryId !== undefined
        ? <EntryPage id={decodeURIComponent(entryId)} />
        : <RecordPage user={session.user} uploader={uploader} uploaded={uploaded} />}
    </>
  )
}

if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("/sw.js").catch((err) => console.warn("service worker not registered: the app will not open offline", err))
}

render(<App />, document.getElementById("app")!)
