/**
 * A `Destination` that POSTs each entry as JSON, signed per the Standard
 * Webhooks spec (https://www.standardwebhooks.com): `webhook-id` (the
 * delivery's id — the same on every retry, so receivers de-duplicate on
 * it), `webhook-timestamp` (seconds) and `webhook-signature`
 * (`v1,base64(HMAC-SHA256(secret, id.timestamp.body))`, the secret being
 * the base64 after `whsec_`). Body: `{ type: "journal.entry", timestamp,
 * data: { entryId, title, text, summary, actionItems, tags, sections,
 * transcript, createdAt, durationSeconds } }`.
 *
 * | Answer                      | Outcome                                              |
 * |-----------------------------|------------------------------------------------------|
 * | 2xx                         | delivered                                            |
 * | 410                         | `DestinationGone`: the endpoint is disabled          |
 * | 429, 408, 409, 5xx, timeout | temporary (`Retry-After` honoured)                   |
 * | 3xx                         | permanent: redirects are never followed              |
 * | other 4xx                   | permanent                                            |
 *
 * **SSRF.** Only http(s) URLs; every address the host resolves to (and a
 * literal IP) must be public — loopback, private, link-local, CGNAT,
 * multicast and unspecified ranges are refused unless the host is on the
 * allow-list (`VJ_WEBHOOK_ALLOW_HOSTS`). The check runs in the socket's own
 * DNS lookup, so the address checked is the address connected to.
 *
 * @since 0.2.0
 */
import { Duration, Effect, Redacted } from "effect"
import * as crypto from "node:crypto"
import * as dns from "node:dns"
import * as http from "node:http"
import * as https from "node:https"
import * as net from "node:net"
import type { Destination, Document } from "./Destination.js"
import { DestinationGone } from "./Destination.js"
import { fromHttpStatus, fromTransportError, parseRetryAfter, PermanentError, TemporaryError } from "./Errors.js"

/**
 * @since 0.2.0
 * @category models
 */
export interface WebhookConfig {
  readonly url: string
  /** `whsec_<base64>`: the receiver verifies with the same secret. */
  readonly secret: Redacted.Redacted<string>
  /** Host names or IPs that may resolve to private or loopback addresses. */
  readonly allowHosts?: ReadonlyArray<string> | undefined
  /** Per request. Default 15 seconds. */
  readonly timeout?: Duration.DurationInput | undefined
}

/**
 * A valid signing secret: `whsec_` and base64 of 24 to 64 bytes.
 * @since 0.2.0
 */
export const isSigningSecret = (secret: string): boolean => {
  if (!secret.startsWith("whsec_")) return false
  const b64 = secret.slice(6)
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) return false
  const n = Buffer.from(b64, "base64").length
  return n >= 24 && n <= 64
}

/**
 * A new signing secret (what `voice-journal destinations add webhook` makes when given none).
 * @since 0.2.0
 */
export const generateSecret = (): string => `whsec_${crypto.randomBytes(32).toString("base64")}`

/**
 * The `webhook-signature` header value for one message.
 * @since 0.2.0
 */
export const sign = (secret: Redacted.Redacted<string>, id: string, timestampSeconds: number, body: string): string => {
  const key = Buffer.from(Redacted.value(secret).replace(/^whsec_/, ""), "base64")
  return `v1,${crypto.createHmac("sha256", key).update(`${id}.${timestampSeconds}.${body}`).digest("base64")}`
}

const blocked = new net.BlockList()
for (const [net4, prefix] of [["0.0.0.0", 8], ["10.0.0.0", 8], ["100.64.0.0", 10], ["127.0.0.0", 8], ["169.254.0.0", 16], ["172.16.0.0", 12], ["192.0.0.0", 24], ["192.168.0.0", 16], ["198.18.0.0", 15], ["224.0.0.0", 4], ["240.0.0.0", 4]] as const) {
  blocked.addSubnet(net4, prefix, "ipv4")
}
for (const [net6, prefix] of [["::", 128], ["::1", 128], ["fc00::", 7], ["fe80::", 10], ["ff00::", 8]] as const) blocked.addSubnet(net6, prefix, "ipv6")

/**
 * Whether an address is not on the public internet.
 * @since 0.2.0
 */
export const isPrivateAddress = (address: string): boolean => {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)
  if (mapped !== null) return blocked.check(mapped[1]!, "ipv4")
  const family = net.isIP(address)
  return family === 4 ? blocked.check(address, "ipv4") : family === 6 ? blocked.check(address, "ipv6") : true
}

class Refused extends Error {}

/**
 * @since 0.2.0
 * @category constructors
 */
