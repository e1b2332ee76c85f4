import t from 'tap'
import WebSocket from 'ws'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer, TestClient } from '../helpers/ws-client.ts'
import { createMemoryBackend } from '../../src/store/memory/index.ts'
import { closedWithin, roomy } from './util.ts'

t.test('a handler that fails for a non-protocol reason answers internal (retryable) and keeps serving', async (t) => {
  const lines: string[] = []
  const backend = createMemoryBackend({ ttlSeconds: 60, maxEvents: 100 })
  const { wsUrl } = await startApp(t, { ...roomy, LOG_LEVEL: 'error' }, { backend, logStream: { write: (line) => void lines.push(line) } })
  backend.sessions.open = async () => {
    throw new Error('ECONNREFUSED 10.0.0.1:6379')
  }
  const client = await connect(t, wsUrl, bearer(signToken('alice')))
  client.send({ type: 'chat', content: 'hi', session_id: 's-1' })
  const error = await client.next()
  t.same(error, { type: 'error', session_id: 's-1', content: 'internal error', metadata: { code: 'internal', retryable: true } })
  t.notMatch(client.raw.join(''), /ECONNREFUSED/, 'no internals on the wire')
  t.ok(lines.some((line) => line.includes('frame handling failed') && line.includes('ECONNREFUSED')), 'but in the logs')
  client.send({ type: 'ping' })
  t.same(await client.next(), { type: 'pong', session_id: '' })
})

t.test('MAX_CONNECTIONS_PER_USER: one more is closed 4029, others unaffected', async (t) => {
  const { wsUrl } = await startApp(t, { MAX_CONNECTIONS_PER_USER: 1, RATE_LIMIT_MESSAGES: 1000 })
  const first = await connect(t, wsUrl, bearer(signToken('alice')))
  const second = await connect(t, wsUrl, bearer(signToken('alice')))
  t.same(await closedWithin(second), { code: 4029, reason: 'too many connections' })
  t.same(second.frames, [])
  const bob = await connect(t, wsUrl, bearer(signToken('bob')))
  bob.send({ type: 'ping' })
  await bob.nextOfType('pong')
  first.send({ type: 'ping' })
  await first.nextOfType('pong')
  t.equal(first.socket.readyState, WebSocket.OPEN)
})

t.test('a subprotocol list without agent.v1 selects none (a browser then fails the handshake)', async (t) => {
  const { wsUrl } = await startApp(t)
  const client = new TestClient(wsUrl, { protocols: ['chat.v9'], headers: bearer(signToken('alice')).headers })
  t.teardown(() => client.socket.terminate())
  await t.rejects(client.opened, /no subprotocol/)
})
