/**
 * Scriptable failures for the loopback fakes (Ollama, Notion, OpenAI
 * transcription): each fake keeps a queue of faults and applies the next one
 * to the next matching request instead of answering normally.
 */
import type * as http from "node:http"

export type Fault =
  | { readonly kind: "status"; readonly status: number; readonly body?: unknown; readonly headers?: Record<string, string> }
  | { readonly kind: "refuse" } // destroy the socket: the client sees a reset
  | { readonly kind: "hang" } // never answer
  | { readonly kind: "malformed" } // 200 with a body that is not valid JSON

export class FaultQueue {
  private readonly queue: Array<{ fault: Fault; match: ((req: http.IncomingMessage) => boolean) | undefined }> = []
  /** Sockets held by "hang" faults, destroyed when the fake closes. */
  readonly hanging = new Set<http.ServerResponse>()

  /** The next `times` requests (matching `match`, if given) get `fault`. */
  failNext(fault: Fault, times = 1, match?: (req: http.IncomingMessage) => boolean): void {
    for (let i = 0; i < times; i++) this.queue.push({ fault, match })
  }

  clear(): void {
    this.queue.length = 0
  }

  /** Applies a queued fault to this request, if one matches; true if it did. */
  apply(req: http.IncomingMessage, res: http.ServerResponse): boolean {
    const index = this.queue.findIndex((q) => q.match === undefined || q.match(req))
    if (index < 0) return false
    const { fault } = this.queue.splice(index, 1)[0]!
    switch (fault.kind) {
      case "refuse":
        req.socket.destroy()
        return true
      case "hang":
        this.hanging.add(res)
        return true
      case "malformed":
        res.writeHead(200, { "content-type": "application/json" }).end("{ this is not json")
        return true
      case "status":
        res.writeHead(fault.status, { "content-type": "application/json", ...fault.headers })
          .end(typeof fault.body === "string" ? fault.body : JSON.stringify(fault.body ?? {}))
        return true
    }
  }

  destroyHanging(): void {
    for (const res of this.hanging) res.socket?.destroy()
    this.hanging.clear()
  }
}

/** Reads a whole request body (the fakes are small test servers). */
export const readBody = (req: http.IncomingMessage): Promise<Buffer> =>
  new Promise((resolve, reject) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => resolve(Buffer.concat(chunks)))
    req.on("error", reject)
  })
