import { Type } from '@sinclair/typebox'
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { WebSocket } from 'ws'
import type { Config } from '../config.ts'
import type { Claims, UpgradeAuth } from '../plugins/auth.ts'
import { CloseCode } from '../protocol/index.ts'
import { closeSocket } from './close-socket.ts'
import { rawSocket } from './raw-socket.ts'
import { onSocketError } from './socket-errors.ts'
import type { FlowLimits } from './socket-flow.ts'

/** What every WebSocket route shares: the upgrade's checks, the heartbeat, the limits (/ws/agent, /ws/ai-sdk). */

// A repeated token is accepted here so that auth answers it (4001 after the upgrade), not a 400.
export const UpgradeQuery = Type.Object({ token: Type.Optional(Type.Union([Type.String(), Type.Array(Type.String())])) })

/** onRequest of an upgrade: a draining instance answers 503, so the load balancer tries another. */
export function refuseWhileDraining(app: FastifyInstance) {
  // A callback hook: an instance that is not draining goes on in the same turn.
  return (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void => {
    if (!app.lifecycle.draining) return done()
    app.metrics.connectionsOpened.inc({ result: 'draining' })
    request.log.info('upgrade refused: draining')
    // Answered here, so `done` is not called: Fastify stops at a sent reply.
    void reply.code(503).header('retry-after', '1').send({ error: 'draining', message: 'this instance is shutting down' })
  }
}

/**
 * The upgraded socket's claims, or undefined once it was closed with the contract's code: a
 * failed authentication (4001/4003), then the guards' refusal (4029, or 1011 when the store
 * cannot answer: a browser can read a close code, not a failed handshake's status, and 1011
 * says "back off, then reconnect and resume").
 */
export function admittedClaims(app: FastifyInstance, socket: WebSocket, request: FastifyRequest, logFields: Record<string, unknown> = {}): Claims | undefined {
  // Set by authenticateUpgrade in the route's preValidation, before any handler runs.
  const auth = request.upgradeAuth as UpgradeAuth
  if (!auth.ok) {
    request.log.info({ closeCode: auth.code, reason: auth.reason, ...logFields }, 'upgrade refused')
    app.metrics.connectionsOpened.inc({ result: auth.code === CloseCode.forbiddenOrigin ? 'forbidden_origin' : 'unauthorized' })
    closeSocket(socket, auth.code, auth.reason)
    return undefined
  }
  const refusal = app.guards.refusal(request)
  if (refusal) {
    request.log.info({ closeCode: refusal.code, reason: refusal.reason, userId: auth.claims.sub, ...logFields }, 'upgrade refused')
    if (refusal.code === CloseCode.tooManyConnections) app.metrics.connectionsOpened.inc({ result: 'too_many' })
    closeSocket(socket, refusal.code, refusal.reason)
    return undefined
  }
  return auth.claims
}

interface Alive {
  alive: boolean
  readonly socket: WebSocket
  readonly log: FastifyRequest['log']
}

/** Protocol pings every HEARTBEAT_INTERVAL_MS; a connection that missed the last one is terminated. */
export function startHeartbeat(app: FastifyInstance, connections: ReadonlySet<Alive>, intervalMs: number): void {
  const heartbeat = setInterval(() => {
    for (const connection of connections) {
      if (!connection.alive) {
        connection.log.info('heartbeat missed: terminating')
        connection.socket.terminate()
        continue
      }
      connection.alive = false
      connection.socket.ping()
    }
  }, intervalMs)
  heartbeat.unref()
  app.addHook('onClose', async () => clearInterval(heartbeat))
}

/** The per-connection limits both dialects apply. */
export function connectionLimits(app: FastifyInstance, config: Config): { maxContentChars: number; maxPendingFrames: number; maxWatched: number; flow: FlowLimits } {
  return {
    maxContentChars: config.MAX_CONTENT_CHARS,
    maxPendingFrames: config.MAX_PENDING_FRAMES,
    maxWatched: config.MAX_WATCHED_PER_CONNECTION,
    flow: { highWaterMark: app.guards.highWaterMark, maxBufferedBytes: config.MAX_BUFFERED_BYTES, slowClientTimeoutMs: config.SLOW_CLIENT_TIMEOUT_MS },
  }
}

/**
 * Lets the upgrade's HTTP objects go once the connection is made. @fastify/websocket's
 * 'error' listener closes over the request and the reply, and the TCP socket still points at
 * the handshake's ServerResponse: kept for the connection's life, that is the request, its
 * headers (the bearer token among them) and the response, about 3 KB per idle connection.
 * The listener is replaced by one that holds only the connection (the same handler runs,
 * with the connection's logger), and the response is detached from the socket
 * (`_httpMessage`: Node's link from a socket to the response it carries).
 */
export function releaseHandshake(socket: WebSocket, connection: { readonly log: FastifyBaseLogger }): void {
  const raw = rawSocket(socket) as (Socket & { _httpMessage?: ServerResponse | null }) | undefined
  if (raw?._httpMessage) raw._httpMessage.detachSocket(raw)
  socket.removeAllListeners('error')
  socket.on('error', (err) => onSocketError(err, socket, connection))
}
