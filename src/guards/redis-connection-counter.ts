import type { FastifyBaseLogger } from 'fastify'
import type { Cluster, Redis } from 'ioredis'
import type { ConnectionCounter } from './connection-limit.ts'

export interface RedisConnectionCounterOptions {
  redis: Redis | Cluster
  limit: number
  instanceId: string
  log: FastifyBaseLogger
  keyPrefix: string
  /** How long an instance's counts outlive its last heartbeat (a crashed instance's connections are gone). */
  instanceTtlMs?: number
}

const DEFAULT_INSTANCE_TTL_MS = 30_000

/*
 * Each instance counts its own connections in a hash (user → count) that expires unless the
 * instance keeps refreshing it, and lists itself, with that deadline, in a sorted set (which
 * expires too once no instance is left). A user's total is the sum over the instances
 * listed. The hashes are named from the prefix inside the script, so on a Redis Cluster the
 * prefix must carry a hash tag (guards.ts passes `…{connections}:`): every key in one slot. A
 * connection is counted once at its upgrade and once at its close, so one slot takes the load.
 */
const ACQUIRE = `
local now = redis.call('time')
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ttl = tonumber(ARGV[4])
redis.call('zremrangebyscore', KEYS[1], '-inf', nowMs)
redis.call('zadd', KEYS[1], nowMs + ttl, ARGV[1])
redis.call('pexpire', KEYS[1], ttl)
local total = 0
for _, instance in ipairs(redis.call('zrange', KEYS[1], 0, -1)) do
  total = total + (tonumber(redis.call('hget', ARGV[5] .. instance, ARGV[2])) or 0)
end
if total >= tonumber(ARGV[3]) then return 0 end
redis.call('hincrby', KEYS[2], ARGV[2], 1)
redis.call('pexpire', KEYS[2], ttl)
return 1
`

const RELEASE = `
if redis.call('hincrby', KEYS[1], ARGV[1], -1) <= 0 then redis.call('hdel', KEYS[1], ARGV[1]) end
`

/** Re-lists the instance and extends its hash; 0 when the hash had expired (an outage). */
const HEARTBEAT = `
local now = redis.call('time')
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('zadd', KEYS[1], nowMs + tonumber(ARGV[2]), ARGV[1])
redis.call('pexpire', KEYS[1], ARGV[2])
return redis.call('pexpire', KEYS[2], ARGV[2])
`

/** The count shared by every instance on one Redis; a crashed instance's share lapses after its TTL. */
export function createRedisConnectionCounter(options: RedisConnectionCounterOptions): ConnectionCounter {
  const { redis, limit, instanceId, log } = options
  const prefix = options.keyPrefix
  const ttlMs = options.instanceTtlMs ?? DEFAULT_INSTANCE_TTL_MS
  const instancesKey = `${prefix}instances`
  const instanceKeyPrefix = `${prefix}instance:`
  const ownKey = `${instanceKeyPrefix}${instanceId}`
  /** This instance's own truth, written back should its hash have lapsed during an outage. */
  const local = new Map<string, number>()
  let closed = false

  async function heartbeat(): Promise<void> {
    const extended = await redis.eval(HEARTBEAT, 2, instancesKey, ownKey, instanceId, ttlMs)
    if (extended === 0 && local.size > 0) {
      await redis.multi().hset(ownKey, Object.fromEntries(local)).pexpire(ownKey, ttlMs).exec()
      log.warn({ instanceId, users: local.size }, 'connection counts had lapsed in Redis: restored')
    }
  }

  const timer = setInterval(() => {
    heartbeat().catch((err: unknown) => log.warn({ err, instanceId }, 'connection count heartbeat failed'))
  }, ttlMs / 3)
  timer.unref()

  return {
    async acquire(userId) {
      if (closed) return false
      const taken = await redis.eval(ACQUIRE, 2, instancesKey, ownKey, instanceId, userId, limit, ttlMs, instanceKeyPrefix)
      if (taken !== 1) return false
      local.set(userId, (local.get(userId) ?? 0) + 1)
      return true
    },
    async release(userId) {
      if (closed) return
      const left = (local.get(userId) ?? 0) - 1
      if (left > 0) local.set(userId, left)
      else local.delete(userId)
      await redis.eval(RELEASE, 1, ownKey, userId)
    },
    async close() {
      if (closed) return
      closed = true
      clearInterval(timer)
      local.clear()
      await redis.multi().del(ownKey).zrem(instancesKey, instanceId).exec()
    },
  }
}
