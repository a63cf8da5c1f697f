/**
 * The web app in real headless Chromium (Debian's, driven by playwright-core)
 * against the real server on loopback: pocketsphinx transcribes what the fake
 * microphone (espeak-ng speech) said, FakeOllama cleans, FakeNotion files.
 * Tests wait for conditions, never for time.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import type { Page } from "playwright-core"
import * as path from "node:path"
import { audioBytes, audioFile, RECOGNISED_WORDS } from "../../core/test/support/Audio.js"
import { launch, open, record, screenshot, screenshotNow, signIn } from "./support/Browser.js"
import * as FakeOllama from "../../core/test/support/FakeOllama.js"
import * as FakeOpenAi from "../../core/test/support/FakeOpenAiTranscription.js"
import { call, cli, exitOf, freePort, multipart, type Running, serve, serverEnv, start, tempDir, waitFor } from "./support/TestServer.js"

const pocketsphinx = {
  transcription: { kind: "command", command: "pocketsphinx_continuous -infile {input} -logfn /dev/null", convert: "wav16k" }
} as const

const entries = (url: string, key: string) =>
  call(url, key, "/entries?limit=100").pipe(Effect.map((r) => r.body.items as Array<any>))

/** Waits until the API lists exactly `n` entries for the key (and then still `n` after the outbox is empty). */
const entryCount = (url: string, key: string, n: number) =>
  waitFor(async () => {
    const items = await Effect.runPromise(entries(url, key))
    return items.length === n ? items : undefined
  })

const waitingText = (page: Page) => page.getByTestId("waiting")

const allUploaded = (page: Page) => page.getByTestId("waiting").filter({ hasText: "Every recording is uploaded." }).waitFor({ timeout: 60_000 })

const completed = (s: Running, key: string, id: string) =>
  waitFor(async () => {
    const r = await Effect.runPromise(call(s.url, key, `/entries/${id}`))
    return r.body.transcription?.status === "completed" && r.body.cleanup?.status === "completed" ? r.body : undefined
  }, 120_000)

