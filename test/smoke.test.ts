import t from 'tap'
import { startApp, signToken } from './helpers/app.ts'
import { connect, bearer } from './helpers/ws-client.ts'

t.test('a run streams from the mock model', async (t) => {
  const { wsUrl } = await startApp(t)
  const client = await connect(t, wsUrl, bearer(signToken('alice')))
  client.send({ type: 'ping' })
  t.equal((await client.nextOfType('pong')).type, 'pong')
  client.send({ type: 'chat', content: 'hello there' })
  const frames = await client.untilComplete()
  t.same(frames.map((f) => f.type).slice(0, 2), ['status', 'token'])
  const complete = frames.at(-1)!
  t.equal(complete.content, frames.filter((f) => f.type === 'token').map((f) => f.content).join(''))
  t.same(frames.map((f) => f.seq), frames.map((_, i) => i + 1))
})
