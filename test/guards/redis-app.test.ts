import t from 'tap'
import type { Socket } from 'node:net'
import { Redis } from 'ioredis'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer, TestClient } from '../helpers/ws-client.ts'
import { startPrivateRedis, useRedis } from '../helpers/redis.ts'

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

async function served(client: TestClient): Promise<boolean> {
  client.send({ type: 'ping' })
  return Promise.race([client.nextOfType('pong').then(() => true, () => false), client.closed.then(() => false)])
}

/** Connects until the server serves the connection (a freed slot is seen a moment after our close). */
async function connectServed(t: Parameters<typeof connect>[0], url: string, token: string): Promise<TestClient> {
  for (let tries = 0; ; tries++) {
    const client = await connect(t, url, bearer(token))
    if ((await served(client)) || tries === 50) return client
    await sleep(20)
  }
}

t.test('with Redis, instances share the connection cap and the frame budget', async (t) => {
  const redis = await useRedis(t)
  if (!redis) return
  const config = { REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix, MAX_CONNECTIONS_PER_USER: 2, RATE_LIMIT_MESSAGES: 4 }
  const [a, b] = await Promise.all([startApp(t, config), startApp(t, config)])
  const token = signToken('alice')

  const onA = await connect(t, a.wsUrl, bearer(token))
  const onB = await connect(t, b.wsUrl, bearer(token))
  t.ok(await served(onA))
  t.ok(await served(onB))
  const third = await connect(t, a.wsUrl, bearer(token))
  t.same(await third.closed.then(({ code, reason }) => ({ code, reason })), { code: 4029, reason: 'too many connections' }, 'the third, on either instance, is refused')
  onB.close()
  await onB.closed
  t.ok(await served(await connectServed(t, a.wsUrl, token)), "a slot freed on one instance is taken on the other")

  const bob = signToken('bob')
  const bobOnA = await connect(t, a.wsUrl, bearer(bob))
  const bobOnB = await connect(t, b.wsUrl, bearer(bob))
  for (const client of [bobOnA, bobOnB, bobOnA, bobOnB]) t.ok(await served(client))
  t.pass('four frames of the budget, across instances')
  bobOnA.send({ type: 'ping' })
  t.match((await bobOnA.nextOfType('error')).metadata, { code: 'rate_limited', retryable: true }, 'the fifth is over it')

  const keys = await redis.keys()
  t.ok(keys.includes(`${redis.prefix}{connections}:instances`), 'the counts live under the key prefix')
  t.ok(keys.includes(`${redis.prefix}ratelimit:bob`), 'and so does the budget')
  t.ok(keys.includes(`${redis.prefix}{connections}:instance:${a.app.instanceId}`), "each instance's own counts")
  await a.app.close()
  t.notOk((await redis.keys()).includes(`${redis.prefix}{connections}:instance:${a.app.instanceId}`), 'a closed instance takes its counts along')
})

t.test('the connection count unavailable: the upgrade closes 1011 store unavailable', async (t) => {
  const server = await startPrivateRedis(t)
  if (!server) return
  const { wsUrl } = await startApp(t, { REDIS_URL: server.url })
  t.ok(await served(await connect(t, wsUrl, bearer(signToken('alice')))))
  await server.stop()
  const refused = await connect(t, wsUrl, bearer(signToken('alice')))
  t.same(await refused.closed.then(({ code, reason }) => ({ code, reason })), { code: 1011, reason: 'store unavailable' })
  t.same(refused.frames, [])
})

t.test('a client gone while its slot was being counted gives the slot back', async (t) => {
  const server = await startPrivateRedis(t)
  if (!server) return
  const { app, wsUrl } = await startApp(t, { REDIS_URL: server.url, MAX_CONNECTIONS_PER_USER: 1 })
  const admin = new Redis(server.url, { maxRetriesPerRequest: 0 })
  t.teardown(() => admin.disconnect())
  const token = signToken('alice')
  const upgrading: Socket[] = []
  app.server.on('upgrade', (_request, socket: Socket) => upgrading.push(socket))

  await admin.client('PAUSE', 400, 'ALL') // the count's script waits until then
  const gone = new TestClient(wsUrl, bearer(token))
  t.teardown(() => gone.socket.terminate())
  await sleep(100)
  t.equal(upgrading.length, 1)
  upgrading[0]!.destroy() // its 'close' comes before the count answers
  await sleep(500)

  const client = await connectServed(t, wsUrl, token)
  t.ok(await served(client), 'the one slot is free')
  const over = await connect(t, wsUrl, bearer(token))
  t.equal((await over.closed).code, 4029, 'and counted again')
})
