// stop() closes the upstream request, of the run its request follows only; resume replays the
// active run's whole UI message then streams live, or answers no-active; a session is the same
// in both dialects.
import t from 'tap'
import WebSocket from 'ws'
import { startWithUpstream } from '../../runs/helpers.ts'
import { textSteps } from '../../helpers/fake-upstream.ts'
import { signToken } from '../../helpers/app.ts'
import { bearer, connect } from '../../helpers/ws-client.ts'
import { waitFor } from '../../ws/util.ts'
import { aiSdkUrl, readAll, send, textOf, transportFor, userMessage } from './helpers.ts'

const slow = (count: number, delayMs = 20) => textSteps(Array.from({ length: count }, (_, i) => ` w${i}`), { delayMs })
const whole = (count: number) => Array.from({ length: count }, (_, i) => ` w${i}`).join('')

t.test('stop() cancels the run and closes the upstream request; the next send finds the session free', async (t) => {
  const { up, wsUrl, baseUrl } = await startWithUpstream(t, (request) => (request.index === 0 ? { steps: slow(200) } : { steps: textSteps('next') }))
  const transport = transportFor(wsUrl)
  t.teardown(() => transport.close())
  const abort = new AbortController()
  const reader = (await send(transport, 'stop', [userMessage('go')], { abortSignal: abort.signal })).getReader()
  while ((await reader.read()).value?.type !== 'text-delta');
  abort.abort()
  t.ok((await reader.read()).done, 'the SDK closed the stream')
  const upstream = up.requests[0]!
  await upstream.closed
  t.ok(upstream.closedByClient, 'the upstream request was closed')
  const next = await readAll(await send(transport, 'stop', [userMessage('again')]))
  t.equal(textOf(next.message), 'next', 'not busy: the abort waited for the run to end')
  const response = await fetch(`${baseUrl}/v1/sessions/stop`, { headers: { authorization: `Bearer ${signToken('alice')}` } })
  const stored = (await response.json()) as { messages: Array<{ role: string; content: string }> }
  t.equal(stored.messages.length, 4, 'the cancelled answer and the next one are both in the history')
})

t.test('resume: no-active without a run; after a dropped socket the whole answer, exactly once', async (t) => {
  const { wsUrl } = await startWithUpstream(t, () => ({ steps: slow(30) }))
  const first = transportFor(wsUrl)
  t.equal(await first.reconnectToStream({ chatId: 'nothing-here' }), null, 'unknown session: no-active')
  t.equal(await first.reconnectToStream({ chatId: 'not a session id!' }), null, 'not even an id: no-active')
  const reader = (await send(first, 'drop', [userMessage('go')])).getReader()
  while ((await reader.read()).value?.type !== 'text-delta');
  first.close()
  const second = transportFor(wsUrl)
  t.teardown(() => second.close())
  const resumed = await second.reconnectToStream({ chatId: 'drop' })
  t.ok(resumed, 'an active run')
  const { message, chunks } = await readAll(resumed!)
  t.equal(textOf(message), whole(30), 'every token once, from the first')
  t.equal(chunks[0]?.type, 'start')
  t.equal(await second.reconnectToStream({ chatId: 'drop' }), null, 'finished: no-active')
})

t.test('a session started on /ws/agent resumes here, and one started here reads the same there', async (t) => {
  const { wsUrl } = await startWithUpstream(t, () => ({ steps: slow(20) }))
  const agent = await connect(t, wsUrl, bearer(signToken('alice')))
  agent.send({ type: 'chat', session_id: 'both', content: 'hi' })
  await agent.next((frame) => frame.type === 'token')
  const transport = transportFor(wsUrl)
  t.teardown(() => transport.close())
  const { message } = await readAll((await transport.reconnectToStream({ chatId: 'both' }))!)
  const complete = await agent.next((frame) => frame.type === 'complete')
  t.equal(textOf(message), (complete as { content: string }).content)

  const mine = await readAll(await send(transport, 'both', [userMessage('more')]))
  agent.send({ type: 'resume', session_id: 'both', last_seq: 0 })
  const completes: string[] = []
  while (completes.length < 2) {
    const frame = await agent.next((f) => f.type === 'complete')
    completes.push((frame as { content: string }).content)
  }
  t.equal(completes[1], textOf(mine.message), 'the same run in the other dialect')
})

