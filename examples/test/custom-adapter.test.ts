import { FileSystem } from "@effect/platform"
import { NodeFileSystem } from "@effect/platform-node"
import { JournalStoreSuite } from "@voice-journal/core/testing"
import { Effect } from "effect"
import { layer } from "../src/custom-adapter.js"

// every test gets a fresh, empty database; every build of the layer is a new connection to it
JournalStoreSuite.run("custom adapter example", {
  freshDatabase: Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const dir = yield* fs.makeTempDirectoryScoped({ prefix: "vj-custom-" })
    return layer(`${dir}/journal.db`)
  }).pipe(Effect.provide(NodeFileSystem.layer))
})
