import t, { type Test } from 'tap'
import { Ajv } from 'ajv'
import addFormats from 'ajv-formats'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer } from '../helpers/ws-client.ts'
import { createFakeUpstream, textSteps, type FakeUpstream } from '../helpers/fake-upstream.ts'
import { createMemoryBackend } from '../../src/store/memory/index.ts'
import { SessionView, visibleMessages } from '../../src/routes/sessions.ts'

/** Text, then a tool call, then more text in the next round; or a slow stream to delete mid-way. */
async function upstream(t: Test): Promise<FakeUpstream> {
  const up = await createFakeUpstream((request) => {
    const last = request.body.messages.at(-1)
    if (last.role === 'tool') return { steps: textSteps(' It is 5.') }
    if (last.content === 'go slow') return { steps: textSteps(Array(200).fill(' tick'), { delayMs: 25 }) }
    return {
      steps: [
        { text: 'Let me check.' },
        { toolCalls: [{ index: 0, id: 'call_1', name: 'calculate', arguments: '{"expression":"2+3"}' }] },
        { finish: 'tool_calls' },
        { done: true },
      ],
    }
  })
  t.teardown(() => up.close())
  return up
}

async function setup(t: Test) {
  const up = await upstream(t)
  const started = await startApp(t, { modelProvider: 'openai', OPENAI_BASE_URL: up.baseURL, OPENAI_API_KEY: 'test' })
  const request = (method: string, id: string, token?: string) =>
    fetch(`${started.baseUrl}/v1/sessions/${id}`, { method, headers: token ? { authorization: `Bearer ${token}` } : {} })
  return { up, ...started, request }
}

const alice = signToken('alice')
const bob = signToken('bob')

