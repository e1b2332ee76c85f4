import t from 'tap'
import WebSocket from 'ws'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer, TestClient } from '../helpers/ws-client.ts'
import { closedWithin, contentOf, roomy, sleep } from './util.ts'

t.test('ping → pong, with the session echoed or ""', async (t) => {
  const { wsUrl } = await startApp(t, roomy)
  const client = await connect(t, wsUrl, bearer(signToken('alice')))
  client.send({ type: 'ping' })
  t.same(await client.next(), { type: 'pong', session_id: '' })
  client.send({ type: 'ping', session_id: 'any-session_1' })
  t.same(await client.next(), { type: 'pong', session_id: 'any-session_1' })
  t.equal(client.raw.at(-1), '{"type":"pong","session_id":"any-session_1"}', 'no seq, nothing else')
})

t.test('MAX_PAYLOAD_BYTES: a frame at the limit is served, one byte over closes 1009', async (t) => {
  const MAX = 1024
  const { wsUrl } = await startApp(t, { ...roomy, MAX_PAYLOAD_BYTES: MAX })
  const frameOf = (bytes: number) => {
    const empty = JSON.stringify({ type: 'chat', content: '' })
    return JSON.stringify({ type: 'chat', content: 'x'.repeat(bytes - Buffer.byteLength(empty)) })
  }

  t.test('exactly MAX_PAYLOAD_BYTES', async (t) => {
    const client = await connect(t, wsUrl, bearer(signToken('alice')))
    const frame = frameOf(MAX)
    t.equal(Buffer.byteLength(frame), MAX)
    client.socket.send(frame)
    const frames = await client.untilComplete()
    t.match(frames[0], { type: 'status', content: 'thinking' })
    t.equal(client.socket.readyState, WebSocket.OPEN)
  })

  t.test('MAX_PAYLOAD_BYTES + 1', async (t) => {
    const client = await connect(t, wsUrl, bearer(signToken('alice')))
    const frame = frameOf(MAX + 1)
    t.equal(Buffer.byteLength(frame), MAX + 1)
    client.socket.send(frame)
    const closed = await closedWithin(client)
    t.equal(closed.code, 1009)
    t.same(client.frames, [], 'nothing was served')
  })

  t.test('the server keeps serving others after a 1009', async (t) => {
    const client = await connect(t, wsUrl, bearer(signToken('alice')))
    client.send({ type: 'ping' })
    t.equal((await client.nextOfType('pong')).type, 'pong')
  })
})

t.test('MAX_CONTENT_CHARS: longer content is payload_too_large, counted in characters', async (t) => {
  const { wsUrl } = await startApp(t, { ...roomy, MAX_CONTENT_CHARS: 10 })
  const client = await connect(t, wsUrl, bearer(signToken('alice')))
  client.send({ type: 'chat', content: '🙂'.repeat(11), session_id: 's-too-long', id: 'r1' })
  const error = await client.nextOfType('error')
  t.match(error, { type: 'error', session_id: 's-too-long', metadata: { code: 'payload_too_large', retryable: false, request_id: 'r1' } })
  t.match(contentOf(error), /10 characters/)
  t.notOk('seq' in error)
  client.send({ type: 'chat', content: 'x'.repeat(11) })
  t.match(await client.nextOfType('error'), { session_id: '', metadata: { code: 'payload_too_large' } })
  // Ten emoji are twenty UTF-16 units but ten characters: accepted.
  client.send({ type: 'chat', content: '🙂'.repeat(10) })
  const frames = await client.untilComplete()
  t.match(frames[0], { type: 'status', content: 'thinking' })
})

t.test('protocol heartbeat', async (t) => {
  // Client and service share this process: the interval leaves room for a loaded event loop.
  const INTERVAL = 150
  const { wsUrl } = await startApp(t, { ...roomy, HEARTBEAT_INTERVAL_MS: INTERVAL })

  t.test('a client that answers pings stays connected across several intervals', async (t) => {
    const client = await connect(t, wsUrl, bearer(signToken('alice')))
    let pings = 0
    client.socket.on('ping', () => pings++)
    await sleep(INTERVAL * 5)
    t.ok(pings >= 3, `${pings} pings received`)
    t.equal(client.socket.readyState, WebSocket.OPEN)
    client.send({ type: 'ping' })
    await client.nextOfType('pong')
  })

  t.test('a client that does not answer is terminated', async (t) => {
    const client = new TestClient(wsUrl, bearer(signToken('alice')))
    t.teardown(() => client.socket.terminate())
    // The helper has no autoPong switch: a second client with it off, same token.
    const silent = new WebSocket(wsUrl, { headers: bearer(signToken('alice')).headers, autoPong: false })
    t.teardown(() => silent.terminate())
    silent.on('error', () => {})
    await new Promise((resolve) => silent.once('open', resolve))
    const openedAt = performance.now()
    const code = await new Promise<number>((resolve) => {
      const timer = setTimeout(() => resolve(-1), 3000)
      silent.once('close', (c) => {
        clearTimeout(timer)
        resolve(c)
      })
    })
    const after = performance.now() - openedAt
    t.equal(code, 1006, 'terminated: no close frame')
    t.ok(after >= INTERVAL, `after ${Math.round(after)} ms: not before a ping went unanswered`)
    t.ok(after < 2000, 'within a few intervals')
    await client.opened
    t.equal(client.socket.readyState, WebSocket.OPEN, 'the answering client is untouched')
  })
})
