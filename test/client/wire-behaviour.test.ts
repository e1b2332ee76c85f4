import t, { type Test } from 'tap'
import { AgentClient, type AgentClientOptions, type StateChange, type WebSocketConstructor } from '../../src/client/index.ts'
import { ScriptedServer, runFrames, wait } from './scripted-server.ts'

/** A WebSocket the test drives by hand, for event orders a real server cannot produce on demand. */
class FakeSocket extends EventTarget {
  readonly url: string
  readonly protocols: string[]
  readyState = 0

  constructor(url: string, protocols: string[]) {
    super()
    this.url = url
    this.protocols = protocols
  }

  send(): void {}

  close(): void {
    this.readyState = 3
  }

  fire(type: string, fields: Record<string, unknown> = {}): void {
    if (type === 'open') this.readyState = 1
    this.dispatchEvent(Object.assign(new Event(type), fields))
  }
}

function open(t: Test, options: Partial<AgentClientOptions> & Pick<AgentClientOptions, 'url'>) {
  const states: StateChange[] = []
  const tokens: boolean[] = []
  const client = new AgentClient({
    token: ({ refresh }) => {
      tokens.push(refresh)
      return `token-${tokens.length}`
    },
    backoff: { baseMs: 20, maxMs: 200 },
    heartbeatMs: 0,
    ...options,
    onStateChange: (change) => states.push(change),
  })
  t.teardown(() => client.close())
  return { client, states, tokens }
}

