/**
 * API keys: 256 random bits, shown once, stored only as a SHA-256 digest
 * (a slow KDF buys nothing for keys with this much entropy), looked up by
 * digest so comparison happens in the database's index, not in a
 * timing-sensitive string compare.
 *
 * @since 0.1.0
 */
import { Redacted } from "effect"
import { createHash, randomBytes } from "node:crypto"

/** Prefix that makes keys recognisable to secret scanners and people. @since 0.1.0 */
export const prefix = "vj_"

/**
 * A new random key.
 * @since 0.1.0
 */
export const generate = (): Redacted.Redacted<string> => Redacted.make(prefix + randomBytes(32).toString("base64url"))

/**
 * The stored form of a key.
 * @since 0.1.0
 */
export const hash = (key: Redacted.Redacted<string>): string =>
  createHash("sha256").update(Redacted.value(key), "utf8").digest("hex")
