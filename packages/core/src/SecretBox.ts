/**
 * Secrets at rest (a destination's Notion token or webhook signing secret):
 * AES-256-GCM with the server key (`VJ_SECRET_KEY`, 32 bytes as 64 hex
 * digits or base64), a fresh 96-bit IV per seal, and the owning row's id as
 * associated data, so a sealed value copied onto another row does not open.
 * Sealed form: `v1.<base64url(iv ‖ tag ‖ ciphertext)>`.
 *
 * @since 0.2.0
 */
import { Context, Effect, Layer, Redacted, Schema } from "effect"
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto"

/**
 * The key is missing or malformed, or a sealed value does not open with it
 * (another key, or tampered with). Never carries the key or the plaintext.
 * @since 0.2.0
 * @category errors
 */
export class SecretError extends Schema.TaggedError<SecretError>()("SecretError", {
  message: Schema.String
}) {}

/**
 * @since 0.2.0
 * @category tags
 */
export class SecretBox extends Context.Tag("@voice-journal/core/SecretBox")<SecretBox, {
  readonly seal: (plaintext: Redacted.Redacted<string>, associatedData: string) => Effect.Effect<string>
  readonly open: (sealed: string, associatedData: string) => Effect.Effect<Redacted.Redacted<string>, SecretError>
}>() {}

/**
 * Decodes `VJ_SECRET_KEY`: 64 hex digits or base64 of exactly 32 bytes.
 * (`openssl rand -hex 32` makes one.)
 * @since 0.2.0
 */
export const decodeKey = (key: Redacted.Redacted<string>): Effect.Effect<Buffer, SecretError> => {
  const text = Redacted.value(key).trim()
  const bytes = /^[0-9a-fA-F]{64}$/.test(text) ? Buffer.from(text, "hex") : Buffer.from(text, "base64")
  return bytes.length === 32
    ? Effect.succeed(bytes)
    : Effect.fail(new SecretError({ message: "VJ_SECRET_KEY must be 32 bytes: 64 hex digits or base64 (e.g. `openssl rand -hex 32`)" }))
}

/**
 * @since 0.2.0
 * @category constructors
 */
export const make = (key: Redacted.Redacted<string>): Effect.Effect<typeof SecretBox.Service, SecretError> =>
  Effect.map(decodeKey(key), (k) =>
    SecretBox.of({
      seal: (plaintext, associatedData) =>
        Effect.sync(() => {
          const iv = randomBytes(12)
          const cipher = createCipheriv("aes-256-gcm", k, iv)
          cipher.setAAD(Buffer.from(associatedData, "utf8"))
          const body = Buffer.concat([cipher.update(Redacted.value(plaintext), "utf8"), cipher.final()])
          return `v1.${Buffer.concat([iv, cipher.getAuthTag(), body]).toString("base64url")}`
        }),
      open: (sealed, associatedData) =>
        Effect.try({
          try: () => {
            if (!sealed.startsWith("v1.")) throw new Error("unknown format")
            const raw = Buffer.from(sealed.slice(3), "base64url")
            const decipher = createDecipheriv("aes-256-gcm", k, raw.subarray(0, 12))
            decipher.setAuthTag(raw.subarray(12, 28))
            decipher.setAAD(Buffer.from(associatedData, "utf8"))
            return Redacted.make(Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString("utf8"))
          },
          catch: () => new SecretError({ message: "a stored secret does not open with VJ_SECRET_KEY (was the key changed?)" })
        })
    }))

/**
 * @since 0.2.0
 * @category layers
 */
export const layer = (key: Redacted.Redacted<string>): Layer.Layer<SecretBox, SecretError> => Layer.effect(SecretBox, make(key))
