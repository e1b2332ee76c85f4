import t from 'tap'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer } from '../helpers/ws-client.ts'
import { createFakeUpstream, textSteps } from '../helpers/fake-upstream.ts'
import { useRedis } from '../helpers/redis.ts'

t.test('drain on Redis: every client gets its run\'s final events before the 1012 close', async (t) => {
  const redis = await useRedis(t)
  if (!redis) return
  const up = await createFakeUpstream(() => ({ steps: textSteps(Array.from({ length: 400 }, (_, i) => `w${i} `), { delayMs: 20 }) }))
  t.teardown(() => up.close())
  const { app, wsUrl } = await startApp(t, {
    REDIS_URL: redis.url,
    REDIS_KEY_PREFIX: redis.prefix,
    modelProvider: 'openai',
    OPENAI_BASE_URL: up.baseURL,
    OPENAI_API_KEY: 'test',
    SHUTDOWN_GRACE_MS: 200,
  })
  const clients = await Promise.all(Array.from({ length: 10 }, (_, i) => connect(t, wsUrl, bearer(signToken(`drain-${i}`)))))
  for (const client of clients) client.send({ type: 'chat', content: 'talk for a while' })
  await Promise.all(clients.map((client) => client.nextOfType('token')))
  await app.drain()
  for (const [i, client] of clients.entries()) {
    const closed = await client.closed
    t.match(closed, { code: 1012, reason: 'service restart' }, `client ${i} closed 1012`)
    const last = client.frames.at(-1)
    t.match(last, { type: 'complete', metadata: { finish_reason: 'cancelled', reason: 'shutdown' } }, `client ${i} got its complete first`)
    t.equal(client.frames.at(-2)?.content, 'cancelled')
  }
})