describe("the web app in Chromium", () => {
  it.scopedLive("sign in, record 4 s, upload: the entry appears at once and its stages turn done live, with the spoken words", () =>
    Effect.gen(function*() {
      const s = yield* start(pocketsphinx)
      const key = yield* s.key("alice")
      const browser = yield* launch
      const { page, problems } = yield* open(browser)
      yield* signIn(page, s.url, key)
      yield* screenshot(page, "record-phone")

      yield* record(page, 4, async () => {
        // the level meter moves with the voice
        await page.waitForFunction(() => Number((globalThis as any).document.querySelector("meter#level")?.value ?? 0) > 0.05)
        await screenshotNow(page, "recording-phone")
        // pause and resume
        await page.getByRole("button", { name: "Pause" }).click()
        await page.getByRole("heading", { name: "Paused" }).waitFor()
        await page.getByRole("button", { name: "Resume" }).click()
        await page.getByRole("heading", { name: "Recording…" }).waitFor()
      })
      // the list shows the new entry as soon as the upload is answered (no reload)
      const item = page.locator("li[data-entry-id]")
      yield* Effect.promise(() => item.first().waitFor())
      expect(yield* Effect.promise(() => item.count())).toBe(1)
      // and its stages turn done through the event stream: the list does not poll
      yield* Effect.promise(() => item.getByText("Transcript: done").waitFor({ timeout: 120_000 }))
      yield* Effect.promise(() => item.getByText("Cleanup: done").waitFor({ timeout: 120_000 }))
      yield* Effect.promise(() => item.getByText("Notion: done").waitFor({ timeout: 120_000 }))
      const [entry] = yield* entries(s.url, key)
      expect(entry.mimeType).toMatch(/webm/)

      yield* Effect.promise(() => item.getByRole("link").click())
      const transcript = page.getByTestId("transcript")
      yield* Effect.promise(() => transcript.waitFor())
      const text = (yield* Effect.promise(() => transcript.innerText())).toLowerCase()
      for (const word of RECOGNISED_WORDS) expect(text).toContain(word)
      yield* screenshot(page, "entry-phone")
      yield* Effect.promise(() => page.setViewportSize({ width: 1280, height: 800 }))
      yield* screenshot(page, "entry-desktop")
      yield* Effect.promise(() => page.getByRole("link", { name: "← All entries" }).click())
      yield* Effect.promise(() => page.getByRole("button", { name: "Start recording" }).waitFor())
      yield* screenshot(page, "record-desktop")
      expect(problems).toEqual([])
    }), 240_000)

  it.scopedLive("offline during the upload, another recorded offline, reload, back online: both arrive, exactly once each", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const browser = yield* launch
      const { context, page, problems } = yield* open(browser, { serviceWorkers: "allow" })
      yield* signIn(page, s.url, key)
      // the service worker has cached the shell
      yield* Effect.promise(() => page.waitForFunction(() => (globalThis as any).navigator.serviceWorker.controller !== null))

      // the network drops as the first recording stops: its upload fails and it waits
      yield* Effect.promise(() => page.getByRole("button", { name: "Start recording" }).click())
      yield* Effect.promise(() => page.getByRole("timer").filter({ hasText: "0:02" }).waitFor())
      yield* Effect.promise(() => context.setOffline(true))
      yield* Effect.promise(() => page.getByRole("button", { name: "Stop and upload" }).click())
      yield* Effect.promise(() => waitingText(page).filter({ hasText: "1 recording waiting to upload" }).waitFor())
      yield* Effect.promise(() => page.getByText(/Not uploaded yet/).waitFor())

      yield* record(page, 2)
      yield* Effect.promise(() => waitingText(page).filter({ hasText: "2 recordings waiting to upload" }).waitFor())
      expect(yield* entries(s.url, key)).toHaveLength(0)

      // a reload with no network: the service worker serves the shell, the outbox is still there
      yield* Effect.promise(() => page.reload())
      yield* Effect.promise(() => page.getByRole("button", { name: "Start recording" }).waitFor())
      yield* Effect.promise(() => waitingText(page).filter({ hasText: "2 recordings waiting to upload" }).waitFor())

      yield* Effect.promise(() => context.setOffline(false))
      yield* Effect.promise(() => allUploaded(page))
      const items = yield* entryCount(s.url, key, 2)
      expect(new Set(items.map((e) => e.sha256)).size).toBe(2)
      expect(problems).toEqual([])
    }), 240_000)

  it.scopedLive("a lost 201 (the server killed after storing, before its answer arrives) and the retry: still one entry", () =>
    Effect.gen(function*() {
      // the server as its own process, so it can really die
      const dir = yield* tempDir("vj-web-lost201-")
      const ollama = yield* FakeOllama.make()
      const transcription = yield* FakeOpenAi.make()
      const port = yield* Effect.promise(freePort)
      const env = serverEnv({ port, dataDir: dir, transcribeUrl: transcription.url, ollamaUrl: ollama.url })
      const key = cli(env, ["users", "create", "alice"]).trim().split("\n").at(-1)!
      const url = `http://127.0.0.1:${port}`
      const first = yield* serve(env, port)

      const browser = yield* launch
      const { page, problems } = yield* open(browser)
      let lost = 0
      // the first upload reaches the server and is stored (201); then the server is killed and the answer never arrives
      yield* Effect.promise(() =>
        page.route("**/entries", async (route) => {
          if (route.request().method() !== "POST" || lost > 0) return route.fallback()
          const answer = await route.fetch()
          expect(answer.status()).toBe(201)
          first.kill("SIGKILL")
          await exitOf(first)
          lost++
          await route.abort("connectionreset")
        })
      )
      yield* signIn(page, url, key)
      yield* record(page, 2)
      yield* waitFor(async () => (lost === 1 ? true : undefined))
      yield* Effect.promise(() => waitingText(page).filter({ hasText: "1 recording waiting to upload" }).waitFor())
      // the server comes back on the same database; the browser's next automatic retry (backoff up to 60 s,
      // and a restart under load takes a while) carries the same Idempotency-Key
      yield* serve(env, port)
      yield* Effect.promise(() => allUploaded(page))
      yield* entryCount(url, key, 1)
      // and it stays one after a reload (the outbox is empty)
      yield* Effect.promise(() => page.reload())
      yield* Effect.promise(() => allUploaded(page))
      expect(yield* entries(url, key)).toHaveLength(1)
      expect(problems).toEqual([])
    }), 400_000)

  it.scopedLive("pick two files at once, drop an MP3: each becomes one entry; the MP3 plays and seeks (Range)", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      const browser = yield* launch
      const { page, problems } = yield* open(browser)
      const audioAnswers: Array<{ status: number; range: string | undefined }> = []
      page.on("response", (r) => {
        if (/\/entries\/[^/]+\/audio$/.test(new URL(r.url()).pathname)) audioAnswers.push({ status: r.status(), range: r.request().headers()["range"] })
      })
      yield* signIn(page, s.url, key)
      const mp3 = Array.from(audioBytes("mp3"))
      yield* Effect.promise(() =>
        page.getByTestId("drop-zone").evaluate((zone, bytes) => {
          // in the page: the browser's own DataTransfer, File and DragEvent
          const w = globalThis as any
          const dt = new w.DataTransfer()
          dt.items.add(new w.File([new Uint8Array(bytes)], "voice-memo.mp3", { type: "audio/mpeg" }))
          zone.dispatchEvent(new w.DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }))
        }, mp3)
      )
      const item = page.locator("li[data-entry-id]")
      yield* Effect.promise(() => item.first().waitFor())
      yield* Effect.promise(() => allUploaded(page))
      const [entry] = yield* entries(s.url, key)
      expect(entry.originalFilename).toBe("voice-memo.mp3")
      // several files picked at once
      yield* Effect.promise(() => page.getByLabel("Choose files").setInputFiles([audioFile("wav"), audioFile("m4a")]))
      yield* Effect.promise(() => item.nth(2).waitFor())
      yield* Effect.promise(() => allUploaded(page))
      const names = (yield* entryCount(s.url, key, 3)).map((e) => e.originalFilename).sort()
      expect(names).toEqual([path.basename(audioFile("m4a")), path.basename(audioFile("wav")), "voice-memo.mp3"].sort())
      yield* completed(s, key, entry.id)

      yield* Effect.promise(() => page.locator(`li[data-entry-id="${entry.id}"]`).getByRole("link").click())
      const audio = page.getByLabel("Recording")
      yield* Effect.promise(() => audio.waitFor())
      const duration = yield* Effect.promise(() =>
        audio.evaluate((el: any) =>
          new Promise<number>((resolve, reject) => {
            const ready = () => (Number.isFinite(el.duration) && el.duration > 0 ? resolve(el.duration) : undefined)
            el.addEventListener("loadedmetadata", ready)
            el.addEventListener("error", () => reject(new Error(`audio error ${el.error?.code}`)))
            ready()
          })
        )
      )
      expect(duration).toBeGreaterThan(2)
      const after = yield* Effect.promise(() =>
        audio.evaluate((el: any, target) =>
          new Promise<{ time: number; seekable: number }>((resolve, reject) => {
            el.addEventListener("seeked", () => resolve({ time: el.currentTime, seekable: el.seekable.length > 0 ? el.seekable.end(0) : 0 }), { once: true })
            el.addEventListener("error", () => reject(new Error(`audio error ${el.error?.code}`)))
            void el.play().then(() => (el.currentTime = target), reject)
          }), duration / 2)
      )
      expect(after.time).toBeGreaterThan(duration / 2 - 0.5)
      expect(after.seekable).toBeGreaterThan(duration / 2)
      // the browser asked for byte ranges and got partial answers
      expect(audioAnswers.some((a) => a.status === 206 && a.range?.startsWith("bytes=") === true)).toBe(true)
      expect(problems).toEqual([])
    }), 240_000)

  it.scopedLive("another user's entry id in the URL: not found, nothing of it shown", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const alice = yield* s.key("alice")
      const bob = yield* s.key("bob")
      const form = multipart(audioBytes("wav"), "file", "bobs-secret-note.wav")
      const bobs = yield* call(s.url, bob, "/entries", { method: "POST", body: form })
      expect(bobs.status).toBe(201)
      yield* completed(s, bob, bobs.body.id)

      const browser = yield* launch
      const { page, problems } = yield* open(browser)
      yield* signIn(page, s.url, alice)
      yield* Effect.promise(() => page.goto(`${s.url}/app/entries/${bobs.body.id}`))
      yield* Effect.promise(() => page.getByRole("heading", { name: "Entry not found" }).waitFor())
      const body = yield* Effect.promise(() => page.locator("body").innerText())
      expect(body).not.toContain("bobs-secret-note")
      expect(body).not.toContain(bobs.body.id)
      expect(yield* Effect.promise(() => page.locator("audio").count())).toBe(0)
      expect(yield* Effect.promise(() => page.getByTestId("transcript").count())).toBe(0)
      // signing out ends the session server-side: the page asks for the key again, the cookie no longer works
      yield* Effect.promise(() => page.getByRole("button", { name: "Sign out" }).click())
      yield* Effect.promise(() => page.getByLabel("API key").waitFor())
      const after = yield* Effect.promise(() => page.evaluate(() => fetch("/session").then((r) => r.status)))
      expect(after).toBe(401)
      // and the key is nowhere in the browser's storage
      const stored = yield* Effect.promise(() => page.evaluate(() => JSON.stringify({ ...(globalThis as any).localStorage })))
      expect(stored).not.toContain(alice)
      expect(problems).toEqual([])
    }), 240_000)

  it.scopedLive("re-run the transcription, make the older one primary again, delete the entry", () =>
    Effect.gen(function*() {
      const s = yield* start(pocketsphinx)
      const key = yield* s.key("alice")
      const uploaded = yield* call(s.url, key, "/entries", { method: "POST", body: multipart(audioBytes("wav"), "file", "note.wav") })
      expect(uploaded.status).toBe(201)
      const id = uploaded.body.id as string
      const first = (yield* completed(s, key, id)).transcription.id as string

      const browser = yield* launch
      const { page, problems } = yield* open(browser)
      yield* signIn(page, s.url, key)
      yield* Effect.promise(() => page.goto(`${s.url}/app/entries/${id}`))
      yield* Effect.promise(() => page.getByRole("button", { name: "Re-run transcription" }).click())
      // the new run shows up and completes live; it becomes the primary one
      yield* Effect.promise(() => page.getByTestId("transcriptions").locator("li").nth(1).waitFor())
      const second = yield* waitFor(async () => {
        const list = (await Effect.runPromise(call(s.url, key, `/entries/${id}/transcriptions`))).body as Array<any>
        const other = list.find((t) => t.id !== first)
        return other?.status === "completed" && other.isPrimary ? other.id as string : undefined
      }, 120_000)
      const makePrimary = page.locator(`li[data-run-id="${first}"]`).getByRole("button", { name: "Make this transcription primary" })
      yield* Effect.promise(() => makePrimary.click())
      yield* waitFor(async () => {
        const list = (await Effect.runPromise(call(s.url, key, `/entries/${id}/transcriptions`))).body as Array<any>
        return list.find((t) => t.id === first)?.isPrimary === true && list.find((t) => t.id === second)?.isPrimary === false ? true : undefined
      })
      yield* Effect.promise(() => page.locator(`li[data-run-id="${second}"]`).getByRole("button", { name: "Make this transcription primary" }).waitFor())

      yield* Effect.promise(() => page.getByRole("button", { name: "Delete entry" }).click())
      yield* Effect.promise(() => page.getByRole("button", { name: "Yes, delete it" }).click())
      yield* Effect.promise(() => page.getByRole("button", { name: "Start recording" }).waitFor())
      expect((yield* call(s.url, key, `/entries/${id}`)).status).toBe(404)
      expect(problems).toEqual([])
    }), 240_000)

  it.scopedLive("a failed stage shows its stored reason and what to do; the re-run fixes it", () =>
    Effect.gen(function*() {
      const s = yield* start()
      const key = yield* s.key("alice")
      // Ollama answers as it does when the model was never pulled
      s.ollama.failNext({ kind: "status", status: 404, body: { error: "model 'llama3.2' not found" } })
      const uploaded = yield* call(s.url, key, "/entries", { method: "POST", body: multipart(audioBytes("wav"), "file", "note.wav") })
      const id = uploaded.body.id as string
      yield* waitFor(async () => {
        const r = await Effect.runPromise(call(s.url, key, `/entries/${id}`))
        return r.body.cleanup?.status === "failed" ? true : undefined
      })

      const browser = yield* launch
      const { page, problems } = yield* open(browser)
      yield* signIn(page, s.url, key)
      yield* Effect.promise(() => page.goto(`${s.url}/app/entries/${id}`))
      const problem = page.getByRole("alert").filter({ hasText: "Cleanup failed" })
      yield* Effect.promise(() => problem.waitFor())
      const text = yield* Effect.promise(() => problem.innerText())
      expect(text).toContain("run `ollama pull llama3.2`")
      expect(text).toContain("Re-run cleanup")

      yield* Effect.promise(() => page.getByRole("button", { name: "Re-run cleanup" }).click())
      yield* Effect.promise(() => problem.waitFor({ state: "detached" }))
      yield* Effect.promise(() => page.getByTestId("cleaned-text").filter({ hasText: /\w/ }).filter({ hasNotText: "Not cleaned yet" }).waitFor())
      expect(problems).toEqual([])
    }), 240_000)
})
