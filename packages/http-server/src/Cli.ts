/**
 * The `voice-journal` command line: run the server, manage users and keys
 * on the configured database, and — as a client of a running server —
 * upload recordings and follow them through the pipeline.
 *
 * @since 0.1.0
 */
import { Args, Command, Options } from "@effect/cli"
import { NodeContext } from "@effect/platform-node"
import { Domain, Errors, JournalStore, VoiceJournal, WatchFolder, Webhook } from "@voice-journal/core"
import { Config, Console, Data, Duration, Effect, Layer, Option, Redacted, Schedule, ScheduleDecision } from "effect"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as selfsigned from "selfsigned"
import { config as serverConfig, type ServerConfig } from "./Config.js"
import * as Models from "./Models.js"
import * as Server from "./Server.js"

/** The front door on the configured database, without workers or HTTP. */
const journalLayer = (config: ServerConfig) =>
  VoiceJournal.layer({ maxUploadBytes: config.maxUploadBytes, notionEnabled: Option.isSome(config.notion) }).pipe(
    Layer.provideMerge(Layer.mergeAll(Server.layerStorage(config), Server.layerBlobs(config)))
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

// --- watch folder -------------------------------------------------------------

/** One line per file handled (the scans themselves are not worth a line). */
const printWatchEvent = (event: WatchFolder.WatchEvent) => {
  if (event._tag === "Scanned") return Effect.void
  const name = path.basename(event.file)
  const moved = (to: string | null) => (to === null ? "" : ` (moved to ${to})`)
  switch (event._tag) {
    case "Ingested":
      return Console.log(`${name} → entry ${event.entryId}${moved(event.movedTo)}`)
    case "AlreadyIngested":
      return Console.log(`${name}: already entry ${event.entryId}, not ingested again${moved(event.movedTo)}`)
    case "Skipped":
      return Console.error(`skipped ${name}: ${event.reason}`)
  }
}

/**
 * Runs the watch folder against the configured database and audio folder
 * directly (like `users create`), with the storage's work signal: on
 * PostgreSQL LISTEN/NOTIFY wakes the servers' workers, on SQLite they find
 * the new entries by polling.
 */
const watch = Command.make("watch", {
  dir: Args.text({ name: "dir" }).pipe(Args.withDescription("the folder to watch (its top level)")),
  user: Options.text("user").pipe(Options.withDescription("id of the user whose entries the recordings become")),
  moveTo: Options.text("move-to").pipe(
    Options.optional,
    Options.withDescription("move each file here once it is in the journal (default: files are never touched)")
  ),
  settle: Options.float("settle-seconds").pipe(
    Options.withDefault(2),
    Options.withDescription("a file counts as complete once its size and mtime held this long")
  )
}, ({ dir, moveTo, settle, user }) =>
  Effect.gen(function*() {
    const config = yield* serverConfig
    const base = process.env.INIT_CWD ?? process.cwd()
    yield* WatchFolder.run({
      directory: path.resolve(base, dir),
      userId: user as Domain.UserId,
      moveTo: Option.match(moveTo, { onNone: () => undefined, onSome: (d) => path.resolve(base, d) }),
      settle: Duration.seconds(settle),
      onEvent: printWatchEvent
    }).pipe(Effect.provide(journalLayer(config)))
  })).pipe(
    Command.withDescription(
      "Ingest recordings dropped into a folder for a user, once each file is complete; the same bytes are never ingested twice. Runs until stopped."
    )
  )

// --- TLS for phones on the LAN ----------------------------------------------

/** The addresses a phone on the LAN can reach this machine at: its non-internal IPv4 addresses. */
const lanAddresses = () =>
  Object.values(os.networkInterfaces()).flatMap((list) => list ?? [])
    .filter((a) => !a.internal && (a.family === "IPv4" || (a.family as unknown) === 4)) // a number on Node 18.0–18.3
    .map((a) => a.address)

class TlsFailed extends Data.TaggedError("TlsFailed")<{ readonly message: string }> {}

/** Writes a file and flushes it to disk before returning (a cert without its key after a power cut is useless). */
const writeDurably = (file: string, contents: string, mode: number) => {
  const fd = fs.openSync(file, "w", mode)
  try {
    fs.fchmodSync(fd, mode) // `mode` applies only when the file is created
    fs.writeFileSync(fd, contents)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}

const days = (n: number) => new Date(Date.now() + n * 24 * 3600 * 1000)

const tlsHost = Options.text("host").pipe(
  Options.repeated,
  Options.withDescription("IP address or DNS name the phone will use (repeatable; default: this machine's LAN IPv4 addresses); localhost is always included")
)
const tlsOut = Options.text("out").pipe(Options.optional, Options.withDescription("directory for ca.pem, cert.pem, key.pem (default: VJ_DATA_DIR/tls)"))
const tlsForce = Options.boolean("force").pipe(Options.withDescription("replace an existing certificate (phones must then trust the new ca.pem)"))

/**
 * A small CA and a server certificate signed by it, for the LAN address(es).
 * Phones trust the CA once (it is what they install); the server presents
 * the certificate. The CA's private key is not kept: a CA the phone fully
 * trusts could otherwise sign a certificate for any site, so this one can
 * sign nothing more — running the command again makes a new CA.
 * Validity: the certificate 825 days (the longest iOS accepts for a TLS
 * server certificate), the CA 10 years. RSA 2048 / SHA-256 for older phones.
 */
const tlsSelfSigned = Command.make("self-signed", { hosts: tlsHost, out: tlsOut, force: tlsForce }, ({ force, hosts, out }) =>
  Effect.gen(function*() {
    const base = process.env.INIT_CWD ?? process.cwd()
    // only VJ_DATA_DIR: the full server config would read VJ_TLS_CERT, which may not exist yet
    const dataDir = yield* Config.string("VJ_DATA_DIR").pipe(Config.withDefault("./data"))
    const port = yield* Config.port("VJ_PORT").pipe(Config.withDefault(3000))
    const dir = Option.match(out, { onNone: () => path.resolve(base, dataDir, "tls"), onSome: (d) => path.resolve(base, d) })
    const names = [...new Set([...(hosts.length > 0 ? hosts : lanAddresses()), "localhost"])]
    for (const name of names) {
      if (net.isIP(name) === 0 && !/^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/i.test(name)) {
        return yield* new TlsFailed({ message: `--host ${JSON.stringify(name)} is neither an IP address nor a DNS name` })
      }
    }
    const files = { ca: path.join(dir, "ca.pem"), cert: path.join(dir, "cert.pem"), key: path.join(dir, "key.pem") }
    const existing = Object.values(files).filter((f) => fs.existsSync(f))
    if (existing.length > 0 && !force) {
      return yield* new TlsFailed({ message: `${existing.join(", ")} already exist: pass --force to replace them (phones must then trust the new ca.pem)` })
    }
    const caName = `voice-journal local CA (${os.hostname()}, ${new Date().toISOString().slice(0, 10)})`
    const generated = yield* Effect.tryPromise({
      try: async () => {
        const common = { keyType: "rsa", keySize: 2048, algorithm: "sha256" } as const
        const ca = await selfsigned.generate([{ name: "commonName", value: caName }], {
          ...common,
          notAfterDate: days(3650),
          extensions: [
            { name: "basicConstraints", cA: true, pathLenConstraint: 0, critical: true },
            { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true }
          ]
        })
        const leaf = await selfsigned.generate([{ name: "commonName", value: names[0]! }], {
          ...common,
          notAfterDate: days(825),
          ca: { key: ca.private, cert: ca.cert },
          extensions: [
            { name: "basicConstraints", cA: false, critical: true },
            { name: "keyUsage", digitalSignature: true, keyEncipherment: true, critical: true },
            { name: "extKeyUsage", serverAuth: true },
            { name: "subjectAltName", altNames: names.map((n) => (net.isIP(n) !== 0 ? { type: 7 as const, ip: n } : { type: 2 as const, value: n })) }
          ]
        })
        return { ca: ca.cert, cert: leaf.cert, key: leaf.private }
      },
      catch: (e) => new TlsFailed({ message: `could not generate the certificate: ${e instanceof Error ? e.message : String(e)}` })
    })
    yield* Effect.try({
      try: () => {
        fs.mkdirSync(dir, { recursive: true })
        writeDurably(files.key, generated.key, 0o600)
        writeDurably(files.cert, generated.cert, 0o644)
        writeDurably(files.ca, generated.ca, 0o644)
      },
      catch: (e) => new TlsFailed({ message: `could not write to ${dir}: ${e instanceof Error ? e.message : String(e)}` })
    })
    const url = `https://${names[0]}:${port}`
    yield* Console.log([
      `wrote ${files.ca} (the CA: install it on your phones)`,
      `      ${files.cert} (certificate for ${names.join(", ")}, valid 825 days)`,
      `      ${files.key} (its private key, mode 0600; never copy it to a phone)`,
      "",
      "Serve HTTPS with these environment variables (VJ_HOST=0.0.0.0 listens on the LAN, not only loopback):",
      "",
      `VJ_TLS_CERT=${files.cert}`,
      `VJ_TLS_KEY=${files.key}`,
      "VJ_HOST=0.0.0.0",
      "",
      `then open ${url} on the phone, after trusting the CA once:`,
      "",
      "iOS / iPadOS: AirDrop ca.pem to the phone (or download it in Safari), open Settings → Profile Downloaded →",
      "  Install; then Settings → General → About → Certificate Trust Settings → enable full trust for",
      `  "${caName}".`,
      "Android: copy ca.pem to the phone, then Settings → Security → Encryption & credentials →",
      "  Install a certificate → CA certificate → choose ca.pem.",
      "",
      "The CA's own private key was not kept, so it cannot sign anything else; running this command again",
      "makes a new CA, which phones must trust again. A new LAN address needs a new certificate (--host)."
    ].join("\n"))
  })).pipe(Command.withDescription("Make a CA and an HTTPS certificate for this machine's LAN address(es), and print how phones trust it."))

// --- Whisper models -----------------------------------------------------------

const modelsDataDir = Config.string("VJ_DATA_DIR").pipe(
  Config.withDefault("./data"),
  Config.map((d) => path.resolve(process.env.INIT_CWD ?? process.cwd(), d))
)
const mibText = (n: number) => `${(n / 1048576).toFixed(1)} MiB`

class UnknownModel extends Data.TaggedError("UnknownModel")<{ readonly message: string }> {}

/** A one-line progress bar on stderr, redrawn at most every whole percent. */
const progressBar = () => {
  let shown = -1
  return (received: number, total: number) => {
    const pct = Math.floor((received / total) * 100)
    if (pct === shown) return
    shown = pct
    const width = 30
    const done = Math.round((pct / 100) * width)
    process.stderr.write(`\r[${"#".repeat(done)}${"-".repeat(width - done)}] ${String(pct).padStart(3)}% ${mibText(received)} of ${mibText(total)}`)
    if (received >= total) process.stderr.write("\n")
  }
}

const modelsPull = Command.make("pull", {
  name: Args.text({ name: "name" }).pipe(Args.withDefault(Models.defaultModel), Args.withDescription("model name (see models list)"))
}, ({ name }) =>
  Effect.gen(function*() {
    const model = Models.find(name)
    if (model === undefined) {
      return yield* new UnknownModel({ message: `unknown model ${JSON.stringify(name)}: one of ${Models.catalog.map((m) => m.name).join(", ")}` })
    }
    const dir = Models.directory(yield* modelsDataDir)
    const file = yield* Models.pull(model, dir, {
      onStart: (total, from) =>
        process.stderr.write(
          from > 0
            ? `resuming ${model.file}: ${mibText(from)} of ${mibText(total)} already here\n`
            : `downloading ${model.file} (${mibText(total)}) from ${model.url}\n`
        ),
      onProgress: progressBar()
    })
    yield* Console.log(`${file} is ready (SHA-256 verified); serve uses it${model.name === Models.defaultModel ? "" : ` with VJ_WHISPER_MODEL=${model.name}`}`)
  })).pipe(Command.withDescription(
    "Download a Whisper model into VJ_DATA_DIR/models (size shown first; resumable; verified against its pinned SHA-256)."
  ))

const modelsList = Command.make("list", {}, () =>
  Effect.gen(function*() {
    const dataDir = yield* modelsDataDir
    for (const m of Models.catalog) {
      const here = fs.existsSync(Models.pathOf(dataDir, m)) ? "installed" : "—"
      yield* Console.log(`${m.name.padEnd(9)} ${mibText(m.bytes).padStart(10)}  ${here.padEnd(9)}  ${m.summary}${m.name === Models.defaultModel ? " [default]" : ""}`)
    }
  })).pipe(Command.withDescription("List the Whisper models models pull knows, and which are installed."))

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

/** The server said "not now" (429 rate limited, 503 busy): wait for its `Retry-After`, then try again. */
class ServerBusy extends Data.TaggedError("ServerBusy")<{
  readonly status: number
  readonly retryAfterMillis: number | undefined
  readonly message: string
}> {}
/** No answer: the connection was refused or reset (e.g. the server is restarting). Retried a few times. */
class ServerUnreachable extends Data.TaggedError("ServerUnreachable")<{ readonly code: string; readonly message: string }> {}
/** Anything else (a 4xx, a 5xx other than 503, a local read error): final, never retried. */
class RequestFailed extends Data.TaggedError("RequestFailed")<{ readonly message: string }> {}
type CallError = ServerBusy | ServerUnreachable | RequestFailed

/** Codes of a connection that never got an answer from a live server. */
const unreachableCodes = new Set(["ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "EPIPE", "UND_ERR_SOCKET", "UND_ERR_CLOSED"])

/** How long to wait when a busy answer has no (usable) `Retry-After`, and the longest wait honoured. */
const defaultBusyWait = Duration.seconds(5)
const longestBusyWait = Duration.minutes(10)
const seconds = (d: Duration.Duration) => `${Math.ceil(Duration.toMillis(d) / 1000)} s`

/**
 * Retries for one call, told apart by what went wrong: 429/503 wait for the
 * server's `Retry-After` (up to 30 times); a refused or reset connection is
 * retried after 1, 2, 4, 8, 16 s. Each wait is announced on stderr. Every
 * other failure is final.
 */
const withRetries = <A>(label: string, attempt: Effect.Effect<A, CallError>): Effect.Effect<A, CallError> =>
  attempt.pipe(
    Effect.retry(
      Schedule.exponential("1 second").pipe(
        Schedule.intersect(Schedule.recurs(5)),
        Schedule.intersect(Schedule.identity<CallError>()),
        Schedule.whileInput((e: CallError) => e._tag === "ServerUnreachable"),
        Schedule.onDecision(([[delay], e], decision) =>
          ScheduleDecision.isContinue(decision) && e._tag === "ServerUnreachable"
            ? Console.error(`server unreachable (${e.code}): retrying ${label} in ${seconds(delay)}`)
            : Effect.void
        )
      )
    ),
    Effect.retry(
      Schedule.identity<CallError>().pipe(
        Schedule.whileInput((e: CallError) => e._tag === "ServerBusy"),
        Schedule.addDelay(busyWait),
        Schedule.intersect(Schedule.recurs(30)),
        Schedule.onDecision(([e], decision) =>
          ScheduleDecision.isContinue(decision) && e._tag === "ServerBusy"
            ? Console.error(`server busy (${e.status}): waiting ${seconds(busyWait(e))} before retrying ${label}`)
            : Effect.void
        )
      )
    )
  )

const busyWait = (e: CallError): Duration.Duration =>
  e._tag === "ServerBusy" && e.retryAfterMillis !== undefined
    ? Duration.min(Duration.millis(e.retryAfterMillis), longestBusyWait)
    : defaultBusyWait

/**
 * One HTTP call to the server, its JSON answer or a {@link CallError}.
 * `init` is called for every attempt, so a streamed body is fresh each time.
 */
const callOnce = (url: string, key: Redacted.Redacted<string>, pathname: string, init: () => RequestInit) =>
  Effect.tryPromise({
    try: async (signal) => {
      const options = init()
      const response = await fetch(new URL(pathname, url), {
        ...options,
        signal,
        headers: { ...options.headers, authorization: `Bearer ${Redacted.value(key)}` }
      })
      const body = await response.json().catch(() => ({})) as Record<string, unknown>
      return { response, body }
    },
    catch: (e): CallError => {
      const code = Errors.networkErrorCode(e)
      return code !== undefined && unreachableCodes.has(code)
        ? new ServerUnreachable({ code, message: `server unreachable (${code}) at ${url}` })
        : new RequestFailed({ message: `request to ${url} failed: ${e instanceof Error ? e.message : String(e)}` })
    }
  }).pipe(
    Effect.flatMap(({ body, response }): Effect.Effect<Record<string, unknown>, CallError> => {
      if (response.ok) return Effect.succeed(body)
      const message = `${response.status} ${String(body.error ?? "")}: ${String(body.message ?? "")}`
      return response.status === 429 || response.status === 503
        ? Effect.fail(
          new ServerBusy({ status: response.status, retryAfterMillis: Errors.parseRetryAfter(response.headers.get("retry-after")), message })
        )
        : Effect.fail(new RequestFailed({ message }))
    })
  )

/** A GET (or other idempotent call) with the retries of {@link withRetries}. */
const request = (url: string, key: Redacted.Redacted<string>, pathname: string, label: string = pathname) =>
  withRetries(label, callOnce(url, key, pathname, () => ({})))

const stageLine = (entry: Record<string, unknown>) => {
  const state = (k: string) => (entry[k] as { status?: string } | null)?.status ?? "—"
  // a long recording goes in pieces: say which one is on its way
  const t = entry.transcription as { status?: string; piecesDone?: number; piecesTotal?: number | null } | null
  const pieces = t?.status === "processing" && (t.piecesTotal ?? 0) > 1
    ? ` (piece ${Math.min((t.piecesDone ?? 0) + 1, t.piecesTotal!)} of ${t.piecesTotal})`
    : ""
  return `transcription ${state("transcription")}${pieces}, cleanup ${state("cleanup")}, notion ${state("notionSync")}`
}
const finished = (entry: Record<string, unknown>) => {
  const done = (k: string) => ["completed", "success", "failed"].includes((entry[k] as { status?: string } | null)?.status ?? "")
  return done("notionSync") || (done("cleanup") && entry.notionSync === null && (entry.cleanup as { status: string }).status === "failed") ||
    (entry.transcription as { status?: string } | null)?.status === "failed"
}

/**
 * The file's upload, retried as {@link withRetries} says: every attempt opens
 * the file again (a stream read once cannot be sent twice) and shows its own
 * progress on stderr.
 */
const uploadFile = (url: string, key: Redacted.Redacted<string>, file: string) => {
  const name = path.basename(file)
  const size = fs.statSync(file).size
  let body: fs.ReadStream | undefined
  let lineOpen = false
  const endLine = Effect.sync(() => {
    if (lineOpen) process.stderr.write("\n")
    lineOpen = false
  })
  const init = (): RequestInit => {
    let sent = 0
    let shown = -1
    body = fs.createReadStream(file)
    body.on("data", (chunk) => {
      sent += chunk.length
      const pct = size === 0 ? 100 : Math.floor((sent / size) * 100)
      if (pct !== shown && (pct % 10 === 0 || sent === size)) {
        shown = pct
        lineOpen = true
        process.stderr.write(`\r${name}: ${pct}% of ${(size / 1048576).toFixed(1)} MiB`)
      }
    })
    return {
      method: "POST",
      headers: { "content-type": "application/octet-stream", "content-length": String(size), "x-filename": name },
      body: body as unknown as RequestInit["body"],
      duplex: "half"
    } as RequestInit
  }
  const attempt = callOnce(url, key, "/entries", init).pipe(
    // whatever the answer, this attempt's file handle is done; its progress line too
    Effect.ensuring(Effect.zipRight(Effect.sync(() => body?.destroy()), endLine))
  )
  return withRetries(name, attempt)
}

const files = Args.file({ name: "file", exists: "yes" }).pipe(Args.repeated)
const follow = Options.boolean("no-follow").pipe(Options.map((b) => !b), Options.withDescription("do not wait for the pipeline"))
const upload = Command.make("upload", { files, url: serverUrl, key: apiKey, follow }, ({ files, follow, key, url }) =>
  Effect.forEach(files, (file) =>
    Effect.gen(function*() {
      const name = path.basename(file)
      const entry = yield* uploadFile(url, key, file)
      yield* Console.log(`${name} → entry ${String(entry.id)} (${String(entry.mimeType)})`)
      if (!follow) return
      let last = ""
      while (true) {
        const current = yield* request(url, key, `/entries/${String(entry.id)}`, name)
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
    }), { discard: true })).pipe(
    Command.withDescription(
      "Upload recordings to a running server and follow them through the pipeline. Waits and retries when the server answers 429 or 503 (honouring Retry-After) or is restarting."
    )
  )

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

const searchEntries = Command.make("search", {
  words: Args.text({ name: "words" }).pipe(Args.repeated),
  tag: Options.text("tag").pipe(Options.optional, Options.withDescription("only entries with this tag")),
  url: serverUrl,
  key: apiKey,
  limit: Options.integer("limit").pipe(Options.withDefault(20)),
  offset: Options.integer("offset").pipe(Options.withDefault(0))
}, ({ key, limit, offset, tag, url, words }) => {
  const query = new URLSearchParams({ limit: String(limit), offset: String(offset) })
  if (words.length > 0) query.set("q", words.join(" "))
  if (Option.isSome(tag)) query.set("tag", tag.value)
  return request(url, key, `/entries?${query}`).pipe(
    Effect.flatMap((page) =>
      Effect.gen(function*() {
        const items = page.items as Array<Record<string, unknown>>
        yield* Console.log(`${items.length} of ${String(page.total)} matching entries (offset ${offset})`)
        for (const e of items) yield* Console.log(`${String(e.id)}  ${String(e.createdAt)}  ${String(e.title ?? "(untitled)")}`)
      })
    )
  )
}).pipe(Command.withDescription(
  "Search your entries: every word must appear (the last may be the start of one) in the transcript, title, cleaned text or tags; best matches first. --tag keeps only entries with that tag."
))

// --- cleanup templates (client commands) ---------------------------------------

const printTemplate = (t: Record<string, unknown>) =>
  Effect.gen(function*() {
    const sections = (t.sections ?? []) as Array<{ name: string; description: string }>
    yield* Console.log(`${String(t.id)}  ${String(t.name)}`)
    yield* Console.log(`instructions:\n  ${String(t.instructions).replace(/\n/g, "\n  ")}`)
    yield* Console.log(sections.length === 0 ? "sections: none (title, text, summary, actionItems, tags only)" : "sections:")
    for (const s of sections) yield* Console.log(`  ${s.name}: ${s.description}`)
  })

const templatesList = Command.make("list", { url: serverUrl, key: apiKey }, ({ key, url }) =>
  callOnce(url, key, "/templates", () => ({})).pipe(
    (call) => withRetries("/templates", call),
    Effect.flatMap((body) =>
      Effect.gen(function*() {
        const items = body as unknown as Array<Record<string, unknown>>
        if (items.length === 0) yield* Console.log("no templates: cleanups use the built-in journal template")
        for (const t of items) {
          const sections = (t.sections as Array<{ name: string }>).map((s) => s.name)
          yield* Console.log(`${String(t.id)}  ${String(t.name)}${sections.length === 0 ? "" : `  (sections: ${sections.join(", ")})`}`)
        }
      })
    )
  )).pipe(Command.withDescription("List your cleanup templates, by name."))

const templateName = Options.text("name").pipe(Options.withDescription("the template's name (unique among yours)"))
const instructions = Options.text("instructions").pipe(
  Options.optional,
  Options.withDescription("what the model is told to do (its system prompt)")
)
const instructionsFile = Options.file("instructions-file", { exists: "yes" }).pipe(
  Options.optional,
  Options.withDescription("read the instructions from this file instead")
)
const sectionOption = Options.keyValueMap("section").pipe(
  Options.optional,
  Options.withDescription("an extra section, name=description (repeatable), e.g. --section mood=\"how I feel, one sentence\"")
)
const templatesCreate = Command.make(
  "create",
  { url: serverUrl, key: apiKey, name: templateName, instructions, instructionsFile, sections: sectionOption },
  ({ instructions, instructionsFile, key, name, sections, url }) =>
    Effect.gen(function*() {
      const text = Option.isSome(instructionsFile)
        ? fs.readFileSync(instructionsFile.value, "utf8")
        : Option.getOrElse(instructions, () => "")
      const body = {
        name,
        instructions: text,
        sections: Option.match(sections, {
          onNone: () => [],
          onSome: (map) => [...map].map(([name, description]) => ({ name, description }))
        })
      }
      const created = yield* callOnce(url, key, "/templates", () => ({
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body)
      })).pipe((call) => withRetries("/templates", call))
      yield* Console.log(`template ${String(created.id)} (${String(created.name)}) created`)
    })
).pipe(Command.withDescription("Create a cleanup template (instructions from --instructions or --instructions-file)."))

const templateId = Args.text({ name: "template-id" })
const templatesShow = Command.make("show", { url: serverUrl, key: apiKey, id: templateId }, ({ id, key, url }) =>
  request(url, key, `/templates/${encodeURIComponent(id)}`).pipe(Effect.flatMap(printTemplate))).pipe(
    Command.withDescription("Show a template: its instructions and sections.")
  )
const templatesDelete = Command.make("delete", { url: serverUrl, key: apiKey, id: templateId }, ({ id, key, url }) =>
  callOnce(url, key, `/templates/${encodeURIComponent(id)}`, () => ({ method: "DELETE" })).pipe(
    (call) => withRetries(id, call),
    Effect.zipRight(Console.log(`template ${id} deleted`))
  )).pipe(Command.withDescription("Delete a template (refused while a cleanup with it is queued or running)."))

const recleanEntry = Command.make("reclean", {
  url: serverUrl,
  key: apiKey,
  id: Args.text({ name: "entry-id" }),
  template: Options.text("template").pipe(Options.optional, Options.withDescription("a template id (default: the built-in journal template)")),
  primary: Options.boolean("primary").pipe(Options.withDescription("make the new cleanup primary when it completes"))
}, ({ id, key, primary, template, url }) =>
  callOnce(url, key, `/entries/${encodeURIComponent(id)}/cleanups`, () => ({
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ makePrimary: primary, ...Option.match(template, { onNone: () => ({}), onSome: (templateId) => ({ templateId }) }) })
  })).pipe(
    (call) => withRetries(id, call),
    Effect.flatMap((cleanup) => Console.log(`cleanup ${String(cleanup.id)} queued (${String(cleanup.status)})`))
  )).pipe(Command.withDescription("Clean an entry up again, optionally with one of your templates."))

// --- destinations (client commands) -----------------------------------------

const json = (body: unknown): RequestInit => ({ method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) })
const destinationLine = (d: Record<string, unknown>) =>
  `${String(d.id)}  ${String(d.kind)}  ${String(d.name)}  ${JSON.stringify(d.config)}${d.hasSecret === true ? "  (secret stored)" : ""}${
    d.disabledAt !== null && d.disabledAt !== undefined ? `  DISABLED: ${String(d.disabledReason ?? "")}` : ""
  }`

const destinationsAdd = Command.make("add", {
  kind: Args.choice([["notion", "notion"], ["markdown", "markdown"], ["webhook", "webhook"]] as const, { name: "kind" }),
  name: Options.text("name").pipe(Options.withDescription("a name to recognise it by")),
  databaseId: Options.text("database-id").pipe(Options.optional, Options.withDescription("notion: the database id")),
  folder: Options.text("folder").pipe(Options.optional, Options.withDescription("markdown: a folder inside the server's VJ_MARKDOWN_ROOT")),
  keepOnDelete: Options.boolean("keep-on-delete").pipe(Options.withDescription("markdown: keep an entry's file when the entry is deleted")),
  hookUrl: Options.text("hook-url").pipe(Options.optional, Options.withDescription("webhook: the endpoint (http or https)")),
  secret: Options.redacted("secret").pipe(
    Options.withFallbackConfig(Config.redacted("VJ_DESTINATION_SECRET")),
    Options.optional,
    Options.withDescription("notion: the integration token; webhook: a whsec_ signing secret (default: one is made and printed once). Or VJ_DESTINATION_SECRET")
  ),
  url: serverUrl,
  key: apiKey
}, (o) =>
  Effect.gen(function*() {
    const missing = (flag: string) => new RequestFailed({ message: `${o.kind} needs --${flag}` })
    let secret = Option.map(o.secret, Redacted.value)
    let generated = false
    if (o.kind === "webhook" && Option.isNone(secret)) {
      secret = Option.some(Webhook.generateSecret())
      generated = true
    }
    const config = o.kind === "notion"
      ? { databaseId: yield* Option.match(o.databaseId, { onNone: () => Effect.fail(missing("database-id")), onSome: Effect.succeed }) }
      : o.kind === "markdown"
      ? { folder: yield* Option.match(o.folder, { onNone: () => Effect.fail(missing("folder")), onSome: Effect.succeed }), removeOnDelete: !o.keepOnDelete }
      : { url: yield* Option.match(o.hookUrl, { onNone: () => Effect.fail(missing("hook-url")), onSome: Effect.succeed }) }
    const made = yield* callOnce(o.url, o.key, "/destinations", () =>
      json({ kind: o.kind, name: o.name, config, ...(Option.isSome(secret) ? { secret: secret.value } : {}) }))
    yield* Console.log(`destination ${destinationLine(made)}`)
    // the server never shows a secret again: this is the only time it is printed
    if (generated && Option.isSome(secret)) yield* Console.log(`signing secret (configure your receiver with it; shown once):\n${secret.value}`)
  })).pipe(Command.withDescription("Add a destination: a Notion database, a Markdown folder or a signed webhook."))

const destinationsList = Command.make("list", { url: serverUrl, key: apiKey }, ({ key, url }) =>
  request(url, key, "/destinations").pipe(
    Effect.flatMap((list) => Effect.forEach(list as unknown as Array<Record<string, unknown>>, (d) => Console.log(destinationLine(d)), { discard: true }))
  )).pipe(Command.withDescription("List your destinations (secrets are never shown)."))

const destinationId = Args.text({ name: "destination-id" })
const destinationsRemove = Command.make("remove", { id: destinationId, url: serverUrl, key: apiKey }, ({ id, key, url }) =>
  callOnce(url, key, `/destinations/${encodeURIComponent(id)}`, () => ({ method: "DELETE" })).pipe(
    Effect.zipRight(Console.log(`destination ${id} removed`))
  )).pipe(Command.withDescription("Remove a destination and its delivery log."))

const destinationsTest = Command.make("test", { id: destinationId, url: serverUrl, key: apiKey }, ({ id, key, url }) =>
  callOnce(url, key, `/destinations/${encodeURIComponent(id)}/test`, () => ({ method: "POST" })).pipe(
    Effect.flatMap((r) => r.ok === true ? Console.log(`destination ${id}: ok`) : Effect.fail(new RequestFailed({ message: `destination ${id}: ${String(r.error)}` })))
  )).pipe(Command.withDescription("Check a destination works (reach it, authenticate) without delivering an entry."))

const destinationsLog = Command.make("log", {
  destination: Options.text("destination").pipe(Options.optional, Options.withDescription("only this destination")),
  status: Options.text("status").pipe(Options.optional, Options.withDescription("only this status (pending, processing, success, failed, retrying)")),
  limit: Options.integer("limit").pipe(Options.withDefault(20)),
  url: serverUrl,
  key: apiKey
}, ({ destination, key, limit, status, url }) => {
  const query = new URLSearchParams({ limit: String(limit) })
  if (Option.isSome(destination)) query.set("destinationId", destination.value)
  if (Option.isSome(status)) query.set("status", status.value)
  return request(url, key, `/deliveries?${query}`).pipe(
    Effect.flatMap((page) =>
      Effect.forEach(page.items as Array<Record<string, unknown>>, (d) =>
        Console.log(`${String(d.id)}  entry ${String(d.entryId)} → ${String(d.destinationId)}  ${String(d.status)} after ${String(d.attempts)} attempt(s)${
          d.lastError !== null ? `  ${String(d.lastError)}` : ""
        }`), { discard: true })
    )
  )
}).pipe(Command.withDescription("The delivery log: each delivery's destination, status, attempts and last error."))

const destinationsRetry = Command.make("retry", { id: Args.text({ name: "delivery-id" }), url: serverUrl, key: apiKey }, ({ id, key, url }) =>
  callOnce(url, key, `/deliveries/${encodeURIComponent(id)}/retry`, () => ({ method: "POST" })).pipe(
    Effect.zipRight(Console.log(`delivery ${id} queued again`))
  )).pipe(Command.withDescription("Queue a failed delivery again."))

/** @since 0.1.0 */
export const command = Command.make("voice-journal").pipe(
  Command.withSubcommands([
    serve,
    migrate,
    Command.make("users").pipe(Command.withSubcommands([usersCreate])),
    Command.make("keys").pipe(Command.withSubcommands([keysCreate, keysRevoke])),
    upload,
    watch,
    Command.make("entries").pipe(Command.withSubcommands([listEntries, searchEntries, recleanEntry])),
    Command.make("templates").pipe(Command.withSubcommands([templatesList, templatesCreate, templatesShow, templatesDelete])),
    Command.make("destinations").pipe(
      Command.withSubcommands([destinationsAdd, destinationsList, destinationsRemove, destinationsTest, destinationsLog, destinationsRetry])
    ),
    Command.make("tls").pipe(Command.withSubcommands([tlsSelfSigned])),
    Command.make("models").pipe(Command.withSubcommands([modelsPull, modelsList]))
  ])
)

/** @since 0.1.0 */
export const run = Command.run(command, { name: "voice-journal", version: "0.1.0" })

/** @since 0.1.0 */
export const CliLive = NodeContext.layer
