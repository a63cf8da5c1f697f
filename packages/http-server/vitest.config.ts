import { defineConfig } from "vitest/config"

// "source" resolves workspace packages to their TypeScript sources (see the exports maps).
export default defineConfig({
  resolve: { conditions: ["source"] },
  ssr: { resolve: { conditions: ["source"] } },
  test: {
    globalSetup: ["../adapter-postgres/test/globalSetup.ts", "test/support/buildWeb.ts"],
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    fakeTimers: { toFake: undefined }
  }
})
