/**
 * The filesystem blob store passes the BlobStore conformance suite. Its
 * storage is a temp directory with the store in `audio/` inside it, so a
 * key that escaped the store's directory would show up as a leftover.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Effect } from "effect"
import { isKey, layerFileSystem } from "../src/BlobStore.js"
import * as BlobStoreSuite from "../src/BlobStoreSuite.js"

const here = path.dirname(fileURLToPath(import.meta.url))

/** Every file under `root` except complete blobs in `root/audio` (partials, strays, escapes). */
const strays = (root: string) =>
  (fs.readdirSync(root, { recursive: true, withFileTypes: true }) as Array<fs.Dirent>)
    .filter((d) => !d.isDirectory())
    .map((d) => path.relative(root, path.join(d.parentPath, d.name)))
    .filter((rel) => !(path.dirname(rel) === "audio" && isKey(path.basename(rel))))

BlobStoreSuite.run("filesystem", {
  freshStorage: Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "vj-blob-suite-"))),
    (root) => Effect.sync(() => fs.rmSync(root, { recursive: true, force: true }))
  ).pipe(Effect.map((root) => {
    const directory = path.join(root, "audio")
    return {
      open: (options) => layerFileSystem({ directory, staleAfter: options?.staleAfter }),
      leftovers: Effect.sync(() => strays(root)),
      writeInAnotherProcess: (key) =>
        BlobStoreSuite.spawnWriter(["--import", "tsx", "--conditions=source", path.join(here, "support", "blob-writer-process.ts"), directory, key], here)
    } satisfies BlobStoreSuite.Storage
  }))
})
