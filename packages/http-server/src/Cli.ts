/**
 * The `voice-journal` command line: run the server, manage users and keys
 * on the configured database, and — as a client of a running server —
 * upload recordings and follow them through the pipeline.
 *
 * @since 0.1.0
 */
import { Args, Command, Options } from "@effect/cli"
import { NodeContext } from "@effect/platform-node"
import { Domain, JournalStore, VoiceJournal } from "@voice-journal/core"
import { BlobStore } from "@voice-journal/core"
import { Config, Console, Duration, Effect, Layer, Option, Redacted } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { config as serverConfig, type ServerConfig } from "./Config.js"
import * as Server from "./Server.js"

/** The front door on the configured database, without workers or HTTP. */
const journalLayer = (config: ServerConfig) =>
  VoiceJournal.layer({ maxUploadBytes: config.maxUploadBytes, notionEnabled: Option.isSome(config.notion) }).pipe(
    Layer.provideMerge(Layer.mergeAll(Server.layerStorage(config), BlobStore.layerFileSystem({ directory: config.audioDir })))
  )

const withJournal = <A, E>(f: (journal: VoiceJournal.VoiceJournalService) => Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const config = yield* serverConfig
    return yield* Effect.flatMap(VoiceJournal.VoiceJournal, f).pipe(Effect.provide(journalLayer(config)))
  })

const serve = Command.make("serve", {}, () =>
  Effect.gen(function*() {
    const config = yield* serverConfig
    yield* Layer.launch(Server.layer(config))
  })).pipe(Command.withDescription("Run the HTTP server and the pipeline workers (configured from the environment)."))

const migrate = Command.make("migrate", {}, () =>
  Effect.gen(function*() {
    const config = yield* serverConfig
    yield* Effect.flatMap(JournalStore.JournalStore, (s) => s.ping).pipe(Effect.provide(Server.layerStorage(config)))
    yield* Console.log("database schema is up to date")
  })).pipe(Command.withDescription("Apply database migrations and exit (serve does this too)."))

const userName = Args.text({ name: "name" })
const usersCreate = Command.make("create", { name: userName }, ({ name }) =>
  withJournal((journal) => journal.createUser(name)).pipe(
    Effect.flatMap(({ apiKey, user }) =>
      Console.log(`user ${user.id} (${user.name}) created\nAPI key (shown once, keep it secret):\n${Redacted.value(apiKey)}`)
    )
  )).pipe(Command.withDescription("Create a user and print its first API key (once)."))

const userId = Args.text({ name: "user-id" })
const keyName = Options.text("name").pipe(Options.withDefault("cli"))
const keysCreate = Command.make("create", { userId, keyName }, ({ keyName, userId }) =>
  withJournal((journal) => journal.createApiKey(userId as Domain.UserId, keyName)).pipe(
    Effect.flatMap(({ apiKey, key }) =>
      Console.log(`key ${key.id} created\nAPI key (shown once, keep it secret):\n${Redacted.value(apiKey)}`)
    )
  )).pipe(Command.withDescription("Create another API key for a user."))
const keysRevoke = Command.make("revoke", { userId, keyId: Args.text({ name: "key-id" }) }, ({ keyId, userId }) =>
  withJournal((journal) => journal.revokeApiKey(userId as Domain.UserId, keyId as Domain.ApiKeyId)).pipe(
    Effect.zipRight(Console.log(`key ${keyId} revoked`))
  )).pipe(Command.withDescription("Revoke an API key."))

// --- client commands (talk to a running server) -----------------------------

const serverUrl = Options.text("url").pipe(
  Options.withFallbackConfig(Config.string("VJ_URL")),
  Options.withDefault("http://127.0.0.1:3000"),
  Options.withDescription("server URL (or VJ_URL)")
)
const apiKey = Options.redacted("key").pipe(
  Options.withFallbackConfig(Config.redacted("VJ_API_KEY")),
  Options.withDescription("API key (or VJ_API_KEY)")
)

const request = (url: string, key: Redacted.Redacted<string>, pathname: string, init: RequestInit = {}) =>
  Effect.tryPromise({
    try: async () => {
      const response = await fetch(new URL(pathname, url), {
        ...init,
        headers: { ...init.headers, authorization: `Bearer ${Redacted.value(key)}` }
      })
      const body = await response.json().catch(() => ({})) as Record<string, unknown>
      if (!response.ok) throw new Error(`${response.status} ${String(body.error ?? "")}: ${String(body.message ?? "")}`)
      return body
    },
    catch: (e) => (e instanceof Error ? e : new Error(String(e)))
  })

