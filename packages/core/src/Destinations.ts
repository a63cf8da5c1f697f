/**
 * A user's destinations: configuring them (validated per kind, secrets
 * sealed with the server key and never handed back) and turning a delivery
 * row's destination id into a ready `Destination` for the pipeline.
 *
 * | kind       | `config`                                                        | secret                       |
 * |------------|-----------------------------------------------------------------|------------------------------|
 * | `notion`   | `databaseId`, optional `titleProperty`, `dateProperty`, `entryIdProperty`, `summaryProperty`, `tagsProperty` | the integration token |
 * | `markdown` | `folder` (inside the server's `markdownRoot`), `removeOnDelete` (default true) | —          |
 * | `webhook`  | `url` (http/https)                                              | `whsec_…` signing secret     |
 *
 * The server-wide Notion (`NOTION_TOKEN`) is the implicit destination
 * `server-notion` of every user, when a `NotionPublisher` is provided.
 *
 * @since 0.2.0
 */
import { Context, Effect, Layer, Option, Redacted, Schema, Scope } from "effect"
import type { Destination as Port, DeliveryError } from "./Destination.js"
import {
  type DestinationId,
  DestinationKind,
  type EntryId,
  serverNotionDestination,
  type StoredDestination,
  type UserId
} from "./Domain.js"
import { type NotFound, PermanentError, type StoreError } from "./Errors.js"
import { JournalStore } from "./JournalStore.js"
import * as MarkdownFolder from "./MarkdownFolder.js"
import * as NotionPublisher from "./NotionPublisher.js"
import { SecretBox, SecretError } from "./SecretBox.js"
import * as Webhook from "./Webhook.js"

/**
 * A destination's settings are not valid for its kind (400).
 * @since 0.2.0
 * @category errors
 */
export class InvalidDestination extends Schema.TaggedError<InvalidDestination>()("InvalidDestination", {
  message: Schema.String
}) {}

const optionalString = Schema.optional(Schema.NonEmptyTrimmedString)

/** Each kind's `config`. */
const configs = {
  notion: Schema.Struct({
    databaseId: Schema.NonEmptyTrimmedString,
    titleProperty: optionalString,
    dateProperty: optionalString,
    entryIdProperty: optionalString,
    summaryProperty: optionalString,
    tagsProperty: optionalString
  }),
  markdown: Schema.Struct({
    folder: Schema.String.pipe(Schema.maxLength(500)),
    removeOnDelete: Schema.optional(Schema.Boolean)
  }),
  webhook: Schema.Struct({
    url: Schema.String.pipe(
      Schema.maxLength(2000),
      Schema.filter((u) => URL.canParse(u) && /^https?:$/.test(new URL(u).protocol) || "must be an http or https URL")
    )
  })
} as const

type Settings =
  | { readonly kind: "notion"; readonly config: typeof configs.notion.Type }
  | { readonly kind: "markdown"; readonly config: typeof configs.markdown.Type }
  | { readonly kind: "webhook"; readonly config: typeof configs.webhook.Type }

/** A kind's config, decoded (unknown keys refused: a typo must not pass silently). */
const decodeSettings = (kind: DestinationKind, config: unknown): Effect.Effect<Settings, string> => {
  const options = { onExcessProperty: "error" } as const
  const decoded = kind === "notion"
    ? Effect.map(Schema.decodeUnknown(configs.notion, options)(config), (c): Settings => ({ kind, config: c }))
    : kind === "markdown"
    ? Effect.map(Schema.decodeUnknown(configs.markdown, options)(config), (c): Settings => ({ kind, config: c }))
    : Effect.map(Schema.decodeUnknown(configs.webhook, options)(config), (c): Settings => ({ kind, config: c }))
  return Effect.mapError(decoded, (e) => e.message)
}

/**
 * What a new destination is made from.
 * @since 0.2.0
 * @category models
 */
export interface NewDestinationInput {
  readonly kind: DestinationKind
  readonly name: string
  readonly config: unknown
  readonly secret?: Redacted.Redacted<string> | undefined
}

/**
 * The server's settings for destinations.
 * @since 0.2.0
 * @category models
 */
export interface DestinationsOptions {
  /** Markdown folders are confined to this directory; without it, Markdown destinations are refused. */
  readonly markdownRoot?: string | undefined
  /** Where users' Notion destinations talk to (default https://api.notion.com; a proxy or a test server). */
  readonly notionBaseUrl?: string | undefined
  /** Requests per second per Notion token. */
  readonly notionRequestsPerSecond?: number | undefined
  /** Hosts webhooks may reach even though they resolve to private or loopback addresses. */
  readonly webhookAllowHosts?: ReadonlyArray<string> | undefined
}