t.test('the owner gets the history as a chat shows it', async (t) => {
  const { wsUrl, request } = await setup(t)
  const client = await connect(t, wsUrl, bearer(alice))
  const before = Date.now()
  client.send({ type: 'chat', session_id: 'chat-1', content: 'what is 2+3?' })
  const first = (await client.untilComplete()).at(-1)!
  client.send({ type: 'chat', session_id: 'chat-1', content: 'again please' })
  const second = (await client.untilComplete()).at(-1)!
  t.equal(first.content, 'Let me check. It is 5.')

  const response = await request('GET', 'chat-1', alice)
  t.equal(response.status, 200)
  t.match(response.headers.get('content-type'), /^application\/json/)
  const body = (await response.json()) as SessionView
  const ajv = new Ajv()
  addFormats.default(ajv)
  const valid = ajv.compile(SessionView)
  t.ok(valid(body), `matches the documented schema ${JSON.stringify(valid.errors)}`)
  t.same(body.messages.map(({ id: _id, ...message }: { id: string }) => message), [
    { role: 'user', content: 'what is 2+3?' },
    { role: 'assistant', content: first.content, run_id: first.metadata?.run_id },
    { role: 'user', content: 'again please' },
    { role: 'assistant', content: second.content, run_id: second.metadata?.run_id },
  ], 'tool plumbing left out; each answer equals its complete.content, with the run that produced it')
  t.equal(new Set(body.messages.map((message: { id: string }) => message.id)).size, 4, 'each message has an id of its own')
  t.equal(body.active_run, null)
  t.same(body.pending, [])
  t.equal(body.session_id, 'chat-1')
  for (const stamp of [body.created_at, body.updated_at]) t.match(stamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
  t.ok(Date.parse(body.created_at) >= before - 1 && Date.parse(body.updated_at) >= Date.parse(body.created_at))
})

t.test('nobody else learns anything', async (t) => {
  const { wsUrl, request } = await setup(t)
  const client = await connect(t, wsUrl, bearer(alice))
  client.send({ type: 'chat', session_id: 'private', content: 'hi' })
  await client.untilComplete()

  for (const method of ['GET', 'DELETE']) {
    const other = await request(method, 'private', bob)
    t.equal(other.status, 404, `${method} by another user: as if unknown (1.1: ids are per owner)`)
    t.same(await other.json(), { error: 'not_found', message: 'unknown session' })
    const unknown = await request(method, 'never-created', alice)
    t.equal(unknown.status, 404, `${method} of an unknown session`)
    t.same(await unknown.json(), { error: 'not_found', message: 'unknown session' })
    const anonymous = await request(method, 'private')
    t.equal(anonymous.status, 401)
    t.same(await anonymous.json(), { error: 'unauthorized', message: 'missing token' })
    const expired = await request(method, 'private', signToken('alice', { expiresInMs: -1000 }))
    t.same(await expired.json(), { error: 'unauthorized', message: 'token expired' })
    const badId = await request(method, 'not.a.valid.id', alice)
    t.equal(badId.status, 400)
    t.match(await badId.json(), { error: 'invalid_message', message: /params\/id/ })
    t.equal((await request(method, 'not.a.valid.id')).status, 401, 'authentication comes before validation')
  }
  t.equal((await request('GET', 'private', alice)).status, 200, 'a refused delete deleted nothing')
})

t.test('DELETE aborts the active run, then forgets the session', async (t) => {
  const { up, wsUrl, request } = await setup(t)
  const client = await connect(t, wsUrl, bearer(alice))
  client.send({ type: 'chat', session_id: 'doomed', content: 'go slow' })
  const upstreamRequest = await up.nextRequest()
  await client.nextOfType('token')

  const response = await request('DELETE', 'doomed', alice)
  t.equal(response.status, 204)
  t.equal(await response.text(), '')
  await upstreamRequest.closed
  t.ok(upstreamRequest.closedByClient, 'the upstream saw its request closed')
  const cancelled = await client.next((f) => f.type === 'status' && f.content === 'cancelled')
  const complete = await client.nextOfType('complete')
  t.equal(cancelled.seq! + 1, complete.seq)
  t.match(complete.metadata, { finish_reason: 'cancelled', reason: 'deleted' })
  t.ok(complete.content!.length > 0 && complete.content!.length < 200 * ' tick'.length, 'the text produced so far')

  t.equal((await request('GET', 'doomed', alice)).status, 404)
  client.send({ type: 'resume', session_id: 'doomed', last_seq: 0 })
  t.equal((await client.nextOfType('error')).metadata!.code, 'not_found')
  t.equal((await request('DELETE', 'doomed', alice)).status, 404, 'deleting twice: the second finds nothing')
})

t.test('DELETE of an idle session', async (t) => {
  const { wsUrl, request } = await setup(t)
  const client = await connect(t, wsUrl, bearer(alice))
  client.send({ type: 'chat', session_id: 'idle', content: 'hi' })
  await client.untilComplete()
  t.equal((await request('DELETE', 'idle', alice)).status, 204)
  t.equal((await request('GET', 'idle', alice)).status, 404)
})

t.test('a store failure is a 500 that says nothing more', async (t) => {
  const backend = createMemoryBackend({ ttlSeconds: 60, maxEvents: 100 })
  backend.sessions.get = async () => {
    throw new Error('the disk is on fire')
  }
  const { baseUrl } = await startApp(t, {}, { backend })
  const response = await fetch(`${baseUrl}/v1/sessions/any`, { headers: { authorization: `Bearer ${alice}` } })
  t.equal(response.status, 500)
  t.same(await response.json(), { error: 'internal', message: 'internal error' })
})

t.test('visible messages', async (t) => {
  t.same(
    visibleMessages([
      { role: 'system', content: 'be nice' },
      { role: 'user', content: 'time?' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'c', type: 'function', function: { name: 'get_current_time', arguments: '{}' } }] },
      { role: 'tool', tool_call_id: 'c', content: '"12:00"' },
      { id: 'a1', role: 'assistant', content: 'Noon.', run_id: 'r1' },
      { id: 'u2', role: 'user', content: 'thanks' },
      { role: 'assistant', content: '' },
    ]),
    [
      { id: 'm1', role: 'user', content: 'time?' },
      { id: 'a1', role: 'assistant', content: 'Noon.', run_id: 'r1' },
      { id: 'u2', role: 'user', content: 'thanks' },
    ],
    'a message stored before ids existed gets one from its place',
  )
})
