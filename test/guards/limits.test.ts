import t from 'tap'
import WebSocket from 'ws'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer, type TestClient } from '../helpers/ws-client.ts'

type Teardown = Parameters<typeof connect>[0]

async function pong(client: TestClient, marker: string): Promise<void> {
  client.send({ type: 'ping', session_id: marker })
  await client.next((frame) => frame.type === 'pong' && frame.session_id === marker)
}

/** True when the connection answers a ping; false when the server closed it instead. */
async function openAfterPing(client: TestClient): Promise<boolean> {
  client.send({ type: 'ping' })
  return Promise.race([client.nextOfType('pong').then(() => true, () => false), client.closed.then(() => false)])
}

async function closedWith(client: TestClient): Promise<{ code: number; reason: string }> {
  const { code, reason } = await client.closed
  return { code, reason }
}

t.test('MAX_CONTENT_CHARS: payload_too_large one character over, a run at the limit', async (t) => {
  const { wsUrl } = await startApp(t, { MAX_CONTENT_CHARS: 10 })
  const client = await connect(t, wsUrl, bearer(signToken('alice')))

  client.send({ type: 'chat', content: 'x'.repeat(11), id: 'too-long' })
  const error = await client.nextOfType('error')
  t.match(error.metadata, { code: 'payload_too_large', retryable: false, request_id: 'too-long' })
  t.notOk('seq' in error, 'an answer to a frame carries no seq')

  // Characters are code points: ten emoji are twenty UTF-16 units and still within the limit.
  client.send({ type: 'chat', content: '😀'.repeat(10) })
  const frames = await client.untilComplete()
  t.match(frames[0], { type: 'status', content: 'thinking' })
  client.send({ type: 'chat', content: 'x'.repeat(10), session_id: frames[0]!.session_id })
  t.match(await client.nextOfType('status'), { content: 'thinking' })
  await client.untilComplete()
})

t.test('MAX_PAYLOAD_BYTES: a frame at the limit is served, one byte over closes 1009', async (t) => {
  const limit = 256
  const { wsUrl } = await startApp(t, { MAX_PAYLOAD_BYTES: limit })
  const client = await connect(t, wsUrl, bearer(signToken('alice')))
  const frameOf = (bytes: number) => {
    const empty = JSON.stringify({ type: 'chat', content: '' })
    return JSON.stringify({ type: 'chat', content: 'x'.repeat(bytes - empty.length) })
  }
  t.equal(Buffer.byteLength(frameOf(limit)), limit)
  client.send(frameOf(limit))
  t.match(await client.nextOfType('status'), { content: 'thinking' })
  await client.untilComplete()
  client.send(frameOf(limit + 1))
  t.same(await closedWith(client), { code: 1009, reason: '' })
})

t.test('RATE_LIMIT_MESSAGES per user, across connections', async (t) => {
  const { wsUrl } = await startApp(t, { RATE_LIMIT_MESSAGES: 5, RATE_LIMIT_WINDOW_MS: 60_000 })
  const first = await connect(t, wsUrl, bearer(signToken('alice')))
  const second = await connect(t, wsUrl, bearer(signToken('alice')))
  const bob = await connect(t, wsUrl, bearer(signToken('bob')))
  for (let i = 0; i < 3; i++) await pong(first, `a${i}`)
  for (let i = 0; i < 2; i++) await pong(second, `b${i}`)
  t.pass('five frames of the budget are served, across two connections')

  first.send({ type: 'ping', session_id: 'sixth' })
  const error = await first.nextOfType('error')
  t.equal(error.session_id, 'sixth')
  t.match(error.metadata, { code: 'rate_limited', retryable: true })
  t.ok(error.metadata!.retry_after_ms > 0 && error.metadata!.retry_after_ms <= 60_000, `retry_after_ms ${error.metadata!.retry_after_ms}`)
  t.notOk('seq' in error)
  second.send({ type: 'cancel' })
  t.match((await second.nextOfType('error')).metadata, { code: 'rate_limited' }, 'every frame type counts')
  await pong(bob, 'bob')
  t.pass('another user keeps their own budget')
  t.equal(first.socket.readyState, WebSocket.OPEN, 'a rate-limited connection stays open')
})

t.test('RATE_LIMIT_WINDOW_MS: the budget comes back after retry_after_ms', async (t) => {
  const { wsUrl } = await startApp(t, { RATE_LIMIT_MESSAGES: 2, RATE_LIMIT_WINDOW_MS: 500 })
  const client = await connect(t, wsUrl, bearer(signToken('alice')))
  await pong(client, 'one')
  await pong(client, 'two')
  client.send({ type: 'ping' })
  const error = await client.nextOfType('error')
  t.equal(error.metadata?.code, 'rate_limited')
  await new Promise((resolve) => setTimeout(resolve, error.metadata!.retry_after_ms + 20))
  await pong(client, 'three')
  t.pass('served again in the next window')
})