/**
 * @since 0.2.0
 * @category tags
 */
export class Destinations extends Context.Tag("@voice-journal/core/Destinations")<Destinations, {
  /** Destinations every user delivers to without configuring one (the server-wide Notion). */
  readonly implicit: ReadonlyArray<DestinationId>
  /** The destination behind a delivery row, ready to deliver. */
  readonly resolve: (userId: UserId, id: DestinationId) => Effect.Effect<Port, PermanentError | NotFound | StoreError>
  readonly add: (userId: UserId, input: NewDestinationInput) => Effect.Effect<StoredDestination, InvalidDestination | NotFound | StoreError>
  readonly list: (userId: UserId) => Effect.Effect<ReadonlyArray<StoredDestination>, StoreError>
  readonly remove: (userId: UserId, id: DestinationId) => Effect.Effect<void, NotFound | StoreError>
  /** Checks a destination works (reaches it, authenticates), delivering nothing lasting. */
  readonly test: (userId: UserId, id: DestinationId) => Effect.Effect<void, DeliveryError | NotFound | StoreError>
  /**
   * Removes what deliveries of a deleted entry made where the destination
   * does that (Markdown files, when `removeOnDelete`). Failures are logged
   * at warning: the entry is gone either way.
   */
  readonly removeEntry: (
    userId: UserId,
    entryId: EntryId,
    delivered: ReadonlyArray<{ readonly destinationId: DestinationId; readonly externalRef: string | null }>
  ) => Effect.Effect<void>
}>() {}

const kindService = { notion: "notion", markdown: "markdown-folder", webhook: "webhook" } as const

/**
 * Builds the registry on the store in context; the `SecretBox` and the
 * server-wide `NotionPublisher` are used when provided.
 * @since 0.2.0
 * @category constructors
 */
export const make = (options: DestinationsOptions = {}): Effect.Effect<
  typeof Destinations.Service,
  never,
  JournalStore | Scope.Scope
