/**
 * A loopback webhook receiver that verifies every request with the
 * `standardwebhooks` package (the reference implementation of the Standard
 * Webhooks spec), as a receiver in n8n, Zapier or Home Assistant would, and
 * records what arrived. Scriptable: `failNext(fault, times)` answers with a
 * status (500, 429 + Retry-After, 410 …), a reset or no answer;
 * `applyThenHang()` records the next message but never answers it (the
 * sender sees a timeout, or dies waiting, after the receiver got it).
 */
import { Effect, type Scope } from "effect"
import { Webhook } from "standardwebhooks"
import { type Fault, FaultQueue, readBody } from "./Faults.js"
import * as LoopbackServer from "./LoopbackServer.js"

export interface ReceivedMessage {
  readonly id: string
  readonly timestamp: string
  /** Whether `standardwebhooks` accepted the signature (and timestamp). */
  readonly verified: boolean
  readonly payload: unknown
  /** What this request was answered with (0: not answered). */
  readonly answered: number
}

export interface FakeWebhookReceiver {
  readonly url: string
  readonly secret: string
  readonly received: () => ReadonlyArray<ReceivedMessage>
  readonly failNext: (fault: Fault, times?: number) => void
  readonly applyThenHang: () => void
}

export const make = (): Effect.Effect<FakeWebhookReceiver, never, Scope.Scope> =>
  Effect.gen(function*() {
    const secret = `whsec_${Buffer.from(globalThis.crypto.getRandomValues(new Uint8Array(32))).toString("base64")}`
    const verifier = new Webhook(secret)
    const faults = new FaultQueue()
    const received: Array<ReceivedMessage> = []
    let hangNext = 0
    const server = yield* LoopbackServer.make(async (req, res) => {
      const body = (await readBody(req)).toString("utf8")
      const headers = {
        "webhook-id": String(req.headers["webhook-id"] ?? ""),
        "webhook-timestamp": String(req.headers["webhook-timestamp"] ?? ""),
        "webhook-signature": String(req.headers["webhook-signature"] ?? "")
      }
      let verified = true
      let payload: unknown
      try {
        payload = verifier.verify(body, headers)
      } catch {
        verified = false
        payload = JSON.parse(body)
      }
      const record = (answered: number) =>
        void received.push({ id: headers["webhook-id"], timestamp: headers["webhook-timestamp"], verified, payload, answered })
      if (hangNext > 0) {
        hangNext--
        record(0)
        faults.hanging.add(res)
        return
      }
      if (faults.apply(req, res)) return record(res.statusCode)
      if (!verified) return record(res.writeHead(401).end().statusCode)
      record(204)
      res.writeHead(204).end()
    }, () => faults.destroyHanging())
    return {
      url: `${server.url}/hook`,
      secret,
      received: () => [...received],
      failNext: (fault, times) => faults.failNext(fault, times),
      applyThenHang: () => void hangNext++
    }
  })
