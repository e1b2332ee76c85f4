import { randomUUID } from 'node:crypto'
import { pino } from 'pino'
import type { Backend } from '../types.ts'
import { ClusterStreamTail } from './cluster-tail.ts'
import { COMMAND_TIMEOUT_MS, SharedRedis, connectingMastersEagerly, openCluster, openRedis, redisAddress, whenReady, type RedisLog, type RedisTarget } from './connections.ts'
import { RedisControlBus } from './control-bus.ts'
import { RedisEventLog } from './event-log.ts'
import { controlChannel, wakeKey } from './keys.ts'
import { RedisSessionStore } from './session-store.ts'
import { StreamTail } from './stream-tail.ts'

export { RedisSessionStore } from './session-store.ts'
export { RedisEventLog } from './event-log.ts'
export { RedisControlBus } from './control-bus.ts'

export interface RedisBackendOptions {
  url: string
  /** Seed nodes of a Redis Cluster (REDIS_CLUSTER): the cluster client, sharded pub/sub, per-slot tails. */
  cluster?: RedisTarget['cluster']
  /** Prepended to every key and channel, so deployments (or tests) can share one Redis. */
  keyPrefix?: string
  ttlSeconds: number
  /** Events held per session (stream MAXLEN). */
  maxEvents: number
  logger?: RedisLog
  /** How long a watcher counts without a refresh (a crashed instance's connections age out). */
  watcherTtlMs?: number
  /** How long start-up waits for Redis; past it the service starts unready and keeps retrying. */
  connectWaitMs?: number
}

export const DEFAULT_KEY_PREFIX = 'agw:'
const DEFAULT_WATCHER_TTL_MS = 30_000
const DEFAULT_CONNECT_WAIT_MS = 3000

/** On one Redis: the commands, one blocking XREAD for every live tail, pub/sub. */
function standalone(options: RedisBackendOptions, id: string, prefix: string, log: RedisLog) {
  const client = openRedis(options.url, `agw-${id}-commands`, log, { commandTimeout: COMMAND_TIMEOUT_MS })
  const blocking = openRedis(options.url, `agw-${id}-tail`, log, { blockingTimeout: 10_000 })
  const subscriber = openRedis(options.url, `agw-${id}-control`, log)
  const tail = new StreamTail({ blocking, commands: client, wakeKey: wakeKey(prefix, id), log })
  return { client, subscriber, tail, sharded: false, connected: [client, blocking], ready: (wait: number) => whenReady(client, wait) }
}

/** On a cluster: the commands, the tails' shard subscriptions (one connection per master), sharded pub/sub. */
function cluster(options: RedisBackendOptions, id: string, log: RedisLog) {
  const target = { url: options.url, cluster: options.cluster }
  const commands = connectingMastersEagerly(openCluster(target, `agw-${id}-commands`, log, {}, { commandTimeout: COMMAND_TIMEOUT_MS }))
  const client = commands.cluster
  const doorbells = openCluster(target, `agw-${id}-tail`, log, { shardedSubscribers: true })
  const subscriber = openCluster(target, `agw-${id}-control`, log, { shardedSubscribers: true })
  const tail = new ClusterStreamTail({ subscriber: doorbells, commands: client, log })
  return { client, subscriber, tail, sharded: true, connected: [doorbells], ready: (wait: number) => commands.ready(wait) }
}

/**
 * The shared backend: sessions, event logs and control messages in Redis (one node, or a
 * Redis Cluster), over three clients per instance (commands; the live tails; control pub/sub).
 */
export async function createRedisBackend(options: RedisBackendOptions): Promise<Backend> {
  const log = options.logger ?? pino({ level: 'silent' })
  const prefix = options.keyPrefix ?? DEFAULT_KEY_PREFIX
  const id = randomUUID().slice(0, 8)
  const { client, subscriber, tail, sharded, connected, ready } = options.cluster ? cluster(options, id, log) : standalone(options, id, prefix, log)
  // Released by the store, the log and the bus: whichever closes last quits it.
  const commands = new SharedRedis(client, 3)

  const sessions = new RedisSessionStore({
    commands,
    prefix,
    ttlSeconds: options.ttlSeconds,
    maxEvents: options.maxEvents,
    watcherTtlMs: options.watcherTtlMs ?? DEFAULT_WATCHER_TTL_MS,
    log,
  })
  const events = new RedisEventLog({ commands, tail, prefix })
  const control = new RedisControlBus({ commands, subscriber, channel: controlChannel(prefix), log, sharded })

  const wait = options.connectWaitMs ?? DEFAULT_CONNECT_WAIT_MS
  const up = await Promise.all([ready(wait), ...connected.map((redis) => whenReady(redis, wait)), control.ready(wait)])
  if (up.includes(false)) log.warn({ redis: redisAddress(options.url) }, 'redis unreachable at start: serving unready until it is')
  else log.info({ redis: redisAddress(options.url), keyPrefix: prefix }, 'redis backend ready')

  return {
    kind: 'redis',
    sessions,
    events,
    control,
    redis: client,
    keyPrefix: prefix,
    async close() {
      await events.close()
      await sessions.close()
      await control.close()
    },
  }
}