t.test('the handshake: same authentication, ai-sdk.v1 selected, a refused frame closes 1008', async (t) => {
  const { wsUrl, app } = await startWithUpstream(t, undefined, { ALLOWED_ORIGINS: ['https://app.example'], MAX_CONNECTIONS_PER_USER: 2, HEARTBEAT_INTERVAL_MS: 40 })
  const url = aiSdkUrl(wsUrl)
  const open = (protocols: string[], headers: Record<string, string> = {}) => new WebSocket(url, protocols, { headers })
  const closed = (socket: WebSocket) => new Promise<{ code: number; reason: string }>((resolve) => socket.once('close', (code, reason) => resolve({ code, reason: reason.toString() })))

  const anonymous = open(['ai-sdk.v1'])
  t.match(await closed(anonymous), { code: 4001, reason: 'missing token' })
  const stranger = open(['ai-sdk.v1', `bearer.${signToken('alice')}`], { origin: 'https://evil.example' })
  t.match(await closed(stranger), { code: 4003 }, 'origins as /ws/agent')

  const socket = open(['ai-sdk.v1', `bearer.${signToken('alice')}`])
  await new Promise((resolve) => socket.once('open', resolve))
  t.equal(socket.protocol, 'ai-sdk.v1')
  const ended = closed(socket)
  socket.send(JSON.stringify({ type: 'send', requestId: 'r', id: 'x', trigger: 'submit-message', messages: [], headers: {}, body: {} }))
  t.same(await ended, { code: 1008, reason: 'invalid frame' })

  const agentOnly = open(['agent.v1', `bearer.${signToken('bob')}`])
  const refused = await new Promise<string>((resolve) => agentOnly.once('error', (err) => resolve(err.message)))
  t.match(refused, /subprotocol/, 'agent.v1 is not selected here')
  const agent = new WebSocket(wsUrl, ['agent.v1', `bearer.${signToken('bob')}`])
  await new Promise((resolve) => agent.once('open', resolve))
  t.equal(agent.protocol, 'agent.v1', 'and still is on /ws/agent')
  agent.close()

  // A client that never answers pings is dropped by the heartbeat; one over the cap gets 4029.
  const mute = new WebSocket(url, ['ai-sdk.v1', `bearer.${signToken('carol')}`], { autoPong: false })
  const keeper = new WebSocket(url, ['ai-sdk.v1', `bearer.${signToken('carol')}`])
  await Promise.all([new Promise((resolve) => mute.once('open', resolve)), new Promise((resolve) => keeper.once('open', resolve))])
  const third = open(['ai-sdk.v1', `bearer.${signToken('carol')}`])
  t.match(await closed(third), { code: 4029 })
  t.match(await closed(mute), { code: 1006 }, 'terminated by the heartbeat')
  t.equal(keeper.readyState, WebSocket.OPEN, 'the one that answers stays')

  const keeperClosed = closed(keeper)
  const draining = app.drain()
  const late = open(['ai-sdk.v1', `bearer.${signToken('dave')}`])
  const status = await new Promise<number>((resolve) => late.once('unexpected-response', (_request, response) => resolve(response.statusCode ?? 0)))
  t.equal(status, 503, 'draining: no new connections')
  t.match(await keeperClosed, { code: 1012 }, 'open ones closed once drained')
  await draining
})

t.test('abort cancels exactly the run its request follows: the run queued behind it goes on', async (t) => {
  const { up, app, wsUrl } = await startWithUpstream(t, (request) => ({ steps: slow(request.index === 0 ? 200 : 20) }))
  const transport = transportFor(wsUrl)
  t.teardown(() => transport.close())
  const abort = new AbortController()
  const first = (await send(transport, 'exact', [userMessage('one')], { abortSignal: abort.signal })).getReader()
  const start = (await first.read()).value as { type: string; messageId: string }
  while ((await first.read()).value?.type !== 'text-delta');
  const queued = (await send(transport, 'exact', [userMessage('two')], { body: { on_busy: 'enqueue' } })).getReader()
  abort.abort()
  await up.requests[0]!.closed
  t.ok(up.requests[0]!.closedByClient, 'the run it followed was cancelled')
  let text = ''
  for (let read = await queued.read(); !read.done; read = await queued.read()) {
    if (read.value.type === 'text-delta') text += read.value.delta
    // While the queued run streams, the first run's id names no active run: nothing is cancelled.
    if (text === ' w0') await t.rejects(app.sessions.cancel('alice', 'exact', start.messageId), { code: 'no_active_run' })
  }
  t.equal(text, whole(20), 'the queued run went on to its end')
})
