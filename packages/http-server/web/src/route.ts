/** Client-side routes: the path, and moving to another without a reload. */
import { useEffect, useState } from "preact/hooks"

export const navigate = (to: string) => {
  history.pushState(null, "", to)
  dispatchEvent(new PopStateEvent("popstate"))
}

export const usePath = () => {
  const [path, setPath] = useState(location.pathname)
  useEffect(() => {
    const changed = () => setPath(location.pathname)
    addEventListener("popstate", changed)
    return () => removeEventListener("popstate", changed)
  }, [])
  return path
}

/** A click on a link that should stay in the app (not a new tab, not a modified click). */
export const follow = (href: string) => (e: MouseEvent) => {
  if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return
  e.preventDefault()
  navigate(href)
}
