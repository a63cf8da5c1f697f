/**
 * Test support for the web app: Debian's Chromium (never a downloaded
 * browser) driven by playwright-core, with a fake microphone that plays real
 * espeak-ng speech. Pages collect Content-Security-Policy violations and
 * script errors, so a test can assert there were none.
 */
import { Effect } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core"
import { fakeMicrophoneWav } from "../../../core/test/support/Audio.js"
import { packageDir } from "./TestServer.js"

/** The system Chromium (`VJ_CHROMIUM` overrides; `.ci/system-deps` installs Debian's `chromium`). */
export const chromiumPath = () => {
  const configured = process.env["VJ_CHROMIUM"]
  if (configured !== undefined && configured !== "") return configured
  for (const candidate of ["chromium", "chromium-browser"]) {
    try {
      return execFileSync("sh", ["-c", `command -v ${candidate}`], { encoding: "utf8" }).trim()
    } catch {
      // not this name: try the next
    }
  }
  throw new Error("no Chromium found: install Debian's `chromium` (bash .ci/system-deps) or set VJ_CHROMIUM")
}

/** Where the tests write their screenshots (named in the README). */
export const screenshotDir = path.join(packageDir, "test-output", "screenshots")

/** Chromium with a fake microphone playing speech, closed with the scope. */
export const launch = Effect.acquireRelease(
  Effect.promise(() =>
    chromium.launch({
      executablePath: chromiumPath(),
      headless: true,
      args: [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        `--use-file-for-fake-audio-capture=${fakeMicrophoneWav()}`,
        "--autoplay-policy=no-user-gesture-required",
        "--no-sandbox" // the tests run as root in CI containers, where Chromium's sandbox cannot start
      ]
    })
  ),
  (browser) => Effect.promise(() => browser.close())
)

export interface Watched {
  readonly context: BrowserContext
  readonly page: Page
  /** CSP violations and uncaught script errors seen so far. */
  readonly problems: Array<string>
}

/** A fresh profile (own cookies, IndexedDB, service workers) and a page in it, closed with the scope. */
export const open = (browser: Browser, options: { readonly serviceWorkers?: "allow" | "block"; readonly viewport?: { width: number; height: number } } = {}) =>
  Effect.acquireRelease(
    Effect.promise(async (): Promise<Watched> => {
      const context = await browser.newContext({
        serviceWorkers: options.serviceWorkers ?? "block",
        viewport: options.viewport ?? { width: 390, height: 844 },
        permissions: ["microphone"]
      })
      // stages run on a shared, loaded machine: wait generously for conditions (never for time)
      context.setDefaultTimeout(90_000)
      const page = await context.newPage()
      const problems: Array<string> = []
      page.on("pageerror", (e) => problems.push(`page error: ${e.message}`))
      page.on("console", (m) => {
        if (/Content Security Policy|Refused to/i.test(m.text())) problems.push(`CSP: ${m.text()}`)
      })
      return { context, page, problems }
    }),
    ({ context }) => Effect.promise(() => context.close())
  )

/** Signs in through the form with an API key. */
export const signIn = (page: Page, url: string, apiKey: string) =>
  Effect.promise(async () => {
    await page.goto(`${url}/app`)
    await page.getByLabel("API key").fill(apiKey)
    await page.getByRole("button", { name: "Sign in" }).click()
    await page.getByRole("button", { name: "Start recording" }).waitFor()
  })

/**
 * Records from the fake microphone until the timer shows `seconds`, then
 * stops (and the upload starts). `whileRecording` runs once it is under way.
 */
export const record = (page: Page, seconds: number, whileRecording?: () => Promise<void>) =>
  Effect.promise(async () => {
    await page.getByRole("button", { name: "Start recording" }).click()
    const timer = page.getByRole("timer", { name: "Elapsed time" })
    await timer.waitFor()
    if (whileRecording !== undefined) {
      await timer.filter({ hasText: "0:01" }).waitFor()
      await whileRecording()
    }
    await page.waitForFunction(
      (s) => {
        const text: string = (globalThis as any).document.querySelector("[role=timer]")?.textContent ?? "0:00"
        const [m, sec] = text.split(":").map(Number)
        return m! * 60 + sec! >= s
      },
      seconds,
      { timeout: 60_000 }
    )
    await page.getByRole("button", { name: "Stop and upload" }).click()
    await page.getByRole("button", { name: "Start recording" }).waitFor()
  })

export const screenshotNow = async (page: Page, name: string) => {
  fs.mkdirSync(screenshotDir, { recursive: true })
  await page.screenshot({ path: path.join(screenshotDir, `${name}.png`), fullPage: true })
}

export const screenshot = (page: Page, name: string) => Effect.promise(() => screenshotNow(page, name))
