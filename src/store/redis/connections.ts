import { once } from 'node:events'
import { Redis, type RedisOptions } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'

export type RedisLog = Pick<FastifyBaseLogger, 'info' | 'warn' | 'error' | 'debug'>

/** Reconnect attempts back off from this to the cap, forever: the service heals without a restart. */
const RETRY_BASE_MS = 50
const RETRY_CAP_MS = 1000

/**
 * Fail fast instead of queueing: by default ioredis holds commands while disconnected and
 * a caller waits ~73 s. Here a command issued while Redis is down rejects at once, one in
 * flight when the link drops rejects at the drop (maxRetriesPerRequest 0; no silent resend,
 * so an append is never applied twice), and one Redis never answers rejects after the timeout.
 * @see https://github.com/redis/ioredis#auto-reconnect
 */
export const FAIL_FAST: RedisOptions = {
  enableOfflineQueue: false,
  maxRetriesPerRequest: 0,
  autoResendUnfulfilledCommands: false,
  autoResubscribe: false,
  connectTimeout: 2000,
  // A socket a hung Redis never closes is destroyed this long after disconnect().
  disconnectTimeout: 500,
  retryStrategy: (times) => Math.min(RETRY_BASE_MS * 2 ** Math.min(times - 1, 10), RETRY_CAP_MS),
}

/** Bounds every non-blocking command, so a hung (not down) Redis fails too. */
export const COMMAND_TIMEOUT_MS = 3000

/** `redis://user:secret@host:6379/0` → `host:6379/0`: never log credentials. */
export function redisAddress(url: string): string {
  try {
    const parsed = new URL(url)
    return `${parsed.host}${parsed.pathname === '/' ? '' : parsed.pathname}`
  } catch {
    return 'redis'
  }
}

/** One client; `role` names it in CLIENT LIST. Logs each outage once, and the recovery. */
export function openRedis(url: string, role: string, log: RedisLog, options: RedisOptions = {}): Redis {
  const redis = new Redis(url, { ...FAIL_FAST, connectionName: role, ...options })
  let down = false
  redis.on('error', (err: Error) => {
    if (down) return
    down = true
    log.warn({ err, redis: redisAddress(url), role }, 'redis unreachable: retrying')
  })
  redis.on('ready', () => {
    if (!down) return
    down = false
    log.info({ redis: redisAddress(url), role }, 'redis reachable again')
  })
  return redis
}

/** Resolves true once `redis` is ready, false after `timeoutMs` (or when `signal` aborts). */
export async function whenReady(redis: Redis, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
  if (redis.status === 'ready') return true
  const timeout = AbortSignal.timeout(timeoutMs)
  try {
    await once(redis, 'ready', { signal: signal ? AbortSignal.any([signal, timeout]) : timeout })
    return true
  } catch {
    return false
  }
}

/** Closes a client: QUIT when it can be sent, else drops the socket (and stops reconnecting). */
export async function closeRedis(redis: Redis): Promise<void> {
  if (redis.status === 'end') return
  if (redis.status !== 'ready') {
    redis.disconnect()
    return
  }
  try {
    await redis.quit()
  } catch {
    redis.disconnect()
  }
}

/** A client several components use: the last one to let go closes it. */
export class SharedRedis {
  readonly client: Redis
  #users: number

  constructor(client: Redis, users: number) {
    this.client = client
    this.#users = users
  }

  async release(): Promise<void> {
    if (--this.#users === 0) await closeRedis(this.client)
  }
}
