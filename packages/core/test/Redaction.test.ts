/**
 * `redactInternals`: the last line of defence before a stage's reason is
 * stored as `lastError`, which users see. Inputs are what ffmpeg, ffprobe,
 * transcription engines and servers really print.
 */
import { describe, expect, it } from "@effect/vitest"
import { redactInternals } from "../src/Errors.js"

describe("redactInternals", () => {
  const cases: ReadonlyArray<readonly [string, string]> = [
    ["undecodable audio: /srv/vj/data/audio/c82a0af3-aace-4aa0-a2f2-a612123a4e05: End of file", "undecodable audio: <path>: End of file"],
    ["[ogg @ 0x5582bcdbf5c0] CRC mismatch!\n[aac @ 0x55bdaa4397c0] Input buffer exhausted", "CRC mismatch! Input buffer exhausted"],
    ["cat: /tmp/x/5c56344e-ba4f-4489-b019-921d62df92bf.absent: No such file or directory", "cat: <path>: No such file or directory"],
    ["open '/var/lib/vj/my notes.wav' failed", "open <path> failed"],
    ["C:\\Users\\me\\audio\\a.wav and ~/rec/b.wav", "<path> and <path>"],
    ["blob 2a8dbb09-4f51-4500-ad6e-8da830161224 is gone; fault at 0x7ffde1234", "blob <id> is gone; fault at <address>"]
  ]
  for (const [input, expected] of cases) {
    it(`redacts: ${input.slice(0, 40)}`, () => expect(redactInternals(input)).toBe(expected))
  }

  it("leaves what helps the user: URLs, words with slashes, HTTP codes, instructions", () => {
    const text = "model 'llama3.2' not found on http://127.0.0.1:11434/api: run `ollama pull llama3.2` (HTTP 404, and/or 4xx/5xx)"
    expect(redactInternals(text)).toBe(text)
  })
})
