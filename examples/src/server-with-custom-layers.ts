/**
 * The bundled server with one part swapped: here the transcriber is an
 * OpenAI-compatible server chosen in code instead of from the environment,
 * everything else comes from the usual `VJ_*` configuration.
 *
 *   pnpm --filter @voice-journal/examples run server
 */
import { NodeRuntime } from "@effect/platform-node"
import { Transcriber } from "@voice-journal/core"
import { Config, Server } from "@voice-journal/http-server"
import { Effect, Layer, Redacted } from "effect"

const program = Effect.gen(function*() {
  const config = yield* Config.config
  const myTranscriber = Transcriber.layerOpenAi({
    baseUrl: process.env.WHISPER_URL ?? "http://127.0.0.1:8000",
    model: "Systran/faster-whisper-small",
    ...(process.env.WHISPER_KEY ? { apiKey: Redacted.make(process.env.WHISPER_KEY) } : {})
  })
  // the server's layers are separate so any of them can be replaced
  const app = Server.layerApp(config).pipe(Layer.provide(myTranscriber))
  yield* Layer.launch(Server.layerHttpApi(config).pipe(Layer.provideMerge(Server.layerListener(config)), Layer.provide(app)))
})

program.pipe(NodeRuntime.runMain)
