/**
 * Embedding voice-journal in a plain Node HTTP service (no bundled server):
 * the service owns its HTTP layer and authentication; voice-journal ingests
 * the request body as a stream and runs the pipeline in the background.
 *
 *   pnpm --filter @voice-journal/examples run embed
 *   curl --data-binary @note.mp3 -H 'x-user: me' http://127.0.0.1:4000/notes
 *
 * Engines are configured from the environment as in the server's README
 * section (defaults: pocketsphinx for speech, Ollama on localhost).
 */
import { NodeContext, NodeRuntime, NodeStream } from "@effect/platform-node"
import { SqliteJournalStore } from "@voice-journal/adapter-sqlite"
import { AudioPieces, AudioProbe, BlobStore, Cleaner, type Domain, Pipeline, Transcriber, VoiceJournal, WorkSignal } from "@voice-journal/core"
import { Effect, Layer, Runtime } from "effect"
import * as http from "node:http"

const dataDir = process.env.DATA_DIR ?? "./data-embed"

const Services = Layer.mergeAll(
  SqliteJournalStore.layer({ filename: `${dataDir}/journal.db` }),
  BlobStore.layerFileSystem({ directory: `${dataDir}/audio` }),
  WorkSignal.layer,
  Transcriber.layerCommand({
    command: Transcriber.parseCommandLine("pocketsphinx_continuous -infile {input} -logfn /dev/null"),
    convert: "wav16k"
  }),
  Cleaner.layerOllama({ host: process.env.OLLAMA_HOST ?? "http://127.0.0.1:11434", model: process.env.OLLAMA_MODEL ?? "llama3.2" }),
  AudioProbe.layerFfprobe,
  AudioPieces.layerFfmpeg
).pipe(Layer.provide(NodeContext.layer))

/** The service's own HTTP server, started and stopped with the layer. */
const HttpService = Layer.scopedDiscard(Effect.gen(function*() {
  const journal = yield* VoiceJournal.VoiceJournal
  const runtime = yield* Effect.runtime<never>()
  // our own "auth": one user per x-user header, created on first use
  const users = new Map<string, Domain.User>()
  const server = http.createServer((req, res) => {
    const name = String(req.headers["x-user"] ?? "anonymous")
    const program = Effect.gen(function*() {
      let user = users.get(name)
      if (user === undefined) {
        user = (yield* journal.createUser(name)).user
        users.set(name, user)
      }
      if (req.method === "POST" && req.url === "/notes") {
        const body = NodeStream.fromReadable(() => req, (e) => ({ _tag: "RequestError", message: String(e) }) as const, { closeOnDone: false })
        const { entry } = yield* journal.ingest(user.id, body, { originalFilename: String(req.headers["x-filename"] ?? "") || undefined })
        return [201, { id: entry.id, mimeType: entry.mimeType }] as const
      }
      if (req.method === "GET" && req.url?.startsWith("/notes/")) {
        const details = yield* journal.getEntry(user.id, req.url.slice("/notes/".length) as never)
        return [200, { status: details.cleanup?.status ?? details.transcription?.status, text: details.cleanup?.text ?? details.transcription?.text }] as const
      }
      return [404, { error: "not found" }] as const
    }).pipe(Effect.catchAll((e) => Effect.succeed([e._tag === "PayloadTooLarge" ? 413 : e._tag === "UnsupportedMediaType" ? 415 : 400, { error: e._tag }] as const)))
    Runtime.runPromise(runtime)(program).then(([status, body]) => {
      res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body))
    })
  })
  yield* Effect.acquireRelease(
    Effect.async<void>((resume) => void server.listen(4000, "127.0.0.1", () => resume(Effect.void))),
    () => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
  )
  yield* Effect.log("listening on http://127.0.0.1:4000")
}))

const App = HttpService.pipe(
  Layer.provide(VoiceJournal.layer({ maxUploadBytes: 50 * 1024 * 1024 })),
  Layer.merge(Pipeline.layer({ shutdownGrace: "10 seconds" })),
  Layer.provide(Services)
)

Layer.launch(App).pipe(NodeRuntime.runMain)
