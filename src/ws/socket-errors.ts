import type { FastifyBaseLogger } from 'fastify'
import type { WebSocket } from 'ws'
import { closeSocket } from './close-socket.ts'

/**
 * ws's own checks of what a client sent (WS_ERR_UNSUPPORTED_MESSAGE_LENGTH for a frame over
 * MAX_PAYLOAD_BYTES, WS_ERR_INVALID_UTF8, an unmasked frame, a bad opcode...). ws has already
 * answered with the close code that names the fault (1009, 1007, 1002).
 */
export function isClientProtocolError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && code.startsWith('WS_ERR_')
}

/**
 * @fastify/websocket's errorHandler. A client breaking the protocol is the client's problem:
 * one info line with ws's code, no stack, and the close ws started is let through (the default
 * handler logs at error and terminates, so the client saw 1006 instead of 1009). Anything else
 * is our failure: error, and the socket is dropped.
 */
export function onSocketError(err: Error, socket: WebSocket, { log }: { log: FastifyBaseLogger }): void {
  if (isClientProtocolError(err)) {
    log.info({ code: (err as Error & { code: string }).code, reason: err.message }, 'client broke the WebSocket protocol: closing')
    closeSocket(socket, 1002, 'protocol error')
    return
  }
  log.error({ err }, 'WebSocket handler failed')
  socket.terminate()
}
