import type { Duplex } from 'node:stream'
import type { WebSocket } from 'ws'

/**
 * The TCP socket under a ws WebSocket: ws exposes no 'drain' and no write batching, and its
 * `bufferedAmount` is this socket's write queue.
 */
export function rawSocket(socket: WebSocket): Duplex | undefined {
  return (socket as unknown as { _socket?: Duplex | null })._socket ?? undefined
}
