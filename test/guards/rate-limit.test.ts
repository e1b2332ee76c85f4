import t from 'tap'
import { Redis } from 'ioredis'
import { createFrameRateLimiter } from '../../src/guards/rate-limit.ts'
import { ProtocolError } from '../../src/protocol/index.ts'
import { useRedis } from '../helpers/redis.ts'

async function rejection(promise: Promise<void>): Promise<ProtocolError> {
  try {
    await promise
  } catch (err) {
    if (err instanceof ProtocolError) return err
    throw err
  }
  throw new Error('expected rate_limited')
}

t.test('memory: the budget is per user and per window', async (t) => {
  const limiter = createFrameRateLimiter({ points: 3, windowMs: 400 })
  for (let i = 0; i < 3; i++) await limiter.consume('alice')
  const refused = await rejection(limiter.consume('alice'))
  t.equal(refused.code, 'rate_limited')
  t.equal(refused.options.retryable, true)
  t.ok(refused.options.retryAfterMs! > 0 && refused.options.retryAfterMs! <= 400, `retry after ${refused.options.retryAfterMs} ms`)
  await limiter.consume('bob')
  await new Promise((resolve) => setTimeout(resolve, refused.options.retryAfterMs! + 20))
  await limiter.consume('alice')
  t.pass('a new window has a new budget')
})

t.test('redis: instances share the budget', async (t) => {
  const env = await useRedis(t)
  if (!env) return
  const a = createFrameRateLimiter({ points: 4, windowMs: 1500, redis: { client: env.redis, keyPrefix: env.prefix } })
  const b = createFrameRateLimiter({ points: 4, windowMs: 1500, redis: { client: env.redis, keyPrefix: env.prefix } })
  await a.consume('alice')
  await b.consume('alice')
  await a.consume('alice')
  await b.consume('alice')
  const refused = await rejection(a.consume('alice'))
  t.equal(refused.code, 'rate_limited')
  t.ok(refused.options.retryAfterMs! > 0 && refused.options.retryAfterMs! <= 2000, 'the window is whole seconds in Redis: 1500 ms → 2 s')
  await b.consume('bob')
  t.ok(await env.redis.exists(`${env.prefix}:alice`), 'the count lives in Redis under the prefix')
})

t.test('redis: an unreachable Redis falls back to the in-memory budget', async (t) => {
  const down = new Redis('redis://127.0.0.1:1', { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null })
  down.on('error', () => {})
  t.teardown(() => down.disconnect())
  const limiter = createFrameRateLimiter({ points: 2, windowMs: 60_000, redis: { client: down, keyPrefix: 'unused' } })
  await limiter.consume('alice')
  await limiter.consume('alice')
  t.equal((await rejection(limiter.consume('alice'))).code, 'rate_limited')
})
