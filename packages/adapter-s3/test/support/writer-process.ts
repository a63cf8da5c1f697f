/**
 * A process writing one blob forever into the S3 store, for the SIGKILL
 * test of the BlobStore suite:
 *   node --import tsx --conditions=source writer-process.ts '<S3BlobStore.Config as JSON>' <key>
 */
import { NodeRuntime } from "@effect/platform-node"
import { BlobStore } from "@voice-journal/core"
import { Effect, Stream } from "effect"
import * as S3BlobStore from "../../src/S3BlobStore.js"

const [config, key] = process.argv.slice(2) as [string, string]
const endless = Stream.repeatEffect(Effect.sync(() => new Uint8Array(64 * 1024).fill(7)))
Effect.flatMap(BlobStore.BlobStore, (blobs) => blobs.write(key, endless)).pipe(
  Effect.provide(S3BlobStore.layer(JSON.parse(config) as S3BlobStore.Config)),
  NodeRuntime.runMain
)