t.test('MAX_CONNECTIONS_PER_USER: one more closes 4029, a closed connection frees its slot', async (t) => {
  const { wsUrl } = await startApp(t, { MAX_CONNECTIONS_PER_USER: 2 })
  const open = [await connect(t, wsUrl, bearer(signToken('alice'))), await connect(t, wsUrl, bearer(signToken('alice')))]
  for (const [i, client] of open.entries()) await pong(client, `open${i}`)

  const third = await connect(t, wsUrl, bearer(signToken('alice')))
  t.same(await closedWith(third), { code: 4029, reason: 'too many connections' })
  t.same(third.frames, [], 'no frame before the close')
  const bob = await connect(t, wsUrl, bearer(signToken('bob')))
  await pong(bob, 'bob')
  t.pass('another user is not affected')

  open[0]!.close()
  await open[0]!.closed
  // The server frees the slot when its side of the TCP connection closes, a moment after ours.
  let again = await connect(t, wsUrl, bearer(signToken('alice')))
  for (let tries = 0; tries < 50 && !(await openAfterPing(again)); tries++) {
    await new Promise((resolve) => setTimeout(resolve, 20))
    again = await connect(t, wsUrl, bearer(signToken('alice')))
  }
  await pong(again, 'again')
  t.pass('the freed slot is taken by a new connection')
  const fourth = await connect(t, wsUrl, bearer(signToken('alice')))
  t.equal((await closedWith(fourth)).code, 4029, 'and the limit holds again')
})

t.test('refused upgrades take no slot', async (t) => {
  const { app, wsUrl } = await startApp(t, { MAX_CONNECTIONS_PER_USER: 1 })
  let passedOn = false
  app.guards.reserveConnection({ upgradeAuth: null } as FastifyRequest, {} as FastifyReply, () => (passedOn = true))
  t.ok(passedOn, 'an upgrade without a verified token goes on at once, taking no slot')
  t.equal(app.guards.refusal({ connectionSlot: 'unavailable' } as FastifyRequest)?.code, 1011)
  for (let i = 0; i < 3; i++) {
    const refused = await connect(t, wsUrl, bearer(signToken('alice', { secret: 'another-secret-another-secret-!!' })))
    t.equal((await closedWith(refused)).code, 4001)
  }
  const client = await connect(t, wsUrl, bearer(signToken('alice')))
  await pong(client, 'first')
  const over = await connect(t, wsUrl, bearer(signToken('alice')))
  t.equal((await closedWith(over)).code, 4029)
  await pong(client, 'still')
  t.pass('the refused connection did not take or free the held slot')
})

async function invalidFrames(t: Teardown & { pass(m: string): void }, wsUrl: string, count: number): Promise<TestClient> {
  const client = await connect(t, wsUrl, bearer(signToken('alice')))
  for (let i = 0; i < count; i++) client.send(`not json ${i}`)
  return client
}

t.test('too many invalid frames in a window close 1008', async (t) => {
  const { wsUrl } = await startApp(t, {}, { guards: { invalidFrameLimit: 3, invalidFrameWindowMs: 60_000 } })

  t.test('at the limit: each gets invalid_message, the connection stays', async (t) => {
    const client = await invalidFrames(t, wsUrl, 3)
    for (let i = 0; i < 3; i++) t.match((await client.nextOfType('error')).metadata, { code: 'invalid_message', retryable: false })
    await pong(client, 'after')
    t.equal(client.socket.readyState, WebSocket.OPEN)
  })

  t.test('one over: closed 1008', async (t) => {
    const client = await invalidFrames(t, wsUrl, 4)
    t.same(await closedWith(client), { code: 1008, reason: 'too many invalid frames' })
    t.equal(client.frames.filter((frame) => frame.metadata?.code === 'invalid_message').length, 4, 'each was answered first')
  })
})

t.test('invalid frames are counted per window', async (t) => {
  const { wsUrl } = await startApp(t, {}, { guards: { invalidFrameLimit: 2, invalidFrameWindowMs: 300 } })
  const client = await invalidFrames(t, wsUrl, 2)
  await pong(client, 'first')
  await new Promise((resolve) => setTimeout(resolve, 350))
  client.send('still not json')
  client.send('nor this')
  await pong(client, 'second')
  t.equal(client.socket.readyState, WebSocket.OPEN, 'four invalid frames, but never more than two in a window')
})
