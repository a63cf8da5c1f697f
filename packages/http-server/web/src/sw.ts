/**
 * The service worker: caches the app's shell (its page, hashed scripts and
 * styles, manifest, icon) so the record page opens with no network. Pages
 * are fetched from the network first (a new build shows at once) and fall
 * back to the cached shell; hashed assets come from the cache. API requests
 * are not touched: they go to the network as usual, and the page's outbox
 * retries uploads when the network returns.
 */
declare const __SHELL__: ReadonlyArray<string>
declare const __VERSION__: string

interface ExtendableEvent extends Event {
  waitUntil(p: Promise<unknown>): void
}
interface FetchEvent extends ExtendableEvent {
  readonly request: Request
  respondWith(r: Promise<Response> | Response): void
}
interface WorkerScope {
  addEventListener(type: "install" | "activate", f: (e: ExtendableEvent) => void): void
  addEventListener(type: "fetch", f: (e: FetchEvent) => void): void
  skipWaiting(): Promise<void>
  readonly clients: { claim(): Promise<void> }
  readonly location: Location
}

const worker = self as unknown as WorkerScope
const cacheName = `shell-${__VERSION__}`

worker.addEventListener("install", (event) => {
  event.waitUntil(caches.open(cacheName).then((cache) => cache.addAll([...__SHELL__])).then(() => worker.skipWaiting()))
})

worker.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((names) => Promise.all(names.filter((n) => n.startsWith("shell-") && n !== cacheName).map((n) => caches.delete(n))))
      .then(() => worker.clients.claim())
  )
})

const isPage = (url: URL) => url.pathname === "/" || url.pathname === "/app" || url.pathname.startsWith("/app/")

worker.addEventListener("fetch", (event) => {
  const request = event.request
  if (request.method !== "GET") return
  const url = new URL(request.url)
  if (url.origin !== worker.location.origin) return
  if (request.mode === "navigate" && isPage(url)) {
    event.respondWith(
      fetch(request).catch(async () => (await caches.match("/app", { cacheName })) ?? Response.error())
    )
    return
  }
  if (url.pathname.startsWith("/assets/") || url.pathname === "/manifest.webmanifest" || url.pathname === "/icon.svg") {
    event.respondWith(caches.match(request, { cacheName }).then((hit) => hit ?? fetch(request)))
  }
})
