import websocket from '@fastify/websocket'
import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { CloseCode, CloseReason, SUBPROTOCOL } from '../protocol/index.ts'
import type { Config } from '../config.ts'
import { Connection, closeSocket } from './connection.ts'
import type { ClientFrame } from '../protocol/index.ts'

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

const UpgradeQuery = Type.Object({ token: Type.Optional(Type.String()) })

/** A connection that answers nothing else still gets this many invalid frames per window. */
const INVALID_FRAME_LIMIT = 20
const INVALID_FRAME_WINDOW_MS = 10_000

export default async function agentRoute(app: FastifyInstance, options: AgentRouteOptions) {
  const { config } = options
  const connections = new Set<Connection>()
  app.decorate('connections', connections)

  await app.register(websocket, {
    options: {
      maxPayload: config.MAX_PAYLOAD_BYTES,
      perMessageDeflate: false,
      // Select agent.v1; never echo the bearer.<jwt> protocol that carried the token.
      handleProtocols: (protocols) => (protocols.has(SUBPROTOCOL) ? SUBPROTOCOL : false),
    },
    // Replaces the default (close with no code): drain, then close 1012 (see lifecycle).
    preClose: () => app.drain(),
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
        request.log.info('upgrade refused: draining')
        await reply.code(503).header('retry-after', '1').send({ error: 'draining', message: 'this instance is shutting down' })
      },
      preValidation: app.authenticateUpgrade,
    },
    (socket, request) => {
      const auth = request.upgradeAuth
      if (!auth?.ok) {
        const failure = auth ?? { code: CloseCode.unauthorized, reason: CloseReason.missingToken }
        request.log.info({ closeCode: failure.code, reason: failure.reason }, 'upgrade refused')
        closeSocket(socket, failure.code, failure.reason)
        return
      }
      const connection = new Connection({
        socket,
        claims: auth.claims,
        registry: app.sessions,
        verifyToken: app.verifyToken,
        log: request.log,
        limits: {
          maxContentChars: config.MAX_CONTENT_CHARS,
          invalidFrameLimit: INVALID_FRAME_LIMIT,
          invalidFrameWindowMs: INVALID_FRAME_WINDOW_MS,
        },
        ...(options.admit ? { admit: options.admit } : {}),
        onClose: (closed) => connections.delete(closed),
      })
      connections.add(connection)
    },
  )
}
