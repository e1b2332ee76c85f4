import t, { type Test } from 'tap'
import type { Duplex } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import type { Connection } from '../../src/ws/connection.ts'
import { AgentClient, AgentError, type AgentClientOptions, type RunEvent, type RunStream, type StateChange } from '../../src/client/index.ts'
import { startApp, signToken } from '../helpers/app.ts'
import { wait } from './scripted-server.ts'

/** An SDK client on the global WebSocket (Node 22+), closed at teardown, recording its states. */
function open(t: Test, options: Partial<AgentClientOptions> & Pick<AgentClientOptions, 'url' | 'token'>) {
  const states: StateChange[] = []
  const client = new AgentClient({
    backoff: { baseMs: 20, maxMs: 200 },
    heartbeatMs: 0,
    ...options,
    onStateChange: (change) => {
      states.push(change)
      options.onStateChange?.(change)
    },
  })
  t.teardown(() => client.close())
  return { client, states }
}

function opened(client: AgentClient, timeoutMs = 5000): Promise<void> {
  const deadline = performance.now() + timeoutMs
  return (async () => {
    while (client.state !== 'open') {
      if (performance.now() > deadline) throw new Error(`not open within ${timeoutMs} ms (state ${client.state})`)
      await wait(5)
    }
  })()
}

async function collect(run: RunStream, each: (event: RunEvent, events: RunEvent[]) => void = () => {}): Promise<RunEvent[]> {
  const events: RunEvent[] = []
  for await (const event of run) {
    events.push(event)
    each(event, events)
  }
  return events
}

function finishOf(events: RunEvent[]): string | undefined {
  const last = events.at(-1)
  return last?.type === 'complete' ? last.metadata.finish_reason : undefined
}

function tokensOf(events: RunEvent[]): string {
  return events.filter((event) => event.type === 'token').map((event) => event.content).join('')
}

/** One run's events: thinking first, complete last, seqs consecutive (nothing missing, nothing twice). */
function checkRun(t: Test, events: RunEvent[]) {
  const first = events[0]
  const last = events.at(-1)
  t.equal(first?.type === 'status' && first.content, 'thinking', 'thinking first')
  t.equal(last?.type, 'complete', 'complete last')
  const seqs = events.map((event) => event.seq)
  t.same(seqs, seqs.map((_, i) => (first?.seq ?? 0) + i), 'consecutive seqs: no gap, no duplicate')
  t.equal(last?.content, tokensOf(events), 'complete.content is the tokens concatenated')
}

