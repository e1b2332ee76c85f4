import t from 'tap'
import WebSocket from 'ws'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { ServerFrame } from '../../src/protocol/index.ts'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer, type TestClient } from '../helpers/ws-client.ts'
import { closedWithin, roomy, sleep } from './util.ts'

const serverFrame = TypeCompiler.Compile(ServerFrame)
const long = (n: number) => 'a'.repeat(n)

/** Every kind of frame the contract says must be answered invalid_message (name, raw text, echoed session). */
const invalid: Array<[string, string | Buffer, string?]> = [
  ['non-JSON text', 'hello'],
  ['truncated JSON', '{"type":"ping"'],
  ['empty text frame', ''],
  ['JSON array', '[{"type":"ping"}]'],
  ['JSON string', '"ping"'],
  ['JSON number', '42'],
  ['JSON null', 'null'],
  ['JSON true', 'true'],
  ['binary frame', Buffer.from('{"type":"ping"}')],
  ['unknown type', '{"type":"hello"}'],
  ['type from the prototype chain', '{"type":"constructor"}'],
  ['__proto__ type', '{"type":"__proto__"}'],
  ['missing type', '{"session_id":"s1"}', 's1'],
  ['type not a string', '{"type":1}'],
  ['chat without content', '{"type":"chat","session_id":"s1"}', 's1'],
  ['resume without session_id', '{"type":"resume","last_seq":0}'],
  ['resume without last_seq', '{"type":"resume","session_id":"s1"}', 's1'],
  ['auth without token', '{"type":"auth"}'],
  ['chat content not a string', '{"type":"chat","content":5}'],
  ['chat content an object', '{"type":"chat","content":{"text":"hi"}}'],
  ['ping session_id a number', '{"type":"ping","session_id":5}'],
  ['resume last_seq a string', '{"type":"resume","session_id":"s1","last_seq":"3"}', 's1'],
  ['chat id a number', '{"type":"chat","content":"hi","id":7}'],
  ['extra field on ping', '{"type":"ping","extra":1}'],
  ['extra field on chat', '{"type":"chat","content":"hi","model":"gpt-5"}'],
  ['extra field on cancel', '{"type":"cancel","session_id":"s1","force":true}', 's1'],
  ['session_id with a space', '{"type":"ping","session_id":"a b"}'],
  ['session_id with a slash', '{"type":"cancel","session_id":"a/b"}'],
  ['session_id with a non-ASCII letter', '{"type":"ping","session_id":"é"}'],
  ['session_id empty', '{"type":"ping","session_id":""}'],
  ['session_id of 129 characters', JSON.stringify({ type: 'ping', session_id: long(129) })],
  ['last_seq negative', '{"type":"resume","session_id":"s1","last_seq":-1}', 's1'],
  ['last_seq not an integer', '{"type":"resume","session_id":"s1","last_seq":1.5}', 's1'],
  ['empty content', '{"type":"chat","content":""}'],
  ['id of 129 characters', JSON.stringify({ type: 'chat', content: 'hi', id: long(129) })],
  ['id empty', '{"type":"chat","content":"hi","id":""}'],
  ['auth token empty', '{"type":"auth","token":""}'],
]

function sendRaw(client: TestClient, data: string | Buffer): void {
  if (Buffer.isBuffer(data)) client.socket.send(data, { binary: true })
  else client.socket.send(data)
}

t.test('every invalid frame kind: invalid_message, retryable false, no seq, connection stays open', async (t) => {
  const { wsUrl } = await startApp(t, roomy, { guards: { invalidFrameLimit: 1000 } })
  const client = await connect(t, wsUrl, bearer(signToken('alice')))
  t.ok(invalid.length >= 30, `${invalid.length} kinds`)
  for (const [name, data, sessionId = ''] of invalid) {
    sendRaw(client, data)
    const error = await client.next()
    t.equal(error.type, 'error', `${name}: error`)
    t.equal(error.metadata?.code, 'invalid_message', `${name}: invalid_message`)
    t.equal(error.metadata?.retryable, false, `${name}: not retryable`)
    t.notOk('seq' in error, `${name}: no seq`)
    t.equal(error.session_id, sessionId, `${name}: session_id ${JSON.stringify(sessionId)}`)
    t.ok(serverFrame.Check(error), `${name}: matches the server frame schema`)
    t.type((error as { content?: unknown }).content, 'string')
    client.send({ type: 'ping', session_id: 'after' })
    t.same(await client.next(), { type: 'pong', session_id: 'after' }, `${name}: still served`)
  }
  t.equal(client.socket.readyState, WebSocket.OPEN)
})

t.test('the reason names the problem', async (t) => {
  const { wsUrl } = await startApp(t, roomy)
  const client = await connect(t, wsUrl, bearer(signToken('alice')))
  const reasons: Array<[string, RegExp]> = [
    ['nope', /not valid JSON/],
    ['[1]', /JSON object/],
    ['{"type":"x"}', /unknown frame type: expected one of chat, cancel, ping, resume, auth/],
    ['{"type":"resume","session_id":"s","last_seq":-1}', /invalid resume frame: last_seq/],
    ['{"type":"ping","x":1}', /invalid ping frame/],
  ]
  for (const [data, reason] of reasons) {
    client.socket.send(data)
    t.match((await client.nextOfType('error')) as { content?: string }, { content: reason })
  }
  client.socket.send(Buffer.from('{}'), { binary: true })
  t.match((await client.nextOfType('error')) as { content?: string }, { content: /binary frames are not accepted/ })
})

t.test('too many invalid frames in a window: the limit, and one more', async (t) => {
  const { app, wsUrl } = await startApp(t, roomy)
  const { limit } = app.guards.invalidFrames
  t.ok(limit > 0, `limit ${limit}`)

  t.test('at the limit the connection is still served', async (t) => {
    const client = await connect(t, wsUrl, bearer(signToken('alice')))
    for (let i = 0; i < limit; i++) client.socket.send('junk')
    client.send({ type: 'ping' })
    await client.nextOfType('pong')
    t.equal(client.frames.filter((f) => f.type === 'error').length, limit)
    t.equal(client.socket.readyState, WebSocket.OPEN)
  })

  t.test('one more closes it 1008', async (t) => {
    const client = await connect(t, wsUrl, bearer(signToken('alice')))
    for (let i = 0; i <= limit; i++) client.socket.send('junk')
    t.same(await closedWithin(client), { code: 1008, reason: 'too many invalid frames' })
  })

  t.test('valid frames in between do not reset the count', async (t) => {
    const client = await connect(t, wsUrl, bearer(signToken('alice')))
    for (let i = 0; i <= limit; i++) {
      client.socket.send('junk')
      client.send({ type: 'ping' })
    }
    t.same(await closedWithin(client), { code: 1008, reason: 'too many invalid frames' })
  })
})

t.test('the invalid-frame window slides', async (t) => {
  const { wsUrl } = await startApp(t, roomy, { guards: { invalidFrameLimit: 3, invalidFrameWindowMs: 400 } })
  const client = await connect(t, wsUrl, bearer(signToken('alice')))
  for (let i = 0; i < 3; i++) client.socket.send('junk')
  client.send({ type: 'ping' })
  await client.nextOfType('pong')
  await sleep(500)
  for (let i = 0; i < 3; i++) client.socket.send('junk')
  client.send({ type: 'ping' })
  await client.nextOfType('pong')
  t.equal(client.socket.readyState, WebSocket.OPEN, '6 invalid frames, but never more than 3 in 400 ms')
  client.socket.send('junk')
  t.same(await closedWithin(client), { code: 1008, reason: 'too many invalid frames' })
})
