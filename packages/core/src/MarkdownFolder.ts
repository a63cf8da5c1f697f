/**
 * A `Destination` that writes each entry as a Markdown file into a folder —
 * an Obsidian vault or any synced folder: `YYYY-MM-DD title.md` with YAML
 * front matter (`title`, `date`, `entry_id`, `tags`, `duration_seconds`,
 * `summary`) and the sections as headings.
 *
 * - **Safe names**: no path separators or characters Windows, macOS or
 *   Linux reserve, no control characters, no leading dot, at most 200
 *   bytes; a name held by another file gets ` (2)`, ` (3)`, ….
 * - **Confined**: the folder is a path inside the server's Markdown root
 *   (`VJ_MARKDOWN_ROOT`), checked lexically and again after resolving
 *   symlinks; stored references are bare file names.
 * - **Atomic**: written to a temporary file in the same folder, fsynced,
 *   renamed over the target, and the folder fsynced — a reader (or a crash)
 *   sees the old file or the new one, never a part.
 * - **Idempotent**: the file name is recorded before it is written; a
 *   re-sync finds the entry's file by that name, or else by the `entry_id`
 *   in the front matter (even after the title changed), and rewrites it.
 * - **Deletion**: a deleted entry's file is removed when `removeOnDelete`.
 *
 * @since 0.2.0
 */
import { Effect } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import * as YAML from "yaml"
import type { Destination, Document } from "./Destination.js"
import type { EntryId } from "./Domain.js"
import { PermanentError, TemporaryError } from "./Errors.js"

/**
 * @since 0.2.0
 * @category models
 */
export interface MarkdownFolderConfig {
  /** The server's root for Markdown folders: nothing is written outside it. */
  readonly root: string
  /** The folder, relative to `root`. */
  readonly folder: string
  /** Remove an entry's file when the entry is deleted. Default true. */
  readonly removeOnDelete?: boolean | undefined
}

const maxNameBytes = 200

