/**
 * A process writing one blob forever into a filesystem store, for the
 * SIGKILL test of the BlobStore suite:
 *   node --import tsx --conditions=source blob-writer-process.ts <directory> <key>
 */
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Stream } from "effect"
import * as BlobStore from "../../src/BlobStore.js"

const [directory, key] = process.argv.slice(2) as [string, string]
const endless = Stream.repeatEffect(Effect.sync(() => new Uint8Array(64 * 1024).fill(7)))
Effect.flatMap(BlobStore.BlobStore, (blobs) => blobs.write(key, endless)).pipe(
  Effect.provide(BlobStore.layerFileSystem({ directory })),
  NodeRuntime.runMain
)