/** Raw TCP sockets of the app's upgrades: destroying one is a network drop (1006 on the client). */
function upgrades(app: FastifyInstance): Set<Duplex> {
  const sockets = new Set<Duplex>()
  app.server.on('upgrade', (_request, socket: Duplex) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  return sockets
}

function dropAll(sockets: Set<Duplex>): number {
  const count = sockets.size
  for (const socket of sockets) socket.destroy()
  return count
}

/** Runs `patch` on the server-side connection of each chat before the registry serves it. */
function onServerChat(app: FastifyInstance, patch: (connection: Connection, requestId: string | undefined) => void): void {
  const chat = app.sessions.chat.bind(app.sessions)
  app.sessions.chat = (subscriber, request) => {
    patch(subscriber as Connection, request.requestId)
    return chat(subscriber, request)
  }
}

t.test('a run streams: thinking, tokens, complete; text() is the answer', async (t) => {
  const { wsUrl } = await startApp(t)
  const requests: boolean[] = []
  const { client, states } = open(t, {
    url: wsUrl,
    token: ({ refresh }) => {
      requests.push(refresh)
      return signToken('stream-user')
    },
  })
  const run = client.chat('hello there')
  const events = await collect(run)
  checkRun(t, events)
  t.match(await run.text(), /^You said: "hello there"/)
  const result = await run.result()
  t.equal(result.finishReason, 'stop')
  t.equal(result.runId, run.runId)
  t.ok(result.usage && result.usage.completion_tokens > 0, 'usage from the model')
  t.equal(run.sessionId, client.sessionId)
  t.equal((events[0]?.metadata as { request_id?: string }).request_id, run.id, 'the chat id is echoed as request_id')
  t.ok(run.done)
  t.same(requests, [false], 'one token for one connection')
  t.same(states.map((s) => s.state), ['open'])
})

t.test('tool progress arrives as status events of the run', async (t) => {
  const { wsUrl } = await startApp(t)
  const { client } = open(t, { url: wsUrl, token: () => signToken('tool-user') })
  const events = await collect(client.chat('calculate 2+2'))
  checkRun(t, events)
  const tools = events.filter((event) => event.type === 'status' && event.content.startsWith('tool_'))
  t.same(tools.map((event) => event.type === 'status' && [event.content, (event.metadata as { tool?: string }).tool]), [
    ['tool_call', 'calculate'],
    ['tool_result', 'calculate'],
  ])
  t.match(events.at(-1)?.content, /4/)
})

t.test('the server drops the connection mid-run: the SDK reconnects, resumes, nothing missing or twice', async (t) => {
  const { app, wsUrl } = await startApp(t, { MOCK_TOKEN_DELAY_MS: 15 })
  const sockets = upgrades(app)
  const requests: boolean[] = []
  const { client, states } = open(t, {
    url: wsUrl,
    token: async ({ refresh }) => {
      requests.push(refresh)
      // The reconnect takes a while: the run goes on meanwhile, so the resume has frames to replay.
      if (requests.length > 1) await wait(120)
      return signToken('drop-user')
    },
  })
  let dropped = 0
  const run = client.chat('please tell me something long enough to be interrupted halfway through')
  const events = await collect(run, (event, all) => {
    if (dropped === 0 && all.filter((e) => e.type === 'token').length === 3) dropped = dropAll(sockets)
  })
  t.equal(dropped, 1, 'the connection was dropped after the third token')
  checkRun(t, events)
  t.equal(finishOf(events), 'stop')
  t.same(requests, [false, false], 'the provider is asked again on reconnect')
  t.same(
    states.map((s) => s.state),
    ['open', 'reconnecting', 'open'],
  )
  t.equal(states[1]?.closeCode, 1006)
  t.match(await run.text(), /^You said: "please tell me something long/)
})

t.test('a chat whose ack was lost is sent again with the same id: one run, attached', async (t) => {
  const { app, wsUrl } = await startApp(t, { MOCK_TOKEN_DELAY_MS: 5 })
  const seen: Array<string | undefined> = []
  onServerChat(app, (connection, requestId) => {
    seen.push(requestId)
    // The server takes the first chat, but none of its frames reach the client: the socket dies instead.
    if (seen.length === 1) connection.deliver = () => connection.socket.terminate()
  })
  const { client } = open(t, { url: wsUrl, token: () => signToken('ack-user') })
  const run = client.chat('hello again', { id: 'chat-ack-1' })
  const events = await collect(run)
  checkRun(t, events)
  t.same(seen, ['chat-ack-1', 'chat-ack-1'], 'the same chat frame, sent twice')
  const session = await app.backend.sessions.get('ack-user', client.sessionId)
  t.equal(session?.messages.filter((m) => m.role === 'user').length, 1, 'one run only: the retry was not billed twice')
})

t.test('a chat sent on a connection that dies before the server reads it is sent again', async (t) => {
  const { app, wsUrl } = await startApp(t, { MOCK_TOKEN_DELAY_MS: 1 })
  const sockets = upgrades(app)
  const { client } = open(t, { url: wsUrl, token: () => signToken('unread-user') })
  await opened(client)
  const [socket] = sockets
  // The chat frame's bytes are lost with the connection: the server never serves it.
  socket!.once('data', () => socket!.destroy())
  const events = await collect(client.chat('are you there'))
  checkRun(t, events)
})

t.test('a refused token (4001) triggers exactly one refresh, then the run streams', async (t) => {
  const { wsUrl } = await startApp(t)
  const requests: boolean[] = []
  const { client, states } = open(t, {
    url: wsUrl,
    token: ({ refresh }) => {
      requests.push(refresh)
      return refresh ? signToken('refresh-user') : signToken('refresh-user', { secret: 'another-secret-another-secret-another!' })
    },
  })
  const events = await collect(client.chat('hi'))
  checkRun(t, events)
  t.same(requests, [false, true], 'asked once more, for a fresh token')
  // The server completes the upgrade before it closes 4001 (browsers can read a close code, not a 401).
  t.same(states.map((s) => [s.state, s.closeCode]), [
    ['open', undefined],
    ['reconnecting', 4001],
    ['open', undefined],
  ])
  t.equal(states[1]?.closeReason, 'invalid token')
})

t.test('never reconnects with the token the server refused', async (t) => {
  const { wsUrl } = await startApp(t)
  const refused = signToken('stubborn-user', { secret: 'another-secret-another-secret-another!' })
  const requests: boolean[] = []
  const { client, states } = open(t, {
    url: wsUrl,
    token: ({ refresh }) => {
      requests.push(refresh)
      return refused
    },
  })
  const run = client.chat('hi')
  const error = await run.text().then(
    () => undefined,
    (err: unknown) => err,
  )
  t.ok(error instanceof AgentError)
  t.equal((error as AgentError).code, 'unauthorized')
  t.equal((error as AgentError).closeCode, 4001)
  await t.rejects(collect(run), { code: 'unauthorized' }, 'the iterator fails the same way')
  t.same(requests, [false, true])
  t.equal(client.state, 'closed')
  t.equal(states.at(-1)?.error?.code, 'unauthorized')
  await wait(100)
  t.same(requests, [false, true], 'and it stays closed')
})

t.test('a token that expires mid-run: 4001 token expired, one refresh, the run resumes', async (t) => {
  const { wsUrl } = await startApp(t, { MOCK_TOKEN_DELAY_MS: 60 })
  const requests: boolean[] = []
  const { client, states } = open(t, {
    url: wsUrl,
    token: ({ refresh }) => {
      requests.push(refresh)
      return signToken('expiring-user', { expiresInMs: refresh ? 3_600_000 : 1200 })
    },
  })
  const events = await collect(client.chat('tell me a story that takes longer than my token lives, please, thank you'))
  checkRun(t, events)
  t.same(requests, [false, true])
  const expired = states.find((s) => s.state === 'reconnecting')
  t.same([expired?.closeCode, expired?.closeReason], [4001, 'token expired'])
})

t.test('cancel(): status:cancelled then complete(cancelled); text() is what was produced', async (t) => {
  const { wsUrl } = await startApp(t, { MOCK_TOKEN_DELAY_MS: 20 })
  const { client } = open(t, { url: wsUrl, token: () => signToken('cancel-user') })
  const run = client.chat('say a good number of words so that there is time to cancel this')
  const events = await collect(run, (event) => {
    if (event.type === 'token') run.cancel()
  })
  checkRun(t, events)
  t.ok(events.some((e) => e.type === 'status' && e.content === 'cancelled'))
  t.equal(finishOf(events), 'cancelled')
  const text = await run.text()
  t.equal(text, tokensOf(events))
  t.ok(text.length > 0 && !text.endsWith('real one.'), 'stopped part way')
  run.cancel()
})

t.test('cancel() before the ack: the cancel follows the ack', async (t) => {
  const { wsUrl } = await startApp(t, { MOCK_TOKEN_DELAY_MS: 20 })
  const { client } = open(t, { url: wsUrl, token: () => signToken('early-cancel-user') })
  await opened(client)
  const run = client.chat('stop me before I even start, if you can')
  run.cancel()
  run.cancel()
  const events = await collect(run)
  checkRun(t, events)
  t.equal(finishOf(events), 'cancelled')
})

t.test('cancel() before the chat was ever sent ends the run here, and the server never sees it', async (t) => {
  const { app, wsUrl } = await startApp(t)
  const { client } = open(t, { url: wsUrl, token: () => signToken('unsent-user') })
  const run = client.chat('never sent')
  run.cancel()
  t.same(await collect(run), [])
  t.same(await run.result(), { text: '', finishReason: 'cancelled', runId: undefined, reason: 'cancelled before it was sent' })
  await opened(client)
  const after = await collect(client.chat('the next one runs'))
  checkRun(t, after)
  t.equal((await app.backend.sessions.get('unsent-user', client.sessionId))?.messages.filter((m) => m.role === 'user').length, 1)
})

t.test('an AbortSignal cancels the run; an aborted one never starts', async (t) => {
  const { wsUrl } = await startApp(t, { MOCK_TOKEN_DELAY_MS: 20 })
  const { client } = open(t, { url: wsUrl, token: () => signToken('signal-user') })
  const controller = new AbortController()
  const run = client.chat('another answer long enough to abort in the middle of it', { signal: controller.signal })
  const events = await collect(run, (event) => {
    if (event.type === 'token') controller.abort()
  })
  t.equal(finishOf(events), 'cancelled')

  const aborted = client.chat('too late', { signal: AbortSignal.abort() })
  t.same(await aborted.result(), { text: '', finishReason: 'cancelled', runId: undefined, reason: 'cancelled before it was sent' })

  const kept = new AbortController()
  const finished = client.chat('hi', { signal: kept.signal })
  t.equal((await finished.result()).finishReason, 'stop')
  kept.abort()
  t.equal((await finished.result()).finishReason, 'stop', 'aborting after the end changes nothing')
})

t.test('chats in one session run one after another; a waiting one can be cancelled', async (t) => {
  const { wsUrl } = await startApp(t, { MOCK_TOKEN_DELAY_MS: 2 })
  const { client } = open(t, { url: wsUrl, token: () => signToken('queue-user') })
  const first = client.chat('first question')
  const dropped = client.chat('never mind this one')
  const second = client.chat('second question')
  dropped.cancel()
  const [a, b] = await Promise.all([collect(first), collect(second)])
  checkRun(t, a)
  checkRun(t, b)
  t.ok((b[0]?.seq ?? 0) > (a.at(-1)?.seq ?? Infinity), 'the second started after the first completed')
  t.match(a.at(-1)?.content, /first question/)
  t.match(b.at(-1)?.content, /second question/)
  t.equal((await dropped.result()).finishReason, 'cancelled')
  const other = await collect(client.chat('in another session', { sessionId: 'other-session-1' }))
  checkRun(t, other)
  t.equal(other[0]?.session_id, 'other-session-1')
})

t.test('a resume older than what the server holds fails the run with history_gone', async (t) => {
  const { app, wsUrl } = await startApp(t, { MOCK_TOKEN_DELAY_MS: 2, RESUME_BUFFER_EVENTS: 3 })
  const sockets = upgrades(app)
  let calls = 0
  const { client } = open(t, {
    url: wsUrl,
    token: async () => {
      // Away long enough for the whole run to pass, and out of the 3 events held.
      if (++calls > 1) await wait(300)
      return signToken('gone-user')
    },
  })
  const run = client.chat('a long enough answer to overflow a tiny resume buffer, please')
  const seen: RunEvent[] = []
  await t.rejects(
    collect(run, (event, all) => {
      seen.push(event)
      if (all.length === 2) dropAll(sockets)
    }),
    { name: 'AgentError', code: 'history_gone', retryable: false },
  )
  await t.rejects(run.text(), { code: 'history_gone' })
  t.equal(seen.length, 2)
  t.equal(client.state, 'open', 'the connection itself is fine')
})

t.test('events that nobody reads are capped; text() still answers', async (t) => {
  const { wsUrl } = await startApp(t)
  const { client } = open(t, { url: wsUrl, token: () => signToken('unread-events-user'), maxBufferedEvents: 3 })
  const run = client.chat('hello there')
  t.match(await run.text(), /^You said/)
  await t.rejects(collect(run), { code: 'overflow' })
})

t.test('leaving the loop early does not cancel the run', async (t) => {
  const { wsUrl } = await startApp(t)
  const { client } = open(t, { url: wsUrl, token: () => signToken('early-exit-user') })
  const run = client.chat('hello there')
  for await (const event of run) if (event.type === 'token') break
  t.equal((await run.result()).finishReason, 'stop')
})

t.test('close(): runs still going fail with closed; nothing reconnects; chat() after it fails', async (t) => {
  const { wsUrl } = await startApp(t, { MOCK_TOKEN_DELAY_MS: 50 })
  const { client, states } = open(t, { url: wsUrl, token: () => signToken('close-user') })
  const run = client.chat('a slow answer')
  const waiting = client.chat('queued behind it')
  for await (const event of run) if (event.type === 'token') break
  client.close()
  client.close()
  await t.rejects(run.text(), { code: 'closed' })
  await t.rejects(waiting.text(), { code: 'closed' })
  t.equal(client.state, 'closed')
  t.same(states.map((s) => s.state), ['open', 'closed'])
  t.equal(states.at(-1)?.error, undefined, 'a requested close carries no error')
  await t.rejects(client.chat('after').text(), { code: 'closed' })
  run.cancel()
})

t.test('shutdown closes 1012: the SDK reconnects at once, then backs off while the server is gone', async (t) => {
  const { app, wsUrl } = await startApp(t, { SHUTDOWN_GRACE_MS: 0 })
  const { client, states } = open(t, {
    url: wsUrl,
    token: () => signToken('restart-user'),
    backoff: { baseMs: 60_000, maxMs: 60_000 },
    random: () => 0.5,
  })
  await opened(client)
  await app.close()
  const deadline = performance.now() + 3000
  while (states.filter((s) => s.state === 'reconnecting').length < 2 && performance.now() < deadline) await wait(10)
  const reconnects = states.filter((s) => s.state === 'reconnecting')
  t.same(reconnects[0] && [reconnects[0].closeCode, reconnects[0].retryInMs], [1012, 0], 'at once after 1012')
  t.equal(reconnects[1]?.closeCode, 1006, 'the next attempt found nobody')
  t.equal(reconnects[1]?.retryInMs, 30_000, 'then backs off: jitter 0.5 of min(60 s max, 60 s base · 2¹)')
})
