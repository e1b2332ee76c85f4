import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import type { Config } from '../config.ts'
import { CloseCode, CloseReason } from '../protocol/index.ts'
import { createFrameRateLimiter } from '../guards/rate-limit.ts'
import { createMemoryConnectionCounter, type ConnectionCounter } from '../guards/connection-limit.ts'

declare module 'fastify' {
  interface FastifyInstance {
    guards: Guards
  }
  interface FastifyRequest {
    /** What the connection cap decided for this upgrade (set by `guards.reserveConnection`). */
    connectionSlot: ConnectionSlot | null
  }
}

export type ConnectionSlot = 'held' | 'refused' | 'unavailable'

export interface Guards {
  /**
   * The per-user frame budget, run before each valid frame is served. Every client frame
   * counts, `ping` and `auth` included (each is parsed and answered); protocol-level
   * heartbeat pings do not, and invalid frames have their own limit (close 1008).
   */
  admit(connection: { userId: string }): Promise<void>
  /** preValidation hook of the upgrade, after authentication: takes the user's connection slot. */
  reserveConnection(request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void
  /** Why an authenticated upgrade must be closed at once, if it must. */
  refusal(request: FastifyRequest): { code: CloseCode; reason: string } | undefined
  invalidFrames: { limit: number; windowMs: number }
  /** Unsent bytes a socket may hold before reading pauses and its runs wait (protocol.md §6). */
  highWaterMark: number
}

/** Limits that are not configuration: sensible for every deployment, tunable by tests. */
export interface GuardTuning {
  /** Invalid frames a connection may send per window; one more closes it 1008. */
  invalidFrameLimit: number
  invalidFrameWindowMs: number
  /**
   * Unsent bytes a socket may hold before the runs it watches stop pulling from the model.
   * 256 KiB: well above a burst of token frames (~150 B each) or a large tool result, bounded
   * per slow client, and above the TCP socket's own 64 KiB mark so its 'drain' always comes.
   */
  highWaterMark: number
}

export const defaultGuardTuning: GuardTuning = {
  invalidFrameLimit: 20,
  invalidFrameWindowMs: 10_000,
  highWaterMark: 256 * 1024,
}

export interface GuardsPluginOptions {
  config: Config
  tuning?: Partial<GuardTuning>
}

async function guardsPlugin(app: FastifyInstance, options: GuardsPluginOptions) {
  const { config } = options
  const { backend, instanceId } = app
  const tuning = { ...defaultGuardTuning, ...options.tuning }
  const { redis } = backend
  const keyPrefix = backend.keyPrefix ?? config.REDIS_KEY_PREFIX
  const rateLimiter = createFrameRateLimiter({
    points: config.RATE_LIMIT_MESSAGES,
    windowMs: config.RATE_LIMIT_WINDOW_MS,
    ...(redis ? { redis: { client: redis, keyPrefix: `${keyPrefix}ratelimit` } } : {}),
  })
  // Like the Redis backend, the Redis counter is loaded only when Redis is in use.
  const counter: ConnectionCounter = redis
    ? (await import('../guards/redis-connection-counter.ts')).createRedisConnectionCounter({
        redis,
        limit: config.MAX_CONNECTIONS_PER_USER,
        instanceId,
        log: app.log,
        // One hash tag for every count key: its script sums them in one slot on a Redis Cluster.
        keyPrefix: `${keyPrefix}{connections}:`,
        // A dead instance's slots lapse like its runs' leases (protocol.md §5).
        instanceTtlMs: config.RUN_LEASE_MS,
      })
    : createMemoryConnectionCounter(config.MAX_CONNECTIONS_PER_USER)

  function release(reqId: string, userId: string): void {
    counter.release(userId).catch((err: unknown) => app.log.warn({ err, reqId, userId }, 'could not release connection slot'))
  }

  /** The slot goes back when the upgrade's TCP socket closes. */
  function holdUntilClose(request: FastifyRequest, userId: string): void {
    // The same TCP socket carries the WebSocket after the handshake: its close frees the slot
    // whether the connection lived or the handshake never completed.
    // Only the request's id is kept for it, not the request or its logger: either would outlive
    // the handshake by the connection's life.
    const reqId = request.id
    const socket = request.raw.socket
    if (socket.destroyed) release(reqId, userId)
    else socket.once('close', () => release(reqId, userId))
  }

  // A callback hook: the in-memory count answers at once, and Fastify goes on in the same turn.
  function reserveConnection(request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction): void {
    const auth = request.upgradeAuth
    if (!auth?.ok) return done()
    const userId = auth.claims.sub
    const settle = (slot: ConnectionSlot) => {
      request.connectionSlot = slot
      if (slot === 'held') holdUntilClose(request, userId)
      done()
    }
    const acquired = counter.acquire(userId)
    if (typeof acquired === 'boolean') return settle(acquired ? 'held' : 'refused')
    acquired.then(
      (held) => settle(held ? 'held' : 'refused'),
      (err: unknown) => {
        request.log.error({ err, userId }, 'connection count unavailable')
        settle('unavailable')
      },
    )
  }

  function refusal(request: FastifyRequest): { code: CloseCode; reason: string } | undefined {
    switch (request.connectionSlot) {
      case 'held':
        return undefined
      case 'refused':
        return { code: CloseCode.tooManyConnections, reason: CloseReason.tooManyConnections }
      default:
        return { code: CloseCode.internalError, reason: CloseReason.storeUnavailable }
    }
  }

  const guards: Guards = {
    admit: (connection) => rateLimiter.consume(connection.userId),
    reserveConnection,
    refusal,
    highWaterMark: tuning.highWaterMark,
    invalidFrames: { limit: tuning.invalidFrameLimit, windowMs: tuning.invalidFrameWindowMs },
  }
  app.decorate('guards', guards)
  app.decorateRequest('connectionSlot', null)
  app.addHook('onClose', async () => {
    await counter.close().catch((err: unknown) => app.log.warn({ err }, 'could not clear connection counts'))
  })
}

export default fp(guardsPlugin, { name: 'guards', fastify: '5.x', dependencies: ['auth', 'backend'] })
