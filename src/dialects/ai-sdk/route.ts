import fp from 'fastify-plugin'
import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { CloseCode, CloseReason } from '../../protocol/index.ts'
import type { Config } from '../../config.ts'
import type { UpgradeAuth } from '../../plugins/auth.ts'
import { closeSocket } from '../../ws/close-socket.ts'
import { AiSdkConnection } from './connection.ts'
import { AI_SDK_PATH } from './frames.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** Open AI SDK connections on this instance. */
    aiSdkConnections: Set<AiSdkConnection>
  }
}

// A repeated token is accepted here so that auth answers it (4001 after the upgrade), not a 400.
const UpgradeQuery = Type.Object({ token: Type.Optional(Type.Union([Type.String(), Type.Array(Type.String())])) })

/**
 * `GET /ws/ai-sdk`: the AI SDK's WebSocketChatTransport dialect (protocol.md §8, ai-sdk.md),
 * with the upgrade of /ws/agent: the same authentication, origin check, drain refusal,
 * connection cap, rate limit, heartbeat and flow-control limits. The WebSocket server itself
 * (and its subprotocol choice) is the agent route's.
 */
async function aiSdkRoute(app: FastifyInstance, options: { config: Config }) {
  const { config } = options
  const connections = new Set<AiSdkConnection>()
  app.decorate('aiSdkConnections', connections)

  app.lifecycle.onDrained(() => {
    for (const connection of connections) connection.close(CloseCode.serviceRestart, CloseReason.serviceRestart)
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
    AI_SDK_PATH,
    {
      websocket: true,
      schema: { querystring: UpgradeQuery },
      onRequest: async (request, reply) => {
        if (!app.lifecycle.draining) return
        app.metrics.connectionsOpened.inc({ result: 'draining' })
        await reply.code(503).header('retry-after', '1').send({ error: 'draining', message: 'this instance is shutting down' })
      },
      preValidation: [app.authenticateUpgrade, app.guards.reserveConnection],
    },
    (socket, request) => {
      const auth = request.upgradeAuth as UpgradeAuth
      if (!auth.ok) {
        request.log.info({ closeCode: auth.code, reason: auth.reason, dialect: 'ai-sdk' }, 'upgrade refused')
        app.metrics.connectionsOpened.inc({ result: auth.code === CloseCode.forbiddenOrigin ? 'forbidden_origin' : 'unauthorized' })
        closeSocket(socket, auth.code, auth.reason)
        return
      }
      const refusal = app.guards.refusal(request)
      if (refusal) {
        request.log.info({ closeCode: refusal.code, reason: refusal.reason, userId: auth.claims.sub, dialect: 'ai-sdk' }, 'upgrade refused')
        if (refusal.code === CloseCode.tooManyConnections) app.metrics.connectionsOpened.inc({ result: 'too_many' })
        closeSocket(socket, refusal.code, refusal.reason)
        return
      }
      const connection = new AiSdkConnection({
        socket,
        claims: auth.claims,
        sessions: app.sessions,
        log: request.log,
        limits: {
          maxContentChars: config.MAX_CONTENT_CHARS,
          maxPendingFrames: config.MAX_PENDING_FRAMES,
          maxWatched: config.MAX_WATCHED_PER_CONNECTION,
          flow: { highWaterMark: app.guards.highWaterMark, maxBufferedBytes: config.MAX_BUFFERED_BYTES, slowClientTimeoutMs: config.SLOW_CLIENT_TIMEOUT_MS },
        },
        admit: app.guards.admit,
        onClose: (closed) => connections.delete(closed),
        observer: app.metrics.connectionObserver,
      })
      connections.add(connection)
    },
  )
}

export default fp(aiSdkRoute, { name: 'ai-sdk-route', fastify: '5.x', dependencies: ['agent-route', 'auth', 'guards', 'sessions', 'lifecycle'] })
