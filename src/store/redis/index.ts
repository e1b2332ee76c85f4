import { randomUUID } from 'node:crypto'
import { pino } from 'pino'
import type { Backend } from '../types.ts'
import { COMMAND_TIMEOUT_MS, SharedRedis, openRedis, redisAddress, whenReady, type RedisLog } from './connections.ts'
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

/**
 * The shared backend: sessions, event logs and control messages in Redis, over three
 * connections per instance (commands; one blocking reader for every live tail; pub/sub).
 */
export async function createRedisBackend(options: RedisBackendOptions): Promise<Backend> {
  const log = options.logger ?? pino({ level: 'silent' })
  const prefix = options.keyPrefix ?? DEFAULT_KEY_PREFIX
  const id = randomUUID().slice(0, 8)
  const client = openRedis(options.url, `agw-${id}-commands`, log, { commandTimeout: COMMAND_TIMEOUT_MS })
  const blocking = openRedis(options.url, `agw-${id}-tail`, log, { blockingTimeout: 10_000 })
  const subscriber = openRedis(options.url, `agw-${id}-control`, log)
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
  const tail = new StreamTail({ blocking, commands: client, wakeKey: wakeKey(prefix, id), log })
  const events = new RedisEventLog({ commands, tail, prefix })
  const control = new RedisControlBus({ commands, subscriber, channel: controlChannel(prefix), log })

  const wait = options.connectWaitMs ?? DEFAULT_CONNECT_WAIT_MS
  const up = await Promise.all([whenReady(client, wait), whenReady(blocking, wait), control.ready(wait)])
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
