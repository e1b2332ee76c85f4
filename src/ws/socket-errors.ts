import type { FastifyBaseLogger } from 'fastify'
import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { WebSocket } from 'ws'
import { closeSocket } from './close-socket.ts'
import { rawSocket } from './raw-socket.ts'

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

/**
 * Lets the upgrade's HTTP objects go once the connection is made. @fastify/websocket's
 * 'error' listener closes over the request and the reply, and the TCP socket still points at
 * the handshake's ServerResponse: kept for the connection's life, that is the request, its
 * headers (the bearer token among them) and the response, about 3 KB per idle connection.
 * The listener is replaced by one that holds only the connection's logger (the same handler
 * runs), and the response is detached from the socket (`_httpMessage`: Node's link from a
 * socket to the response it carries).
 */
export function releaseHandshake(socket: WebSocket, log: FastifyBaseLogger): void {
  const raw = rawSocket(socket) as (Socket & { _httpMessage?: ServerResponse | null }) | undefined
  if (raw?._httpMessage) raw._httpMessage.detachSocket(raw)
  socket.removeAllListeners('error')
  socket.on('error', (err) => onSocketError(err, socket, { log }))
}