export const make = (config: WebhookConfig): Destination => {
  const timeout = Duration.decode(config.timeout ?? "15 seconds")
  const allow = new Set((config.allowHosts ?? []).map((h) => h.toLowerCase()))

  const target = Effect.try({
    try: () => new URL(config.url),
    catch: () => new PermanentError({ service: "webhook", message: "the webhook URL is not a URL" })
  }).pipe(Effect.filterOrFail(
    (u) => u.protocol === "http:" || u.protocol === "https:",
    () => new PermanentError({ service: "webhook", message: "the webhook URL must be http or https" })
  ))

  const post = (id: string, body: string) =>
    Effect.flatMap(target, (url) =>
      Effect.async<number, TemporaryError | PermanentError | DestinationGone>((resume, signal) => {
        const host = url.hostname.replace(/^\[|\]$/g, "").toLowerCase()
        const allowed = allow.has(host)
        if (net.isIP(host) !== 0 && !allowed && isPrivateAddress(host)) {
          resume(Effect.fail(refused(host)))
          return
        }
        // the socket's own lookup: the address checked is the one connected to
        const lookup: net.LookupFunction = (hostname, options, callback) =>
          dns.lookup(hostname, { ...options, all: true }, (error, addresses) => {
            if (error) return callback(error, "", 0)
            const list = addresses as unknown as Array<dns.LookupAddress>
            const bad = allowed ? undefined : list.find((a) => isPrivateAddress(a.address))
            if (bad !== undefined) return callback(new Refused(bad.address), "", 0)
            if ((options as { all?: boolean }).all) return (callback as unknown as (e: null, a: Array<dns.LookupAddress>) => void)(null, list)
            callback(null, list[0]!.address, list[0]!.family)
          })
        const timestamp = Math.floor(Date.now() / 1000)
        const request = (url.protocol === "https:" ? https : http).request(url, {
          method: "POST",
          signal,
          lookup,
          headers: {
            "content-type": "application/json",
            "content-length": Buffer.byteLength(body),
            "user-agent": "voice-journal",
            "webhook-id": id,
            "webhook-timestamp": String(timestamp),
            "webhook-signature": sign(config.secret, id, timestamp, body)
          }
        }, (response) => {
          response.resume() // the body is not ours to read; drain it so the socket is freed
          const status = response.statusCode ?? 0
          if (status >= 200 && status < 300) return resume(Effect.succeed(status))
          if (status === 410) {
            return resume(Effect.fail(new DestinationGone({ service: "webhook", message: "the webhook endpoint answered 410 Gone" })))
          }
          if (status >= 300 && status < 400) {
            return resume(Effect.fail(new PermanentError({ service: "webhook", status, message: `the webhook endpoint answered ${status} (redirects are not followed)` })))
          }
          const retryAfterMillis = parseRetryAfter(response.headers["retry-after"])
          resume(Effect.fail(fromHttpStatus("webhook", status, `the webhook endpoint answered ${status}`, { retryAfterMillis })))
        })
        request.on("error", (e) => {
          if (signal.aborted) return
          resume(Effect.fail(e instanceof Refused || (e as { cause?: unknown }).cause instanceof Refused ? refused(e.message) : fromTransportError("webhook", e)))
        })
        request.end(body)
      }).pipe(
        Effect.timeoutFail({
          duration: timeout,
          onTimeout: () => new TemporaryError({ service: "webhook", message: `the webhook endpoint did not answer within ${Duration.format(timeout)}` })
        })
      ))

  return {
    deliver: (document, previous) =>
      Effect.gen(function*() {
        // the message id is the delivery's: recorded first, the same on every retry
        if (previous.externalRef !== document.deliveryId) yield* previous.record(document.deliveryId)
        yield* post(document.deliveryId, JSON.stringify(payload(document)))
        return { externalRef: document.deliveryId }
      }),
    test: post(`test_${crypto.randomUUID()}`, JSON.stringify({ type: "destination.test", timestamp: new Date().toISOString(), data: {} })).pipe(
      Effect.asVoid
    )
  }
}

const refused = (address: string) =>
  new PermanentError({
    service: "webhook",
    message: "the webhook host is a private or loopback address (allow it with VJ_WEBHOOK_ALLOW_HOSTS)",
    detail: address
  })

/**
 * The JSON body of an entry's message.
 * @since 0.2.0
 */
export const payload = (document: Document) => ({
  type: "journal.entry",
  timestamp: new Date().toISOString(),
  data: {
    entryId: document.entryId,
    title: document.title,
    text: document.text,
    summary: document.summary,
    actionItems: document.actionItems,
    tags: document.tags,
    sections: document.sections,
    transcript: document.transcript,
    createdAt: document.createdAt.toISOString(),
    durationSeconds: document.durationSeconds
  }
})
