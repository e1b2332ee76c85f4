import t from 'tap'
import pino from 'pino'
import { createMemoryConnectionCounter } from '../../src/guards/connection-limit.ts'
import { createRedisConnectionCounter } from '../../src/guards/redis-connection-counter.ts'
import { Redis } from 'ioredis'
import { useRedis } from '../helpers/redis.ts'

const log = pino({ level: 'silent' })

t.test('memory: the limit is held per user and a release frees a slot', async (t) => {
  const counter = createMemoryConnectionCounter(2)
  t.teardown(() => counter.close())
  t.equal(await counter.acquire('alice'), true)
  t.equal(await counter.acquire('alice'), true)
  t.equal(await counter.acquire('alice'), false, 'one over the limit')
  t.equal(await counter.acquire('bob'), true, 'another user has slots of their own')
  await counter.release('alice')
  t.equal(await counter.acquire('alice'), true, 'a released slot is taken again')
  t.equal(await counter.acquire('alice'), false)
  await counter.release('bob')
  await counter.release('bob')
  t.equal(await counter.acquire('bob'), true, 'an extra release never adds slots beyond the limit')
  t.equal(await counter.acquire('bob'), true)
  t.equal(await counter.acquire('bob'), false)
})

t.test('redis: instances share one count per user', async (t) => {
  const env = await useRedis(t)
  if (!env) return
  const a = createRedisConnectionCounter({ redis: env.redis, limit: 3, instanceId: 'a', log, keyPrefix: env.prefix })
  const b = createRedisConnectionCounter({ redis: env.redis, limit: 3, instanceId: 'b', log, keyPrefix: env.prefix })
  t.teardown(() => Promise.all([a.close(), b.close()]))
  t.equal(await a.acquire('alice'), true)
  t.equal(await b.acquire('alice'), true)
  t.equal(await a.acquire('alice'), true, 'three: at the limit')
  t.equal(await b.acquire('alice'), false, 'four is refused on either instance')
  t.equal(await a.acquire('alice'), false)
  t.equal(await b.acquire('bob'), true, 'another user is unaffected')
  t.ok((await env.redis.pttl(`${env.prefix}instances`)) > 0, 'every key expires should all instances die')
  t.ok((await env.redis.pttl(`${env.prefix}instance:a`)) > 0)
  await b.release('alice')
  t.equal(await a.acquire('alice'), true, 'a slot released on one instance is free on the other')
  await a.release('alice')
  t.same(await env.redis.hgetall(`${env.prefix}instance:a`), { alice: '2' }, 'each instance holds its own share')
  await b.release('bob')
  await b.release('nobody')
  t.same(await env.redis.hgetall(`${env.prefix}instance:b`), {}, 'a user with no connection left leaves no field')
})

t.test('redis: a crashed instance stops counting after its TTL', async (t) => {
  const env = await useRedis(t)
  if (!env) return
  const crashing = new Redis(env.url, { maxRetriesPerRequest: 0, retryStrategy: () => null })
  crashing.on('error', () => {})
  t.teardown(() => crashing.disconnect())
  const a = createRedisConnectionCounter({ redis: crashing, limit: 2, instanceId: 'a', log, keyPrefix: env.prefix, instanceTtlMs: 300 })
  const b = createRedisConnectionCounter({ redis: env.redis, limit: 2, instanceId: 'b', log, keyPrefix: env.prefix, instanceTtlMs: 300 })
  t.teardown(() => Promise.all([a.close().catch(() => {}), b.close()]))
  t.equal(await a.acquire('alice'), true)
  t.equal(await a.acquire('alice'), true)
  t.equal(await b.acquire('alice'), false, 'the live instance counts the other one')
  crashing.disconnect() // its heartbeats fail from now on: they are logged, never thrown
  await new Promise((resolve) => setTimeout(resolve, 450))
  t.equal(await b.acquire('alice'), true, "the dead instance's connections no longer count")
  t.equal(await b.acquire('alice'), true)
  t.equal(await b.acquire('alice'), false)
})

t.test('redis: heartbeats keep an instance counted, and restore its counts if they lapsed', async (t) => {
  const env = await useRedis(t)
  if (!env) return
  const a = createRedisConnectionCounter({ redis: env.redis, limit: 1, instanceId: 'a', log, keyPrefix: env.prefix, instanceTtlMs: 600 })
  const b = createRedisConnectionCounter({ redis: env.redis, limit: 1, instanceId: 'b', log, keyPrefix: env.prefix, instanceTtlMs: 600 })
  t.teardown(() => Promise.all([a.close(), b.close()]))
  t.equal(await a.acquire('alice'), true)
  await new Promise((resolve) => setTimeout(resolve, 1500))
  t.equal(await b.acquire('alice'), false, 'still counted long after its TTL: the heartbeat renews it')
  // An outage longer than the TTL loses the instance's hash; its next heartbeat writes it back.
  await env.redis.del(`${env.prefix}instance:a`)
  t.equal(await b.acquire('alice'), true, 'lapsed: not counted meanwhile')
  await b.release('alice')
  const deadline = Date.now() + 3000
  while (!(await env.redis.exists(`${env.prefix}instance:a`)) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
  t.same(await env.redis.hgetall(`${env.prefix}instance:a`), { alice: '1' }, 'restored from the local count')
  t.equal(await b.acquire('alice'), false)
})

t.test('redis: close forgets the instance at once; a closed counter takes nothing', async (t) => {
  const env = await useRedis(t)
  if (!env) return
  const a = createRedisConnectionCounter({ redis: env.redis, limit: 1, instanceId: 'a', log, keyPrefix: env.prefix })
  const b = createRedisConnectionCounter({ redis: env.redis, limit: 1, instanceId: 'b', log, keyPrefix: env.prefix })
  t.teardown(() => b.close())
  t.equal(await a.acquire('alice'), true)
  await a.close()
  await a.close()
  t.equal(await b.acquire('alice'), true)
  t.equal(await a.acquire('alice'), false)
  await a.release('alice')
  t.equal(await b.acquire('alice'), false, 'a release after close changes nothing')
})
