import { once } from 'node:events'
import { Cluster, Redis, type ClusterNode, type ClusterOptions, type RedisOptions } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'

export type RedisLog = Pick<FastifyBaseLogger, 'info' | 'warn' | 'error' | 'debug'>

/** A standalone Redis, or a Redis Cluster through ioredis's cluster client: the same commands. */
export type RedisClient = Redis | Cluster

/** Where the store lives: one Redis at `url`, or a cluster reached through its seed nodes. */
export interface RedisTarget {
  url: string
  /** Seed nodes of a Redis Cluster (REDIS_CLUSTER); absent for a standalone Redis. */
  cluster?: ClusterNode[] | undefined
}

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
  return logOutages(new Redis(url, { ...FAIL_FAST, connectionName: role, ...options }), redisAddress(url), role, log)
}

/**
 * One cluster client over the seed nodes, failing fast as FAIL_FAST does: no offline queue, and
 * a command whose connection dropped is not resent to the new master (it may have been applied:
 * an append applied twice would log a token twice). Redirections (MOVED, ASK, TRYAGAIN) and
 * CLUSTERDOWN answers are retried: Redis refused those commands before running them.
 * @see https://github.com/redis/ioredis#cluster
 */
export function openCluster(target: RedisTarget, role: string, log: RedisLog, options: Partial<ClusterOptions> = {}, node: RedisOptions = {}): Cluster {
  const { redisOptions: fromUrl } = seedOf(target.url)
  const cluster = new Cluster(target.cluster ?? [], {
    enableOfflineQueue: false,
    scaleReads: 'master',
    retryDelayOnFailover: 0,
    retryDelayOnClusterDown: 100,
    retryDelayOnTryAgain: 100,
    slotsRefreshTimeout: FAIL_FAST.connectTimeout as number,
    clusterRetryStrategy: FAIL_FAST.retryStrategy as (times: number) => number,
    redisOptions: {
      ...fromUrl,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      autoResubscribe: false,
      connectTimeout: FAIL_FAST.connectTimeout as number,
      disconnectTimeout: FAIL_FAST.disconnectTimeout as number,
      connectionName: role,
      ...node,
    },
    ...options,
  })
  return logOutages(cluster, redisAddress(target.url), role, log)
}

/**
 * REDIS_URL as a cluster seed: its host and port, and what every node connection takes from it
 * (user, password, TLS for `rediss://`: the servername checked is each node's own host).
 */
export function seedOf(url: string): { node: ClusterNode; redisOptions: RedisOptions } {
  const parsed = new URL(url)
  const redisOptions: RedisOptions = {}
  if (parsed.username) redisOptions.username = decodeURIComponent(parsed.username)
  if (parsed.password) redisOptions.password = decodeURIComponent(parsed.password)
  if (parsed.protocol === 'rediss:') redisOptions.tls = {}
  return { node: { host: parsed.hostname, port: Number(parsed.port || 6379) }, redisOptions }
}

function logOutages<T extends RedisClient>(redis: T, address: string, role: string, log: RedisLog): T {
  let down = false
  redis.on('error', (err: Error) => {
    if (down) return
    down = true
    log.warn({ err, redis: address, role }, 'redis unreachable: retrying')
  })
  redis.on('ready', () => {
    if (!down) return
    down = false
    log.info({ redis: address, role }, 'redis reachable again')
  })
  return redis
}

/** Resolves true once `redis` is ready, false after `timeoutMs` (or when `signal` aborts). */
export async function whenReady(redis: RedisClient, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
  if (redis.status === 'ready') return true
  const timeout = AbortSignal.timeout(timeoutMs)
  try {
    await once(redis, 'ready', { signal: signal ? AbortSignal.any([signal, timeout]) : timeout })
    return true
  } catch {
    return false
  }
}

/**
 * A cluster client with every master's connection opened as soon as the client knows the node.
 * ioredis opens a node's connection on its first command, and, without an offline queue (we
 * fail fast on purpose), refuses every other command to that node until it is connected
 * ("Connection is closed."): the first concurrent requests of a fresh instance, or after a
 * failover brought a new master, would fail. `ready()` waits until each known master is connected.
 */
export function connectingMastersEagerly(cluster: Cluster): { cluster: Cluster; ready(timeoutMs: number): Promise<boolean> } {
  // Not before the client is ready: its own ready check goes to a node it expects unconnected.
  const connect = (node: Redis) => {
    if (cluster.status === 'ready' && node.status === 'wait' && cluster.nodes('master').includes(node)) node.connect().catch(() => {})
  }
  cluster.on('ready', () => cluster.nodes('master').forEach(connect))
  cluster.on('+node', connect)
  return {
    cluster,
    async ready(timeoutMs) {
      if (!(await whenReady(cluster, timeoutMs))) return false
      return (await Promise.all(cluster.nodes('master').map((node) => whenReady(node, timeoutMs)))).every(Boolean)
    },
  }
}

/** Closes a client: QUIT when it can be sent, else drops the socket (and stops reconnecting). */
export async function closeRedis(redis: RedisClient): Promise<void> {
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
  readonly client: RedisClient
  #users: number

  constructor(client: RedisClient, users: number) {
    this.client = client
    this.#users = users
  }

  async release(): Promise<void> {
    if (--this.#users === 0) await closeRedis(this.client)
  }
}
