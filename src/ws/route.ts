import websocket from '@fastify/websocket'
import fp from 'fastify-plugin'
import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { CloseCode, CloseReason } from '../protocol/index.ts'
import type { Config } from '../config.ts'
import { Connection, closeSocket } from './connection.ts'
import type { ClientFrame } from '../protocol/index.ts'
import type { UpgradeAuth } from '../plugins/auth.ts'
import { onSocketError } from './socket-errors.ts'
import { selectSubprotocol } from './subprotocol.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** Open agent connections on this instance. */
    connections: Set<Connection>
  }
}

export interface AgentRouteOptions {
  config: Config
  /** Guards (rate limits, connection caps) run before each frame is served. */
  admit?: (connection: Connection, frame: ClientFrame) => Promise<void> | void
}

// A repeated token is accepted here so that auth answers it (4001 after the upgrade), not a 400.
const UpgradeQuery = Type.Object({ token: Type.Optional(Type.Union([Type.String(), Type.Array(Type.String())])) })

async function agentRoute(app: FastifyInstance, options: AgentRouteOptions) {
  const { config } = options
  const connections = new Set<Connection>()
  app.decorate('connections', connections)

  await app.register(websocket, {
    options: {
      maxPayload: config.MAX_PAYLOAD_BYTES,
      perMessageDeflate: false,
      // Select agent.v1 (ai-sdk.v1 on /ws/ai-sdk); never echo the bearer.<jwt> protocol that carried the token.
      handleProtocols: (protocols, request) => selectSubprotocol(protocols, request.url),
    },
    // Replaces the default (close with no code): drain, then close 1012 (see lifecycle).
    preClose: () => app.drain(),
    errorHandler: onSocketError,
  })

  app.lifecycle.onDrained(() => {
    for (const connection of connections) connection.close(CloseCode.serviceRestart, CloseReason.serviceRestart)
    for (const socket of app.websocketServer.clients) closeSocket(socket, CloseCode.serviceRestart, CloseReason.serviceRestart)
  })

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
  }, config.HEARTBEAT_INTERVAL_MS)
  heartbeat.unref()
  app.addHook('onClose', async () => clearInterval(heartbeat))

  app.get(
    '/ws/agent',
    {
      websocket: true,
      schema: { querystring: UpgradeQuery },
      onRequest: async (request, reply) => {
        if (!app.lifecycle.draining) return
        app.metrics.connectionsOpened.inc({ result: 'draining' })
        request.log.info('upgrade refused: draining')
        await reply.code(503).header('retry-after', '1').send({ error: 'draining', message: 'this instance is shutting down' })
      },
      // Authenticate first; then the connection cap counts the user's connection (guards).
      preValidation: [app.authenticateUpgrade, app.guards.reserveConnection],
    },
    (socket, request) => {
      // Set by authenticateUpgrade in this route's preValidation, before any handler runs.
      const auth = request.upgradeAuth as UpgradeAuth
      if (!auth.ok) {
        request.log.info({ closeCode: auth.code, reason: auth.reason }, 'upgrade refused')
        app.metrics.connectionsOpened.inc({ result: auth.code === CloseCode.forbiddenOrigin ? 'forbidden_origin' : 'unauthorized' })
        closeSocket(socket, auth.code, auth.reason)
        return
      }
      // A store that cannot answer (Redis down; the connection cap asks it first) closes 1011
      // `store unavailable` after the upgrade rather than an HTTP 503 before it: a browser can
      // read a close code, not a failed handshake's status, and 1011 says "back off, then
      // reconnect and resume". Fast: the Redis client fails commands at once while down.
      const refusal = app.guards.refusal(request)
      if (refusal) {
        request.log.info({ closeCode: refusal.code, reason: refusal.reason, userId: auth.claims.sub }, 'upgrade refused')
        if (refusal.code === CloseCode.tooManyConnections) app.metrics.connectionsOpened.inc({ result: 'too_many' })
        closeSocket(socket, refusal.code, refusal.reason)
        return
      }
      const connection = new Connection({
        socket,
        claims: auth.claims,
        sessions: app.sessions,
        verifyToken: app.verifyToken,
        log: request.log,
        limits: {
          maxContentChars: config.MAX_CONTENT_CHARS,
          invalidFrameLimit: app.guards.invalidFrames.limit,
          invalidFrameWindowMs: app.guards.invalidFrames.windowMs,
          maxPendingFrames: config.MAX_PENDING_FRAMES,
          maxWatched: config.MAX_WATCHED_PER_CONNECTION,
          flow: {
            highWaterMark: app.guards.highWaterMark,
            maxBufferedBytes: config.MAX_BUFFERED_BYTES,
            slowClientTimeoutMs: config.SLOW_CLIENT_TIMEOUT_MS,
          },
        },
        admit: options.admit,
        onClose: (closed) => connections.delete(closed),
        observer: app.metrics.connectionObserver,
      })
      connections.add(connection)
    },
  )
}

/**
 * Not encapsulated: @fastify/websocket's hooks must cover every route and the 404 handler,
 * or an upgrade request answered by anything but this route (a mistyped path, a plain HTTP
 * route) leaves its socket open forever, and `app.close()` waits on it.
 */
export default fp(agentRoute, { name: 'agent-route', fastify: '5.x', dependencies: ['auth', 'guards', 'sessions', 'lifecycle'] })
