/** Vitest global setup: builds the web app first, so the servers the tests start serve the current sources. */
import { execFileSync } from "node:child_process"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

export default function setup() {
  const packageDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")
  execFileSync(process.execPath, ["--import", "tsx", "web/build.ts"], { cwd: packageDir, stdio: "inherit" })
}
