/**
 * A node:http server on 127.0.0.1 with an Effect-managed lifetime, shared by
 * the loopback fakes. It can be taken down and brought back on the same port
 * to simulate an outage (connection refused).
 */
import { Effect, type Scope } from "effect"
import * as http from "node:http"
import type * as net from "node:net"

export interface LoopbackServer {
  readonly url: string
  readonly port: number
  /** Stop listening: new connections are refused until `up()`. */
  readonly down: () => Promise<void>
  readonly up: () => Promise<void>
}

export const make = (
  handler: http.RequestListener,
  onClose: () => void = () => {}
): Effect.Effect<LoopbackServer, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      /**
       * An async handler whose client went away mid-request (a server under
       * test killed or shut down while it sent) fails reading the body with
       * "aborted": there is no one left to answer, so it ends here. Any other
       * failure is a bug in the fake and still surfaces as unhandled.
       */
      const serve: http.RequestListener = (req, res) => {
        const handled = handler(req, res) as unknown
        if (handled instanceof Promise) {
          handled.catch((cause: unknown) => {
            if (req.destroyed && (cause as { code?: string }).code === "ECONNRESET") return res.destroy()
            throw cause
          })
        }
      }
      let server: http.Server | undefined
      const sockets = new Set<net.Socket>()
      const listen = (port: number) =>
        new Promise<number>((resolve) => {
          server = http.createServer(serve)
          server.on("connection", (s) => {
            sockets.add(s)
            s.on("close", () => sockets.delete(s))
          })
          server.listen(port, "127.0.0.1", () => resolve((server!.address() as net.AddressInfo).port))
        })
      const close = () =>
        new Promise<void>((resolve) => {
          if (server === undefined) return resolve()
          for (const s of sockets) s.destroy()
          server.close(() => resolve())
          server = undefined
        })
      const port = await listen(0)
      return { url: `http://127.0.0.1:${port}`, port, down: close, up: () => listen(port).then(() => undefined), close }
    }),
    (s) => Effect.promise(() => (onClose(), s.close()))
  )
