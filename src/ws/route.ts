import websocket from '@fastify/websocket'
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { CloseCode, CloseReason } from '../protocol/index.ts'
import type { Config } from '../config.ts'
import { Connection, closeSocket } from './connection.ts'
import type { ClientFrame } from '../protocol/index.ts'
import { onSocketError } from './socket-errors.ts'
import { selectSubprotocol } from './subprotocol.ts'
import { admittedClaims, connectionLimits, refuseWhileDraining, releaseHandshake, startHeartbeat, UpgradeQuery } from './upgrade.ts'

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

  startHeartbeat(app, connections, config.HEARTBEAT_INTERVAL_MS)
  // The same for every connection: one object, not one per handshake.
  const limits = {
    ...connectionLimits(app, config),
    invalidFrameLimit: app.guards.invalidFrames.limit,
    invalidFrameWindowMs: app.guards.invalidFrames.windowMs,
  }

  app.get(
    '/ws/agent',
    {
      websocket: true,
      schema: { querystring: UpgradeQuery },
      onRequest: refuseWhileDraining(app),
      // Authenticate first; then the connection cap counts the user's connection (guards).
      preValidation: [app.authenticateUpgrade, app.guards.reserveConnection],
    },
    (socket, request) => {
      const claims = admittedClaims(app, socket, request)
      if (!claims) return
      const connection = new Connection({
        socket,
        claims,
        sessions: app.sessions,
        verifyToken: app.verifyToken,
        log: app.log,
        requestId: request.id,
        limits,
        admit: options.admit,
        onClose: (closed) => connections.delete(closed),
        observer: app.metrics.connectionObserver,
      })
      connections.add(connection)
      releaseHandshake(socket, connection)
    },
  )
}

/**
 * Not encapsulated: @fastify/websocket's hooks must cover every route and the 404 handler,
 * or an upgrade request answered by anything but this route (a mistyped path, a plain HTTP
 * route) leaves its socket open forever, and `app.close()` waits on it.
 */
export default fp(agentRoute, { name: 'agent-route', fastify: '5.x', dependencies: ['auth', 'guards', 'sessions', 'lifecycle'] })
