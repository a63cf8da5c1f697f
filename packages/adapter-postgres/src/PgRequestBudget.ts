/**
 * `RequestBudget` on PostgreSQL: one row per budget in `rate_budgets`, so
 * every node that takes from the budget named, say, `notion:…` shares one
 * limit — three nodes at "3 per second" send 3 per second between them,
 * not 9.
 *
 * Each take is one autocommitted `INSERT … ON CONFLICT DO UPDATE …
 * RETURNING` (the row lock serialises concurrent takers; no transaction is
 * held afterwards): it moves the budget's `next_at` on by the tokens taken,
 * computed from the database's `clock_timestamp()` so the nodes' clocks do
 * not matter, and returns when the request may go. The node then sleeps
 * that long on its own — nothing polls the row, nothing spins. The schedule
 * is the one `RequestBudget` documents (GCRA); `blocked_until` holds a
 * server's `Retry-After` for everyone. The table comes from the core
 * migrations (`0003_rate_budgets`).
 *
 * @since 0.1.0
 */
import type { SqlError } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Errors, RequestBudget } from "@voice-journal/core"
import { Duration, Effect, Layer } from "effect"

/**
 * Now on the database's clock, in milliseconds since the epoch, read once
 * per statement (a CTE with a volatile function is evaluated once): the
 * schedule and the grant must use the same instant, or grants drift from
 * the accounting by the statement's own run time.
 */
const clock = "WITH clock AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::double precision AS now)"

interface Row {
  readonly next_at: number
  readonly blocked_until: number
  readonly now: number
}

/**
 * The shared budget on the client's database.
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<RequestBudget.RequestBudgetService, never, PgClient.PgClient> = Effect.gen(function*() {
  const sql = yield* PgClient.PgClient
  const withClock = sql.literal(clock)
  const now = sql.literal("(SELECT now FROM clock)")
  const toTemporary = (what: string) => (e: SqlError.SqlError) =>
    new Errors.TemporaryError({ service: "database", message: `request budget: ${what}: ${e.message}`, cause: e })

  return RequestBudget.make({
    reserve: (limit, tokens = 1) => {
      const step = RequestBudget.millisPerToken(limit)
      const owed = tokens * step
      return sql<Row>`${withClock} INSERT INTO rate_budgets AS b (name, next_at, blocked_until)
          VALUES (${limit.name}, ${now} + ${owed}::double precision, 0)
        ON CONFLICT (name) DO UPDATE SET next_at = greatest(b.next_at, ${now}) + ${owed}::double precision
        RETURNING b.next_at, b.blocked_until, ${now} AS now`.pipe(
        Effect.mapError(toTemporary(`taking from ${limit.name}`)),
        Effect.map(([row]) => {
          const at = Math.max(Number(row!.now), Number(row!.next_at) - RequestBudget.burstOf(limit) * step, Number(row!.blocked_until))
          return { at, wait: Duration.millis(Math.max(0, at - Number(row!.now))) }
        })
      )
    },
    holdOff: (limit, millis) => {
      const pause = Math.max(0, millis)
      // at the end of the pause one request may go, then the steady rate: no burst right after a 429
      const paced = pause + (RequestBudget.burstOf(limit) - 1) * RequestBudget.millisPerToken(limit)
      return sql`${withClock} INSERT INTO rate_budgets AS b (name, next_at, blocked_until)
          VALUES (${limit.name}, ${now} + ${paced}::double precision, ${now} + ${pause}::double precision)
        ON CONFLICT (name) DO UPDATE SET
          blocked_until = greatest(b.blocked_until, EXCLUDED.blocked_until),
          next_at = greatest(b.next_at, EXCLUDED.next_at)`.pipe(
        Effect.mapError(toTemporary(`holding off ${limit.name}`)),
        Effect.asVoid
      )
    }
  })
})

/**
 * The shared budget as a layer (needs the `PgClient` of `PgJournalStore.layer`).
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<RequestBudget.RequestBudget, never, PgClient.PgClient> = Layer.effect(
  RequestBudget.RequestBudget,
  make
)
