import { describe, expect, it } from "@effect/vitest"
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { RequestBudget } from "@voice-journal/core"
import { Context, Effect, Layer, Redacted } from "effect"
import * as RequestBudgetSuite from "../../core/test/support/RequestBudgetSuite.js"
import { PgJournalStore, PgRequestBudget, PgTestDatabase } from "../src/index.js"

/** A migrated fresh database; every build of the layer is a new pool on it (another node). */
const freshBackend = Effect.gen(function*() {
  const url = yield* PgTestDatabase.freshDatabase()
  yield* Layer.build(PgJournalStore.layerClient({ url, maxConnections: 2 })) // runs the migrations (one connection holds the lock)
  return PgRequestBudget.layer.pipe(Layer.provideMerge(PgClient.layer({ url: Redacted.make(url), maxConnections: 4 })))
})

RequestBudgetSuite.run("PostgreSQL", { freshBackend })

describe("PgRequestBudget", () => {
  it.scoped("twelve connections on three pools racing for one budget: one row, each grant counted once, within the limit", () =>
    Effect.gen(function*() {
      const layer = yield* freshBackend
      const pools = yield* Effect.forEach([1, 2, 3], () => Layer.build(layer))
      const limit: RequestBudget.Limit = { name: "notion:race", perSecond: 3, burst: 3 }
      const grants = (yield* Effect.forEach(
        pools.flatMap((ctx) => Array.from({ length: 4 }, () => Context.get(ctx, RequestBudget.RequestBudget))),
        (budget) => Effect.forEach(Array.from({ length: 10 }), () => budget.reserve(limit)),
        { concurrency: "unbounded" }
      )).flat()
      expect(grants.length).toBe(120)
      expect(RequestBudgetSuite.shortfall(grants, limit)).toBeLessThan(0.01)
      // distinct slots: 120 grants on one budget, never two in the same slot after the burst
      expect(new Set(grants.map((g) => g.at.toFixed(3))).size).toBeGreaterThanOrEqual(120 - 3)
      const sql = Context.get(pools[0]!, SqlClient.SqlClient)
      const rows = yield* sql<{ name: string }>`SELECT name FROM rate_budgets`
      expect(rows.map((r) => r.name)).toEqual(["notion:race"])
    }))
})
