import t from 'tap'
import { Redis } from 'ioredis'
import { StoreRefused, checkStore } from '../../src/store/redis/readiness.ts'
import { freePort, startPrivateRedis } from '../helpers/redis.ts'

t.test('readiness: a Redis that refuses writes (a read-only replica) is refused, and says why', async (t) => {
  const server = await startPrivateRedis(t)
  if (!server) return
  const redis = new Redis(server.url, { maxRetriesPerRequest: 0 })
  t.teardown(() => redis.disconnect())
  await t.resolves(checkStore(redis, 'agwtest:ready:'), 'a writable primary passes')
  // A replica of a master that is not there: it never syncs, and stays read-only.
  await redis.replicaof('127.0.0.1', String(await freePort()))
  const refused = checkStore(redis, 'agwtest:ready:')
  await t.rejects(refused, StoreRefused)
  await t.rejects(refused, /^store refuses writes: READONLY You can't write against a read only replica/)
})
