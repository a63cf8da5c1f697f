/**
 * The connection pool under the store's `PgClient`: node-postgres, with
 * statements prepared once per connection.
 *
 * `@effect/sql-pg` sends every statement unnamed, so PostgreSQL parses and
 * plans it on every call; for the queue's statements (a claim is a few CTEs)
 * that was about half of the server's CPU per job. Here a parameterised
 * SELECT/INSERT/UPDATE/DELETE/WITH is sent as a named statement (the name a
 * hash of its text): parsed and planned once per connection, then only
 * bound and executed. Measured with `pnpm bench:queue`: the server's CPU per
 * job 0.67 → 0.38 ms.
 *
 * Statements with a `*` stay unnamed: a prepared `SELECT *` fails with
 * "cached plan must not change result type" once a migration (another
 * node's, during a rolling upgrade) adds a column. Explicit column lists
 * are re-planned by PostgreSQL after schema changes, safely. At most
 * `maxPreparedPerConnection` statements are kept per connection; past that,
 * new texts go unnamed (statements with long `IN` lists have many texts).
 * @since 0.1.0
 */
import { SqlError } from "@effect/sql"
import { Effect, Redacted, Runtime } from "effect"
import { createHash } from "node:crypto"
import Pg from "pg"

/** Past this many prepared statements on a connection, new texts are sent unnamed. */
export const maxPreparedPerConnection = 500

const preparable = /^\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b/i

/** The prepared statement's name for `text`, or undefined to send it unnamed. */
const statementName = (text: string, prepared: Set<string>): string | undefined => {
  if (!preparable.test(text) || text.includes("*")) return undefined
  const name = `vj_${createHash("sha1").update(text).digest("base64url").slice(0, 27)}`
  if (prepared.has(name)) return name
  if (prepared.size >= maxPreparedPerConnection) return undefined
  prepared.add(name)
  return name
}

/** A node-postgres client that names its parameterised statements (see the module comment). */
export class PreparingClient extends Pg.Client {
  private readonly prepared = new Set<string>()

  // the overloads of `query` are many; this one form is the one @effect/sql-pg uses: (text, values, callback)
  override query(...args: Array<any>): any {
    const [config, values, callback] = args
    if (typeof config === "string" && Array.isArray(values) && typeof callback === "function") {
      const name = statementName(config, this.prepared)
      if (name !== undefined) return super.query({ name, text: config, values }, callback)
    }
    return (super.query as (...a: Array<any>) => any)(...args)
  }
}

/**
 * A pool of {@link PreparingClient}s, ended with the scope. An idle
 * connection's error (the server restarted, an admin ended it) is said at
 * warning: the pool drops that connection and opens another when needed.
 * @since 0.1.0
 */
export const make = (options: {
  readonly url: Redacted.Redacted
  readonly maxConnections: number
  readonly applicationName: string
}) =>
  Effect.gen(function*() {
    const runtime = yield* Effect.runtime<never>()
    const warn = (message: string) => (error: Error) =>
      Runtime.runFork(runtime)(Effect.logWarning(message, error.message))
    return yield* Effect.acquireRelease(
      Effect.sync(() => {
        const pool = new Pg.Pool({
          Client: PreparingClient,
          connectionString: Redacted.value(options.url),
          max: options.maxConnections,
          application_name: options.applicationName
        })
        pool.on("error", warn("PostgreSQL: an idle connection failed; the pool replaces it"))
        return pool
      }),
      (pool) => Effect.promise(() => pool.end()).pipe(Effect.interruptible, Effect.timeoutOption("1 second"))
    ).pipe(
      Effect.tap((pool) =>
        Effect.tryPromise({
          try: () => pool.query("SELECT 1"),
          catch: (cause) => new SqlError.SqlError({ cause, message: "PgClient: Failed to connect" })
        })
      )
    )
  })
