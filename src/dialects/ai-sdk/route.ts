import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { CloseCode, CloseReason } from '../../protocol/index.ts'
import type { Config } from '../../config.ts'
import { admittedClaims, connectionLimits, refuseWhileDraining, releaseHandshake, startHeartbeat, UpgradeQuery } from '../../ws/upgrade.ts'
import { AiSdkConnection } from './connection.ts'
import { AI_SDK_PATH } from './frames.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** Open AI SDK connections on this instance. */
    aiSdkConnections: Set<AiSdkConnection>
  }
}

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

  startHeartbeat(app, connections, config.HEARTBEAT_INTERVAL_MS)
  const limits = connectionLimits(app, config)

  app.get(
    AI_SDK_PATH,
    {
      websocket: true,
      schema: { querystring: UpgradeQuery },
      onRequest: refuseWhileDraining(app),
      preValidation: [app.authenticateUpgrade, app.guards.reserveConnection],
    },
    (socket, request) => {
      const claims = admittedClaims(app, socket, request, { dialect: 'ai-sdk' })
      if (!claims) return
      const connection = new AiSdkConnection({
        socket,
        claims,
        sessions: app.sessions,
        log: app.log,
        requestId: request.id,
        limits,
        admit: app.guards.admit,
        onClose: (closed) => connections.delete(closed),
        observer: app.metrics.connectionObserver,
      })
      connections.add(connection)
      releaseHandshake(socket, connection)
    },
  )
}

export default fp(aiSdkRoute, { name: 'ai-sdk-route', fastify: '5.x', dependencies: ['agent-route', 'auth', 'guards', 'sessions', 'lifecycle'] })