const stageLine = (entry: Record<string, unknown>) => {
  const state = (k: string) => (entry[k] as { status?: string } | null)?.status ?? "—"
  return `transcription ${state("transcription")}, cleanup ${state("cleanup")}, notion ${state("notionSync")}`
}
const finished = (entry: Record<string, unknown>) => {
  const done = (k: string) => ["completed", "success", "failed"].includes((entry[k] as { status?: string } | null)?.status ?? "")
  return done("notionSync") || (done("cleanup") && entry.notionSync === null && (entry.cleanup as { status: string }).status === "failed") ||
    (entry.transcription as { status?: string } | null)?.status === "failed"
}

const files = Args.file({ name: "file", exists: "yes" }).pipe(Args.repeated)
const follow = Options.boolean("no-follow").pipe(Options.map((b) => !b), Options.withDescription("do not wait for the pipeline"))
const upload = Command.make("upload", { files, url: serverUrl, key: apiKey, follow }, ({ files, follow, key, url }) =>
  Effect.forEach(files, (file) =>
    Effect.gen(function*() {
      const size = fs.statSync(file).size
      let sent = 0
      let shown = -1
      const body = fs.createReadStream(file)
      body.on("data", (chunk) => {
        sent += chunk.length
        const pct = Math.floor((sent / size) * 100)
        if (pct !== shown && (pct % 10 === 0 || sent === size)) {
          shown = pct
          process.stderr.write(`\r${path.basename(file)}: ${pct}% of ${(size / 1048576).toFixed(1)} MiB`)
        }
      })
      const entry = yield* request(url, key, "/entries", {
        method: "POST",
        headers: { "content-type": "application/octet-stream", "content-length": String(size), "x-filename": path.basename(file) },
        body: body as unknown as RequestInit["body"],
        duplex: "half"
      } as RequestInit)
      process.stderr.write("\n")
      yield* Console.log(`${path.basename(file)} → entry ${String(entry.id)} (${String(entry.mimeType)})`)
      if (!follow) return
      let last = ""
      while (true) {
        const current = yield* request(url, key, `/entries/${String(entry.id)}`)
        const line = stageLine(current)
        if (line !== last) yield* Console.log(`  ${line}`)
        last = line
        if (finished(current)) {
          const cleanup = current.cleanup as { title?: string; text?: string } | null
          if (cleanup?.text) yield* Console.log(`\n  ${cleanup.title ?? ""}\n  ${cleanup.text}\n`)
          return
        }
        yield* Effect.sleep(Duration.seconds(1))
      }
    }), { discard: true })).pipe(Command.withDescription("Upload recordings to a running server and follow them through the pipeline."))

const listEntries = Command.make("list", {
  url: serverUrl,
  key: apiKey,
  limit: Options.integer("limit").pipe(Options.withDefault(20)),
  offset: Options.integer("offset").pipe(Options.withDefault(0))
}, ({ key, limit, offset, url }) =>
  request(url, key, `/entries?limit=${limit}&offset=${offset}`).pipe(
    Effect.flatMap((page) =>
      Effect.gen(function*() {
        const items = page.items as Array<Record<string, unknown>>
        yield* Console.log(`${items.length} of ${String(page.total)} entries (offset ${offset})`)
        for (const e of items) yield* Console.log(`${String(e.id)}  ${String(e.createdAt)}  ${String(e.originalFilename ?? "")}  ${String(e.mimeType)}`)
      })
    )
  )).pipe(Command.withDescription("List your entries, newest first."))

/** @since 0.1.0 */
export const command = Command.make("voice-journal").pipe(
  Command.withSubcommands([
    serve,
    migrate,
    Command.make("users").pipe(Command.withSubcommands([usersCreate])),
    Command.make("keys").pipe(Command.withSubcommands([keysCreate, keysRevoke])),
    upload,
    Command.make("entries").pipe(Command.withSubcommands([listEntries]))
  ])
)

/** @since 0.1.0 */
export const run = Command.run(command, { name: "voice-journal", version: "0.1.0" })

/** @since 0.1.0 */
export const CliLive = NodeContext.layer
