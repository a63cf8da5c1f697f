/**
 * Rewrites one Markdown file over and over with `MarkdownFolder.writeAtomically`,
 * alternating two large versions, until killed:
 *   node --import tsx --conditions=source markdown-writer.ts <dir> <name>
 * Prints "ready" after the first complete write. The crash test SIGKILLs it
 * mid-write and checks the file is one whole version, never a part.
 */
import { pathToFileURL } from "node:url"
import * as MarkdownFolder from "../../src/MarkdownFolder.js"

/** Version `v` (A or B): 8 MiB, its front matter naming the version, so a torn file cannot pass as whole. */
export const version = (v: "A" | "B") => `---\nversion: ${v}\n---\n\n${v.repeat(8 * 1024 * 1024)}\nend ${v}\n`

// run as a script (not when the test imports `version`)
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [dir, name] = process.argv.slice(2) as [string, string]
  let v: "A" | "B" = "A"
  let first = true
  for (;;) {
    await MarkdownFolder.writeAtomically(dir, name, version(v))
    if (first) process.stdout.write("ready\n")
    first = false
    v = v === "A" ? "B" : "A"
  }
}