> =>
  Effect.gen(function*() {
    const store = yield* JournalStore
    const box = yield* Effect.serviceOption(SecretBox)
    const server = yield* Effect.serviceOption(NotionPublisher.NotionPublisher)
    const scope = yield* Effect.scope
    const context = yield* Effect.context<never>()
    /** Built adapters by id and version: a Notion publisher keeps its schema and budget between deliveries. */
    const built = new Map<string, { readonly version: number; readonly port: Port }>()

    const secretOf = (d: StoredDestination) =>
      d.sealedSecret === null
        ? Effect.fail(new PermanentError({ service: kindService[d.kind], message: `destination ${d.id} has no secret` }))
        : Option.match(box, {
          onNone: () => Effect.fail(new PermanentError({ service: kindService[d.kind], message: "VJ_SECRET_KEY is not set: the destination's secret cannot be read" })),
          onSome: (b) => b.open(d.sealedSecret!, d.id).pipe(Effect.mapError((e) => new PermanentError({ service: kindService[d.kind], message: e.message })))
        })

    const build = (d: StoredDestination): Effect.Effect<Port, PermanentError> =>
      Effect.gen(function*() {
        const settings = yield* decodeSettings(d.kind, d.config).pipe(
          Effect.mapError((e) => new PermanentError({ service: kindService[d.kind], message: `destination ${d.id}: bad config: ${e}` }))
        )
        switch (settings.kind) {
          case "notion": {
            const c = settings.config
            const publisher = yield* NotionPublisher.make({
              ...c,
              token: yield* secretOf(d),
              baseUrl: options.notionBaseUrl,
              requestsPerSecond: options.notionRequestsPerSecond
            }).pipe(Scope.extend(scope), Effect.provide(context))
            return NotionPublisher.toDestination(publisher)
          }
          case "markdown": {
            const c = settings.config
            if (options.markdownRoot === undefined) {
              return yield* new PermanentError({ service: "markdown-folder", message: "Markdown folders are off on this server (VJ_MARKDOWN_ROOT is not set)" })
            }
            return MarkdownFolder.make({ root: options.markdownRoot, folder: c.folder, removeOnDelete: c.removeOnDelete })
          }
          case "webhook": {
            const c = settings.config
            return Webhook.make({ url: c.url, secret: yield* secretOf(d), allowHosts: options.webhookAllowHosts })
          }
        }
      })

    const resolve = (userId: UserId, id: DestinationId): Effect.Effect<Port, PermanentError | NotFound | StoreError> =>
      Effect.gen(function*() {
        if (id === serverNotionDestination) {
          if (Option.isNone(server)) {
            return yield* new PermanentError({ service: "notion", message: "the server's Notion is not configured any more (NOTION_TOKEN)" })
          }
          return NotionPublisher.toDestination(server.value)
        }
        const d = yield* store.getDestination(userId, id)
        if (d.disabledAt !== null) {
          return yield* new PermanentError({ service: kindService[d.kind], message: `destination "${d.name}" is disabled: ${d.disabledReason ?? "by its owner"}` })
        }
        const version = d.updatedAt.getTime()
        const cached = built.get(d.id)
        if (cached !== undefined && cached.version === version) return cached.port
        const port = yield* build(d)
        built.set(d.id, { version, port })
        return port
      })

    const add = (userId: UserId, input: NewDestinationInput) =>
      Effect.gen(function*() {
        const invalid = (message: string) => new InvalidDestination({ message })
        if (!Schema.is(DestinationKind)(input.kind)) return yield* invalid(`kind must be one of ${DestinationKind.literals.join(", ")}`)
        const name = input.name.trim()
        if (name === "" || name.length > 200) return yield* invalid("name must be 1 to 200 characters")
        const settings = yield* decodeSettings(input.kind, input.config).pipe(Effect.mapError((e) => invalid(`config: ${e}`)))
        const secret = input.secret !== undefined ? Redacted.value(input.secret) : undefined
        if (input.kind === "markdown") {
          if (secret !== undefined) return yield* invalid("a Markdown folder takes no secret")
          if (options.markdownRoot === undefined) return yield* invalid("Markdown folders are off on this server (VJ_MARKDOWN_ROOT is not set)")
          yield* MarkdownFolder.confine(options.markdownRoot, (settings.config as typeof configs.markdown.Type).folder).pipe(
            Effect.mapError((e) => invalid(e.message))
          )
        } else {
          if (secret === undefined || secret === "") {
            return yield* invalid(input.kind === "notion" ? "secret: the Notion integration token is required" : "secret: a whsec_ signing secret is required")
          }
          if (input.kind === "webhook" && !Webhook.isSigningSecret(secret)) {
            return yield* invalid("secret: must be whsec_ followed by base64 of 24 to 64 bytes")
          }
          if (Option.isNone(box)) return yield* invalid("this server cannot store secrets: VJ_SECRET_KEY is not set")
        }
        const id = globalThis.crypto.randomUUID() as DestinationId
        const sealedSecret = input.secret !== undefined && Option.isSome(box) ? yield* box.value.seal(input.secret, id) : null
        return yield* store.createDestination({ id, userId, kind: input.kind, name, config: settings.config, sealedSecret })
      })

    return Destinations.of({
      implicit: Option.isSome(server) ? [serverNotionDestination] : [],
      resolve,
      add,
      list: store.listDestinations,
      remove: (userId, id) => store.deleteDestination(userId, id).pipe(Effect.tap(() => Effect.sync(() => built.delete(id)))),
      test: (userId, id) => Effect.flatMap(resolve(userId, id), (port) => port.test),
      removeEntry: (userId, entryId, delivered) =>
        Effect.forEach(delivered, ({ destinationId, externalRef }) =>
          externalRef === null ? Effect.void : resolve(userId, destinationId).pipe(
            Effect.flatMap((port) => port.remove === undefined ? Effect.void : port.remove(entryId, externalRef)),
            Effect.catchAll((e) => Effect.logWarning(`deleted entry ${entryId}: what destination ${destinationId} holds of it could not be removed`, e))
          ), { discard: true })
    })
  })

/**
 * The registry. Fails at start-up when stored destinations have secrets
 * but no `SecretBox` (no `VJ_SECRET_KEY`) is provided.
 * @since 0.2.0
 * @category layers
 */
export const layer = (options: DestinationsOptions = {}): Layer.Layer<Destinations, SecretError | StoreError, JournalStore> =>
  Layer.scoped(
    Destinations,
    Effect.gen(function*() {
      const store = yield* JournalStore
      const box = yield* Effect.serviceOption(SecretBox)
      if (Option.isNone(box) && (yield* store.hasSealedSecrets)) {
        return yield* new SecretError({ message: "stored destinations have secrets, but VJ_SECRET_KEY is not set: set the key they were sealed with" })
      }
      return yield* make(options)
    })
  )
