import { defineConfig } from "vitest/config"

// "source" resolves workspace packages to their TypeScript sources (see the exports maps).
export default defineConfig({
  resolve: { conditions: ["source"] },
  ssr: { resolve: { conditions: ["source"] } },
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    fakeTimers: { toFake: undefined },
    // s3rver (the loopback S3 server) makes ListObjectsV2 continuation tokens with DES, which OpenSSL 3 has only in its legacy provider
    poolOptions: { forks: { execArgv: ["--openssl-legacy-provider"] } }
  }
})
