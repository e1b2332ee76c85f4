import type { WebSocket } from 'ws'

/**
 * A socket that ignores our close frame is destroyed after this (ws itself waits 30 s); well
 * under a second, so timer lateness never takes it past one.
 */
export const CLOSE_TIMEOUT_MS = 500

/** Closes with a code of the contract; a peer that never answers the close is destroyed. */
export function closeSocket(socket: WebSocket, code: number, reason: string): void {
  if (socket.readyState === socket.CLOSED) return
  if (socket.readyState !== socket.CLOSING) socket.close(code, reason)
  setTimeout(() => socket.terminate(), CLOSE_TIMEOUT_MS).unref()
}
