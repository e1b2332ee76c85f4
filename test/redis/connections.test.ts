import t from 'tap'
import { once } from 'node:events'
import { closeRedis, openRedis, redisAddress, whenReady } from '../../src/store/redis/connections.ts'
import { freePort, startPrivateRedis } from '../helpers/redis.ts'

const silent = { info() {}, warn() {}, error() {}, debug() {} }

t.test('redisAddress never shows credentials', async (t) => {
  t.equal(redisAddress('redis://user:s3cret@cache.internal:6380/2'), 'cache.internal:6380/2')
  t.equal(redisAddress('rediss://:s3cret@cache.internal:6380'), 'cache.internal:6380')
  t.equal(redisAddress('redis://:s3cret@127.0.0.1:6379/'), '127.0.0.1:6379')
  t.equal(redisAddress('not a url with s3cret'), 'redis')
})

t.test('a client of a Redis that is not there: not ready, closed without waiting', async (t) => {
  const url = `redis://127.0.0.1:${await freePort()}`
  const client = openRedis(url, 'absent', silent)
  t.equal(await whenReady(client, 200), false, 'gives up after the timeout')
  const started = performance.now()
  t.equal(await whenReady(client, 10_000, AbortSignal.timeout(50)), false, 'or when the signal aborts')
  t.ok(performance.now() - started < 1000)
  await t.rejects(client.ping(), /enableOfflineQueue|Stream isn't writeable/, 'commands fail at once: no offline queue')
  let attempts = 0
  client.on('connecting', () => attempts++)
  await closeRedis(client)
  await new Promise((resolve) => setTimeout(resolve, 1200))
  t.equal(attempts, 0, 'closed: it stops reconnecting')
})

t.test('closing an ended client does nothing', async (t) => {
  const server = await startPrivateRedis(t)
  if (!server) return
  const client = openRedis(server.url, 'ended', silent)
  t.equal(await whenReady(client, 2000), true)
  const ended = once(client, 'end')
  await closeRedis(client)
  await ended
  await closeRedis(client)
  t.equal(client.status, 'end', 'still ended, no error')
})

t.test('a hung Redis: commands time out, and closing still ends the client', async (t) => {
  const server = await startPrivateRedis(t)
  if (!server) return
  const client = openRedis(server.url, 'hung', silent, { commandTimeout: 200 })
  t.equal(await whenReady(client, 2000), true)
  t.equal(await whenReady(client, 2000), true, 'ready at once when it is')
  server.freeze()
  t.teardown(() => server.thaw())
  await t.rejects(client.ping(), /timed out/, 'no answer: the command fails after commandTimeout')
  const ended = once(client, 'end', { signal: AbortSignal.timeout(2000) })
  await closeRedis(client)
  await ended
  t.pass('QUIT got no answer either: the socket was dropped')
})