/** Characters no file system we target accepts in a name, and control characters. */
// eslint-disable-next-line no-control-regex
const unsafe = /[\u0000-\u001f\u007f<>:"/\\|?*]/g

/**
 * `YYYY-MM-DD title.md` (UTC date), made safe; `n > 1` adds ` (n)`. The
 * date prefix also keeps the name clear of Windows' reserved device names
 * (`CON`, `NUL`, …), which are only reserved as the whole base name.
 * @since 0.2.0
 */
export const fileName = (createdAt: Date, title: string, n = 1): string => {
  let clean = title.normalize("NFC").replace(unsafe, " ").replace(/\s+/g, " ").trim().replace(/^[.\s]+|[.\s]+$/g, "")
  if (clean === "") clean = "Voice note"
  const suffix = `${n > 1 ? ` (${n})` : ""}.md`
  const prefix = `${createdAt.toISOString().slice(0, 10)} `
  const room = maxNameBytes - Buffer.byteLength(prefix + suffix)
  // cut by code points so no character is split
  const chars = [...clean]
  while (Buffer.byteLength(chars.join("")) > room) chars.pop()
  return `${prefix}${chars.join("").trimEnd()}${suffix}`
}

/**
 * The file's content: YAML front matter, then the sections.
 * @since 0.2.0
 */
export const render = (document: Document): string => {
  const front = YAML.stringify({
    title: document.title,
    date: document.createdAt.toISOString(),
    entry_id: document.entryId,
    tags: [...document.tags],
    duration_seconds: document.durationSeconds,
    ...(document.summary !== null ? { summary: document.summary } : {})
  })
  const parts = [`# ${document.title}`]
  if (document.summary !== null && document.summary !== "") parts.push(`## Summary\n\n${document.summary}`)
  parts.push(document.text)
  if (document.actionItems.length > 0) parts.push(`## Action items\n\n${document.actionItems.map((a) => `- [ ] ${a}`).join("\n")}`)
  for (const [name, body] of Object.entries(document.sections)) parts.push(`## ${name}\n\n${body}`)
  if (document.transcript !== "") parts.push(`## Transcript\n\n${document.transcript}`)
  return `---\n${front}---\n\n${parts.join("\n\n")}\n`
}

/**
 * The front matter of a Markdown file's text, if it has one that parses.
 * @since 0.2.0
 */
export const frontMatter = (text: string): Record<string, unknown> | undefined => {
  const match = /^---\n([\s\S]*?)\n---(?:\n|$)/.exec(text)
  if (match === null) return undefined
  try {
    const parsed = YAML.parse(match[1]!)
    return parsed !== null && typeof parsed === "object" ? parsed as Record<string, unknown> : undefined
  } catch {
    return undefined // not ours (someone's hand-written file): treated as another entry's
  }
}

/**
 * Resolves `folder` inside `root`, refusing anything that leaves it (`..`,
 * an absolute path, a symlink pointing out).
 * @since 0.2.0
 */
export const confine = (root: string, folder: string): Effect.Effect<string, TemporaryError | PermanentError> =>
  Effect.gen(function*() {
    const base = path.resolve(root)
    const target = path.resolve(base, folder)
    const inside = (r: string, t: string) => {
      const rel = path.relative(r, t)
      return rel === "" || (!rel.startsWith("..") && !path.isAbsolute(rel))
    }
    if (path.isAbsolute(folder) || !inside(base, target)) {
      return yield* new PermanentError({ service: "markdown-folder", message: `folder "${folder}" is outside the Markdown root` })
    }
    const escapes = new PermanentError({ service: "markdown-folder", message: `folder "${folder}" leads outside the Markdown root (a symlink?)` })
    // the deepest part that exists must resolve inside the root before anything is created under it
    const existing = yield* io("resolving the folder", async () => {
      await fs.promises.mkdir(base, { recursive: true })
      let at = target
      while (!(await fs.promises.lstat(at).then(() => true, () => false))) at = path.dirname(at)
      return Promise.all([fs.promises.realpath(base), fs.promises.realpath(at)])
    })
    if (!inside(existing[0], existing[1])) return yield* escapes
    const real = yield* io("creating the folder", () => fs.promises.mkdir(target, { recursive: true }).then(() => fs.promises.realpath(target)))
    if (!inside(existing[0], real)) return yield* escapes
    return target
  })

/** A file system call; failures are temporary (a full disk, an unmounted share) unless they say otherwise. */
const io = <A>(what: string, f: () => Promise<A>): Effect.Effect<A, TemporaryError | PermanentError> =>
  Effect.tryPromise({
    try: f,
    catch: (e) => {
      const code = (e as NodeJS.ErrnoException).code
      const message = `Markdown folder: ${what} failed (${code ?? "error"})`
      return code === "EACCES" || code === "EPERM" || code === "EROFS" || code === "ENAMETOOLONG"
        ? new PermanentError({ service: "markdown-folder", message, detail: String(e), cause: e })
        : new TemporaryError({ service: "markdown-folder", message, detail: String(e), cause: e })
    }
  })

/**
 * Replaces `dir/name` with `content` atomically: a temporary file in the
 * same folder, fsynced, renamed over the target, then the folder fsynced so
 * the rename itself survives a power cut. A failed write removes its
 * temporary file.
 * @since 0.2.0
 */
export const writeAtomically = async (dir: string, name: string, content: string | Uint8Array): Promise<void> => {
  const temp = path.join(dir, `.vj-${crypto.randomUUID()}.tmp`)
  try {
    const file = await fs.promises.open(temp, "wx", 0o644)
    try {
      await file.writeFile(content)
      await file.sync()
    } finally {
      await file.close()
    }
    await fs.promises.rename(temp, path.join(dir, name))
  } catch (e) {
    await fs.promises.rm(temp, { force: true })
    throw e
  }
  await syncDir(dir)
}

const syncDir = async (dir: string) => {
  const handle = await fs.promises.open(dir, "r")
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

/** The entry id in a file's front matter; undefined if missing, unreadable or not ours. */
const entryIdOf = async (file: string): Promise<string | undefined> => {
  try {
    const handle = await fs.promises.open(file, "r")
    try {
      const { buffer, bytesRead } = await handle.read(Buffer.alloc(64 * 1024), 0, 64 * 1024, 0)
      const id = frontMatter(buffer.subarray(0, bytesRead).toString("utf8"))?.entry_id
      return typeof id === "string" ? id : undefined
    } finally {
      await handle.close()
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined
    throw e
  }
}

const isBareName = (name: string) => name === path.basename(name) && name.endsWith(".md") && !name.startsWith(".")

/** Temporary files older than this were left by a crash mid-write, not by a write in flight. */
const staleTempMillis = 60 * 60 * 1000

/**
 * @since 0.2.0
 * @category constructors
 */
export const make = (config: MarkdownFolderConfig): Destination => {
  const folder = confine(config.root, config.folder)

  /** Where this entry's file is: the recorded name, else a file carrying its entry id; also sweeps stale temp files. */
  const locate = (dir: string, entryId: string, recorded: string | null) =>
    io("finding the entry's file", async () => {
      if (recorded !== null && isBareName(recorded) && (await entryIdOf(path.join(dir, recorded))) === entryId) return recorded
      const now = Date.now()
      for (const name of await fs.promises.readdir(dir)) {
        if (name.startsWith(".vj-") && name.endsWith(".tmp")) {
          const stat = await fs.promises.stat(path.join(dir, name)).catch(() => undefined)
          if (stat !== undefined && now - stat.mtimeMs > staleTempMillis) await fs.promises.rm(path.join(dir, name), { force: true })
          continue
        }
        if (isBareName(name) && (await entryIdOf(path.join(dir, name))) === entryId) return name
      }
      return undefined
    })

  /** The first free `date title (n).md`. */
  const freeName = (dir: string, document: Document) =>
    io("choosing a file name", async () => {
      for (let n = 1;; n++) {
        const name = fileName(document.createdAt, document.title, n)
        try {
          await fs.promises.lstat(path.join(dir, name))
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === "ENOENT") return name
          throw e
        }
      }
    })

  return {
    deliver: (document, previous) =>
      Effect.gen(function*() {
        const dir = yield* folder
        const name = (yield* locate(dir, document.entryId, previous.externalRef)) ?? (yield* freeName(dir, document))
        // recorded before the write: a crash after it finds this same file
        if (name !== previous.externalRef) yield* previous.record(name)
        yield* io("writing the file", () => writeAtomically(dir, name, render(document)))
        return { externalRef: name }
      }),
    test: Effect.gen(function*() {
      const dir = yield* folder
      yield* io("writing a test file", async () => {
        const probe = `.vj-test-${crypto.randomUUID()}.tmp`
        await writeAtomically(dir, probe, "voice-journal test\n")
        await fs.promises.rm(path.join(dir, probe))
      })
    }),
    remove: config.removeOnDelete === false ? undefined : (entryId: EntryId, externalRef: string) =>
      Effect.gen(function*() {
        const dir = yield* folder
        const name = yield* locate(dir, entryId, externalRef)
        if (name === undefined) return
        yield* io("removing the file", async () => {
          await fs.promises.rm(path.join(dir, name), { force: true })
          await syncDir(dir)
        })
      })
  }
}