async function until(condition: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = performance.now() + timeoutMs
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`)
    await wait(5)
  }
}

t.test('authenticates through the subprotocol: agent.v1 and bearer.<token>', async (t) => {
  const server = await ScriptedServer.start(t)
  open(t, { url: server.url, token: () => 'eyJ.abc-_.def' })
  const connection = await server.connection(0)
  t.same(connection.protocols, ['agent.v1', 'bearer.eyJ.abc-_.def'])
})

t.test('final close codes: no reconnect, runs fail with a code saying why', async (t) => {
  const cases = [
    { code: 4003, reason: 'forbidden origin', error: 'forbidden_origin' },
    { code: 1008, reason: 'slow client', error: 'policy_violation' },
    { code: 1009, reason: '', error: 'policy_violation' },
    { code: 1000, reason: '', error: 'closed' },
  ]
  for (const { code, reason, error } of cases) {
    await t.test(`${code} is final`, async (t) => {
      const server = await ScriptedServer.start(t, (connection) => connection.close(code, reason))
      const { client, states, tokens } = open(t, { url: server.url })
      const run = client.chat('hello')
      await t.rejects(run.text(), { name: 'AgentError', code: error, closeCode: code })
      t.equal(client.state, 'closed')
      t.same([states.at(-1)?.state, states.at(-1)?.closeCode, states.at(-1)?.closeReason], ['closed', code, reason])
      t.equal(states.at(-1)?.error?.code, error)
      await wait(100) // five backoff ceilings: a reconnect would have happened by now
      t.equal(server.connections.length, 1, 'never reconnected')
      t.same(tokens, [false])
      await t.rejects(client.chat('again').text(), { code: error }, 'later chats fail for the same reason')
    })
  }
})

t.test('4029 and 1011 back off with jitter, bounded, then reconnect', async (t) => {
  const codes = [4029, 1011, 4029]
  const server = await ScriptedServer.start(t, (connection) => {
    const code = codes[connection.index]
    if (code) connection.close(code)
  })
  const { client, states, tokens } = open(t, {
    url: server.url,
    backoff: { baseMs: 40, maxMs: 100 },
    random: () => 0.5,
  })
  await server.connection(3)
  await until(() => client.state === 'open')
  const reconnecting = states.filter((s) => s.state === 'reconnecting')
  t.same(
    reconnecting.map((s) => [s.closeCode, s.retryInMs]),
    [
      [4029, 20],
      [1011, 40],
      [4029, 50],
    ],
    'half of min(100, 40·2^n): jittered, doubling, capped',
  )
  t.same(tokens, [false, false, false, false], 'a token for every connection')
})

t.test('a frame from the server resets the backoff', async (t) => {
  const server = await ScriptedServer.start(t, (connection) => {
    if (connection.index === 0) connection.close(1011)
    if (connection.index === 1) {
      connection.send({ type: 'pong', session_id: '' })
      setTimeout(() => connection.close(1011), 20)
    }
  })
  const { states } = open(t, { url: server.url, backoff: { baseMs: 40, maxMs: 1000 }, random: () => 0.5 })
  await server.connection(2)
  t.same(
    states.filter((s) => s.state === 'reconnecting').map((s) => s.retryInMs),
    [20, 20],
    'attempt 0 again after the server answered',
  )
})

t.test('1012 reconnects at once, whatever the backoff', async (t) => {
  const server = await ScriptedServer.start(t, (connection) => {
    if (connection.index === 0) connection.close(1012, 'service restart')
  })
  const { client, states } = open(t, { url: server.url, backoff: { baseMs: 60_000, maxMs: 60_000 } })
  await server.connection(1, 1000)
  await until(() => client.state === 'open')
  t.same(states.find((s) => s.state === 'reconnecting'), {
    state: 'reconnecting',
    closeCode: 1012,
    closeReason: 'service restart',
    retryInMs: 0,
  })
})

t.test('gives up after maxReconnectAttempts: closed, unreachable', async (t) => {
  const server = await ScriptedServer.start(t)
  const url = server.url
  await server.close()
  const { client, states } = open(t, { url, maxReconnectAttempts: 2 })
  const run = client.chat('anyone?')
  await t.rejects(run.text(), { code: 'unreachable', retryable: true, closeCode: 1006 })
  t.same(states.map((s) => s.state), ['reconnecting', 'reconnecting', 'closed'])
  t.match(states.at(-1)?.error?.message, /gave up after 2 reconnect attempts/)
})

t.test('a token provider that throws is reported as unreachable (a server that is down, not a refused token) and asked again after a backoff', async (t) => {
  const server = await ScriptedServer.start(t)
  const errors: string[] = []
  let calls = 0
  const { client } = open(t, {
    url: server.url,
    token: () => {
      if (++calls === 1) throw new Error('identity provider down')
      if (calls === 2) throw 'offline'
      return 'token'
    },
    onError: (error) => errors.push(`${error.code}: ${error.message}`),
  })
  await until(() => client.state === 'open')
  t.equal(calls, 3)
  t.same(errors, ['unreachable: the token provider failed: identity provider down', 'unreachable: the token provider failed: offline'])
})

t.test('a token the WebSocket cannot carry closes the client', async (t) => {
  const server = await ScriptedServer.start(t)
  const { client, states } = open(t, { url: server.url, token: () => 'not a token' })
  await until(() => client.state === 'closed')
  t.equal(states.at(-1)?.error?.code, 'unreachable')
  t.match(states.at(-1)?.error?.message, /cannot open a WebSocket/)
  t.equal(server.connections.length, 0)
})

t.test('close() during the token request, or while connecting, leaves nothing behind', async (t) => {
  const server = await ScriptedServer.start(t)
  let release!: (token: string) => void
  const pending = open(t, { url: server.url, token: () => new Promise<string>((resolve) => (release = resolve)) })
  await until(() => release !== undefined)
  pending.client.close()
  release('token')
  let asked = false
  const failing = open(t, {
    url: server.url,
    token: () => {
      asked = true
      return Promise.reject(new Error('late'))
    },
  })
  await Promise.resolve() // the client asks for its token in a microtask; its refusal lands in a later one
  t.ok(asked)
  failing.client.close()
  const connecting = open(t, { url: server.url })
  await wait(0)
  connecting.client.close()
  const never = open(t, { url: server.url })
  never.client.close()
  await wait(100)
  t.equal(server.connections.filter((c) => c.socket.readyState === c.socket.OPEN).length, 0)
  t.same([pending.client.state, failing.client.state, connecting.client.state], ['closed', 'closed', 'closed'])
  t.same(never.tokens, [], 'closed before it started: no token asked for')
})

t.test('busy: the same chat frame again after retry_after_ms', async (t) => {
  const server = await ScriptedServer.start(t)
  const { client } = open(t, { url: server.url })
  const run = client.chat('hello', { id: 'busy-1' })
  const connection = await server.connection(0)
  const first = await connection.next()
  t.same(first, { type: 'chat', content: 'hello', session_id: client.sessionId, id: 'busy-1' })
  const sentAt = performance.now()
  connection.send({
    type: 'error',
    session_id: client.sessionId,
    content: 'the session already has an active run',
    metadata: { code: 'busy', retryable: true, retry_after_ms: 50, request_id: 'busy-1' },
  })
  const second = await connection.next()
  t.ok(performance.now() - sentAt >= 45, 'waited retry_after_ms')
  t.same(second, first, 'the same frame, same id')
  for (const frame of runFrames(client.sessionId, 'run-1', 'busy-1', 1, ['Hi', '!'])) connection.send(frame)
  t.equal(await run.text(), 'Hi!')
})

t.test('retryable refusals are retried at most maxRetries times, with backoff when no delay is given', async (t) => {
  const server = await ScriptedServer.start(t)
  const { client } = open(t, { url: server.url, maxRetries: 2, random: () => 0 })
  const run = client.chat('hello')
  const connection = await server.connection(0)
  for (let i = 0; i < 3; i++) {
    const frame = await connection.next()
    t.equal(frame.type, 'chat')
    connection.send({ type: 'error', session_id: client.sessionId, content: 'slow down', metadata: { code: 'rate_limited', retryable: true } })
  }
  await t.rejects(run.text(), { code: 'rate_limited', retryable: true, message: 'slow down' })
})

t.test('a refused chat fails its run; the session moves on to the next chat', async (t) => {
  const server = await ScriptedServer.start(t)
  const { client } = open(t, { url: server.url })
  const refused = client.chat('x'.repeat(50), { id: 'too-big' })
  const next = client.chat('ok', { id: 'next' })
  const connection = await server.connection(0)
  t.equal((await connection.next()).id, 'too-big')
  connection.send({
    type: 'error',
    session_id: client.sessionId,
    content: 'content is longer than 10 characters',
    metadata: { code: 'payload_too_large', retryable: false, request_id: 'too-big' },
  })
  await t.rejects(refused.text(), { code: 'payload_too_large', retryable: false })
  t.equal((await connection.next()).id, 'next')
  for (const frame of runFrames(client.sessionId, 'run-2', 'next', 1, ['fine'])) connection.send(frame)
  t.equal(await next.text(), 'fine')
})

t.test('resume after a drop: replayed frames already seen are skipped, other runs ignored', async (t) => {
  const server = await ScriptedServer.start(t)
  const { client } = open(t, { url: server.url })
  const run = client.chat('hello', { id: 'r1' })
  const frames = runFrames(client.sessionId, 'run-1', 'r1', 11, ['a', 'b', 'c', 'd'])
  const first = await server.connection(0)
  await first.next()
  // Before its ack, a run takes nothing: not another chat's thinking, not a stray token.
  first.send({ ...runFrames(client.sessionId, 'run-0', 'r0', 9, [])[0], seq: 9 })
  first.send({ type: 'token', session_id: client.sessionId, seq: 10, content: 'stray', metadata: { run_id: 'run-0' } })
  for (const frame of frames.slice(0, 3)) first.send(frame)
  const seen: number[] = []
  const reading = (async () => {
    for await (const event of run) seen.push(event.seq)
  })()
  await until(() => seen.length === 3)
  first.socket.terminate()

  const second = await server.connection(1)
  t.same(await second.next(), { type: 'resume', session_id: client.sessionId, last_seq: 13 })
  // An overlapping replay, a frame of a run that is not ours, another session, noise, then the rest.
  for (const frame of frames.slice(1, 4)) second.send(frame)
  second.send({ type: 'token', session_id: client.sessionId, seq: 15, content: 'x', metadata: { run_id: 'run-other' } })
  second.send({ type: 'token', session_id: 'someone-else', seq: 99, content: 'x', metadata: { run_id: 'run-1' } })
  second.send({ type: 'status', session_id: client.sessionId, content: 'resumed', metadata: { last_seq: 15, active_run: 'run-1' } })
  second.send({ type: 'pong', session_id: '' })
  for (const frame of frames.slice(4)) second.send({ ...frame, seq: frame.seq + 1 })
  await reading
  t.same(seen, [11, 12, 13, 14, 16, 17], 'each seq once, in order, only run-1')
  t.equal(await run.text(), 'abcd')
})

t.test('a resume the server cannot serve: retried when retryable, the run fails when not', async (t) => {
  const server = await ScriptedServer.start(t)
  const { client } = open(t, { url: server.url, random: () => 0 })
  const run = client.chat('hello', { id: 'r1' })
  const first = await server.connection(0)
  await first.next()
  first.send(runFrames(client.sessionId, 'run-1', 'r1', 1, ['a'])[0])
  await until(() => run.runId === 'run-1')
  first.socket.terminate()
  const second = await server.connection(1)
  t.equal((await second.next()).type, 'resume')
  second.send({ type: 'error', session_id: client.sessionId, content: 'internal error', metadata: { code: 'internal', retryable: true } })
  t.same(await second.next(), { type: 'resume', session_id: client.sessionId, last_seq: 1 }, 'asked again')
  second.send({ type: 'error', session_id: client.sessionId, content: 'unknown session', metadata: { code: 'not_found', retryable: false } })
  await t.rejects(run.text(), { code: 'not_found' })
})

t.test('a cancel asked for while disconnected goes out after the resume', async (t) => {
  const server = await ScriptedServer.start(t)
  const { client, states } = open(t, { url: server.url, backoff: { baseMs: 300, maxMs: 300 }, random: () => 0.99 })
  const run = client.chat('hello', { id: 'r1' })
  const first = await server.connection(0)
  await first.next()
  const frames = runFrames(client.sessionId, 'run-1', 'r1', 1, ['a', 'b'])
  first.send(frames[0])
  await until(() => run.runId === 'run-1')
  first.socket.terminate()
  await until(() => states.some((s) => s.state === 'reconnecting'))
  run.cancel()
  const second = await server.connection(1)
  t.same(await second.next(), { type: 'resume', session_id: client.sessionId, last_seq: 1 })
  t.same(await second.next(), { type: 'cancel', session_id: client.sessionId })
  second.send({ type: 'error', session_id: client.sessionId, content: 'no run', metadata: { code: 'no_active_run', retryable: false } })
  second.send({ type: 'status', session_id: client.sessionId, seq: 2, content: 'cancelled', metadata: { run_id: 'run-1' } })
  second.send({ type: 'complete', session_id: client.sessionId, seq: 3, content: '', metadata: { run_id: 'run-1', finish_reason: 'cancelled' } })
  t.equal((await run.result()).finishReason, 'cancelled')
})

t.test('the ack decides the seq: a session recreated by a restarted server starts over', async (t) => {
  const server = await ScriptedServer.start(t)
  const { client } = open(t, { url: server.url })
  const first = client.chat('one', { id: 'a' })
  const second = client.chat('two', { id: 'b' })
  const connection = await server.connection(0)
  await connection.next()
  for (const frame of runFrames(client.sessionId, 'run-a', 'a', 40, ['one'])) connection.send(frame)
  t.equal(await first.text(), 'one')
  t.equal((await connection.next()).id, 'b')
  for (const frame of runFrames(client.sessionId, 'run-b', 'b', 1, ['two'])) connection.send(frame)
  t.equal(await second.text(), 'two', 'seq 1 after seq 42 was accepted, as this run is new')
})

t.test('errors that belong to no run go to onError', async (t) => {
  const server = await ScriptedServer.start(t)
  const errors: string[] = []
  open(t, { url: server.url, onError: (error) => errors.push(error.code) })
  const connection = await server.connection(0)
  connection.socket.send('not json')
  connection.send({ type: 'error', session_id: '', content: 'invalid message', metadata: { code: 'invalid_message', retryable: false } })
  connection.send({ type: 'error', session_id: 'idle', content: 'forbidden', metadata: { code: 'forbidden', retryable: false } })
  await until(() => errors.length === 3)
  t.same(errors, ['invalid_message', 'invalid_message', 'forbidden'])
})

t.test('heartbeat: pings when idle; a silent connection is dropped and replaced', async (t) => {
  const server = await ScriptedServer.start(t, (connection) => {
    // The first connection answers its pings, then goes silent, as a dead network would.
    if (connection.index > 0) return
    let answered = 0
    connection.socket.on('message', (data) => {
      if (JSON.parse(data.toString()).type === 'ping' && answered++ < 2) connection.send({ type: 'pong', session_id: '' })
    })
  })
  const { client, states } = open(t, { url: server.url, heartbeatMs: 40 })
  await server.connection(1)
  const first = server.connections[0]!
  t.ok(first.frames.filter((f) => f.type === 'ping').length >= 3, 'pinged while idle')
  t.same(states.find((s) => s.state === 'reconnecting')?.closeReason, 'heartbeat timeout')
  await until(() => client.state === 'open')
  await first.closed
})

t.test('heartbeat: no pings while frames flow', async (t) => {
  let chatter: ReturnType<typeof setInterval> | undefined
  const server = await ScriptedServer.start(t, (connection) => {
    chatter = setInterval(() => connection.send({ type: 'pong', session_id: '' }), 5)
  })
  t.teardown(() => clearInterval(chatter))
  const { client } = open(t, { url: server.url, heartbeatMs: 250 })
  const connection = await server.connection(0)
  await until(() => client.state === 'open')
  await wait(800)
  t.equal(connection.frames.length, 0, 'three heartbeat periods, all busy: no ping')
  clearInterval(chatter)
  t.equal((await connection.next(1000)).type, 'ping', 'a ping once the line goes quiet')
})

t.test('events of a socket the client already left are ignored', async (t) => {
  const made: FakeSocket[] = []
  class Recorded extends FakeSocket {
    constructor(url: string, protocols: string[]) {
      super(url, protocols)
      made.push(this)
    }
  }
  const { client, states } = open(t, { url: 'ws://127.0.0.1:9/ws/agent', WebSocket: Recorded as unknown as WebSocketConstructor, random: () => 0 })
  await until(() => made.length === 1)
  made[0]!.fire('close', { code: 1006, reason: '' })
  await until(() => made.length === 2)
  const stale = made[0]!
  stale.fire('open')
  stale.fire('message', { data: JSON.stringify({ type: 'pong', session_id: '' }) })
  stale.fire('close', { code: 1011, reason: '' })
  await wait(50)
  t.equal(made.length, 2, 'no reconnect for the old socket')
  t.equal(client.state, 'reconnecting', 'its open changed nothing')
  made[1]!.fire('open')
  t.equal(client.state, 'open')
  t.same(states.map((s) => s.state), ['reconnecting', 'open'])
})

t.test('bad arguments are refused at once', async (t) => {
  const token = () => 'token'
  t.throws(() => new AgentClient({ url: 'not a url', token }), TypeError)
  t.throws(() => new AgentClient({ url: 'ws://127.0.0.1:1/ws/agent', token, sessionId: 'has space' }), { message: /session id/ })
  const WebSocket = globalThis.WebSocket
  t.teardown(() => void (globalThis.WebSocket = WebSocket))
  // @ts-expect-error: a runtime without WebSocket
  delete globalThis.WebSocket
  t.throws(() => new AgentClient({ url: 'ws://127.0.0.1:1/ws/agent', token }), { message: /no WebSocket here/ })
  globalThis.WebSocket = WebSocket

  const server = await ScriptedServer.start(t)
  const defaults = new AgentClient({ url: server.url, token })
  t.teardown(() => defaults.close())
  await until(() => defaults.state === 'open')
  const { client } = open(t, { url: new URL(server.url), WebSocket })
  t.throws(() => client.chat(''), { message: /non-empty/ })
  t.throws(() => client.chat('hi', { sessionId: '../x' }), { message: /session id/ })
  t.throws(() => client.chat('hi', { id: '' }), { message: /1\.\.128/ })
  t.throws(() => client.chat('hi', { id: 'x'.repeat(129) }), { message: /1\.\.128/ })
  t.match(client.sessionId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
})
