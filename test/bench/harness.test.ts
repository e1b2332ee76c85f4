/**
 * The bench's moving parts on their own, with fixed inputs: the IPC channel, the baseline
 * server, the framework floor, the load worker against a scripted server, the server pool and an empty run.
 */
import t from 'tap'
import http from 'node:http'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { createSigner } from 'fast-jwt'
import { WebSocketServer, type WebSocket } from 'ws'
import { ChildHandle, killAll } from '../../bench/ipc.ts'
import { mockSource, openAISource, startBaseline, type TextSource } from '../../bench/baseline-server.ts'
import { BENCH_SECRET, LoadPool } from '../../bench/children.ts'
import { runCycles } from '../../bench/cycles.ts'
import { Servers } from '../../bench/context.ts'
import { LoadWorker, type LoadGroup } from '../../bench/load-client.ts'
import { QUICK } from '../../bench/options.ts'
import { floodPrompt, stampText } from '../../bench/prompts.ts'
import { runBench } from '../../bench/run.ts'
import { lastUserContent } from '../../bench/upstream.ts'
import { until } from '../../bench/until.ts'
import { createFakeUpstream } from '../helpers/fake-upstream.ts'
import { TestClient, bearer } from '../helpers/ws-client.ts'

const fixture = join(import.meta.dirname, 'fixtures', 'ipc-child.ts')

function token(sub: string, expiresInMs = 3_600_000): string {
  return createSigner({ key: BENCH_SECRET, expiresIn: expiresInMs })({ sub }) as string
}

/** A port nothing listens on. */
async function freePort(): Promise<number> {
  const server = http.createServer()
  const port = await listen(server)
  await new Promise((resolve) => server.close(resolve))
  return port
}

t.test('IPC: replies, failures, timeouts and events', async (t) => {
  const child = new ChildHandle(fixture, { env: process.env, label: 'fixture' })
  t.teardown(() => child.kill())
  t.same(await child.once('ready', 20_000), { pid: child.pid })
  t.same(await child.request('echo', { a: [1, 2n] }, 5000), { a: [1, 2n] }, 'advanced serialisation')
  await t.rejects(child.request('fail', null, 5000), /^fixture: Error: handler failed/)
  await t.rejects(child.request('failWithString', null, 5000), /fixture: plain reason/)
  await t.rejects(child.request('nope', null, 5000), /unknown command nope/)
  await t.rejects(child.request('slow', { ms: 150 }, 10), /slow timed out after 10 ms/)
  await sleep(250) // its late reply finds nobody waiting

  const heard: unknown[] = []
  const off = child.on('tick', (data) => heard.push(data))
  await child.request('emit', { name: 'tick', data: 1 }, 5000)
  await child.request('emit', { name: 'unheard', data: 2 }, 5000)
  off()
  await child.request('emit', { name: 'tick', data: 3 }, 5000)
  t.same(heard, [1], 'events in order before the reply; none after unsubscribing')
  await t.rejects(child.once('never', 20), /no never within 20 ms/)
  t.match(child.stderr, 'child started')

  // Exiting on its own (not killed) also lets the child write its coverage.
  const pending = child.request('slow', { ms: 10_000 }, 20_000)
  const waiting = child.once('never', 20_000)
  await child.request('exit', null, 5000)
  await t.rejects(pending, /fixture exited \(code 3\)/, 'a child exiting fails what waits on it')
  await t.rejects(waiting, /fixture exited \(code 3\) before never/)
  await t.rejects(child.request('echo', 1, 1000), /echo after the child exited/)
})

t.test('IPC: stop, disconnect and killAll', async (t) => {
  const stubborn = new ChildHandle(fixture, { env: process.env, label: 'stubborn' })
  const orphan = new ChildHandle(fixture, { env: process.env, label: 'orphan' })
  const other = new ChildHandle(fixture, { env: process.env, label: 'other' })
  t.teardown(() => {
    for (const child of [stubborn, orphan, other]) child.kill()
  })
  await Promise.all([stubborn.once('ready', 20_000), orphan.once('ready', 20_000), other.once('ready', 20_000)])
  await stubborn.stop(300)
  t.equal(stubborn.process.signalCode, 'SIGKILL', 'killed when it did not exit after stop')
  orphan.process.disconnect()
  t.equal(await orphan.exited, 0, 'a child exits when the orchestrator goes away')
  killAll()
  t.equal(await other.exited, null)
  t.equal(other.process.signalCode, 'SIGKILL')
})

async function listen(server: http.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return (server.address() as AddressInfo).port
}

t.test('baseline: auth on the upgrade, the contract frames, busy, cancel, failures', async (t) => {
  const aborts: string[] = []
  // The mock streams fast; 'hold' streams one token and waits for its abort.
  const source: TextSource = async (content, signal, onText) => {
    if (content === 'fail') throw new Error('upstream down')
    if (content !== 'hold') return mockSource(0)(content, signal, onText)
    onText('first')
    await new Promise<void>((_resolve, reject) => {
      signal.addEventListener('abort', () => {
        aborts.push(content)
        reject(signal.reason)
      })
    })
  }
  const baseline = startBaseline({ secret: BENCH_SECRET, source })
  t.teardown(() => baseline.close())
  const port = await listen(baseline.server)
  const url = `ws://127.0.0.1:${port}/ws/agent`

  const page = await fetch(`http://127.0.0.1:${port}/`)
  t.equal(page.status, 404, 'plain HTTP is not served')

  const expired = createSigner({ key: BENCH_SECRET })({ sub: 'x', exp: Math.floor(Date.now() / 1000) - 10 }) as string
  const otherKey = createSigner({ key: 'another-secret-another-secret-another!' })({ sub: 'x' }) as string
  for (const options of [{}, bearer('not-a-jwt'), bearer(expired), bearer(otherKey)]) {
    const refused = new TestClient(url, options)
    await refused.opened
    t.match(await refused.closed, { code: 4001, reason: 'invalid token' }, 'upgrade completed, then closed 4001')
  }

  const client = new TestClient(url, bearer(token('alice')))
  t.teardown(() => client.socket.terminate())
  await client.opened
  client.send('not json')
  t.match(await client.nextOfType('error'), { session_id: '', metadata: { code: 'invalid_message' } })
  client.send({ type: 'chat', session_id: 's1' })
  t.match(await client.nextOfType('error'), { session_id: 's1', metadata: { code: 'invalid_message' } }, 'a chat without content')
  client.send({ type: 'ping' })
  const pong = await client.nextOfType('pong')
  t.type(pong.session_id, 'string')
  client.send({ type: 'cancel', session_id: 's1' })
  t.match(await client.nextOfType('error'), { metadata: { code: 'no_active_run' } })

  client.send({ type: 'chat', session_id: 's1', content: 'hello there' })
  const frames = await client.untilComplete()
  t.same(frames.map((f) => f.seq), frames.map((_, i) => i + 1), 'seq from 1, by one')
  t.equal(frames[0]?.content, 'thinking')
  const complete = frames.at(-1)
  t.equal(complete?.content, frames.filter((f) => f.type === 'token').map((f) => f.content).join(''))
  t.match(complete?.metadata, { finish_reason: 'stop' })
  t.match(client.raw.find((raw) => raw.startsWith('{"type":"token"')), /^\{"type":"token","session_id":"s1","seq":\d+,"content":/, 'field order as the project')

  client.send({ type: 'chat', session_id: 's1', content: 'hold' })
  await client.nextOfType('token')
  client.send({ type: 'chat', session_id: 's1', content: 'again' })
  t.match(await client.nextOfType('error'), { metadata: { code: 'busy', retryable: true } })
  client.send({ type: 'cancel', session_id: 's1' })
  t.match(await client.nextOfType('status'), { content: 'cancelled' })
  t.match(await client.nextOfType('complete'), { content: 'first', metadata: { finish_reason: 'cancelled' } })

  client.send({ type: 'chat', session_id: 's1', content: 'fail' })
  t.match(await client.nextOfType('error'), { seq: Number, metadata: { code: 'upstream_error' } })
  t.match(await client.nextOfType('complete'), { metadata: { finish_reason: 'error' } })

  client.send({ type: 'chat', session_id: 's2', content: 'hold' })
  await client.nextOfType('token')
  client.close()
  await client.closed
  while (aborts.length < 2) await sleep(5)
  t.same(aborts, ['hold', 'hold'], 'one run cancelled, the other aborted by the close')

  const expiring = new TestClient(url, bearer(token('bob', 1500)))
  t.teardown(() => expiring.socket.terminate())
  await expiring.opened
  t.match(await expiring.closed, { code: 4001, reason: 'token expired' }, 'exp is honoured during the connection')
})

t.test('baseline: the OpenAI-format upstream over raw HTTP', async (t) => {
  const upstream = await createFakeUpstream((request) => {
    const content = lastUserContent(request.body)
    if (content === 'refuse') return { status: 500 }
    if (content === 'reset') return { steps: [{ text: 'x' }, { delayMs: 20 }, { reset: true }] }
    return { steps: [{ text: 'Hello' }, { text: ' world' }, { finish: 'stop' }, { usage: { prompt_tokens: 1, completion_tokens: 2 } }, { done: true }] }
  })
  t.teardown(() => upstream.close())
  const source = openAISource(`${upstream.baseURL}/`)
  const texts: string[] = []
  await source('hi', new AbortController().signal, (text) => texts.push(text))
  t.same(texts, ['Hello', ' world'])
  t.match(upstream.requests[0]?.body, { stream: true, messages: [{ role: 'system' }, { role: 'user', content: 'hi' }] })
  await t.rejects(source('refuse', new AbortController().signal, () => {}), /upstream answered 500/)
  await t.rejects(source('reset', new AbortController().signal, () => {}), /upstream (request|response) failed/)
  const controller = new AbortController()
  controller.abort()
  await t.rejects(source('hi', controller.signal, () => {}), /upstream request failed/, 'an aborted request rejects too')
  t.equal(lastUserContent(null), '')
  t.equal(lastUserContent({ messages: [{ role: 'user', content: [{ type: 'text' }] }] }), '', 'only string contents carry a bench prompt')
})

interface Scripted {
  url: string
  /** The `resume` frames received. */
  resumes: unknown[]
  close(): Promise<void>
}

/** A ws server that answers the load worker's chats as scripted by their content. */
async function scriptedServer(): Promise<Scripted> {
  const server = http.createServer()
  const wss = new WebSocketServer({ server, verifyClient: ({ req }: { req: http.IncomingMessage }) => !req.url?.includes('refuse') })
  const frame = (type: string, fields: Record<string, unknown> = {}) => JSON.stringify({ type, session_id: 's', ...fields })
  const resumes: unknown[] = []
  wss.on('connection', (ws: WebSocket, req: http.IncomingMessage) => {
    let seq = 0
    let busyOnce = true
    let timer: NodeJS.Timeout | undefined
    // `?quiet`: nothing before the first chat, so counts are exact.
    if (!req.url?.includes('quiet')) ws.send(frame('token', { seq: ++seq, content: 'unsolicited' }))
    ws.on('close', () => clearInterval(timer))
    ws.on('message', (data) => {
      const message = JSON.parse(String(data)) as { type: string; content?: string }
      if (message.type === 'resume') {
        resumes.push(message)
        ws.send(frame('status', { content: 'resumed' }))
        ws.send(frame('token', { seq: ++seq, content: ' a b' }))
        ws.send(frame('error', { metadata: { code: 'not_found' } }))
        ws.send(frame('error', {}))
        return
      }
      if (message.type === 'cancel') {
        clearInterval(timer)
        ws.send(frame('status', { seq: ++seq, content: 'cancelled' }))
        ws.send(frame('complete', { seq: ++seq, content: ' a b', metadata: { finish_reason: 'cancelled' } }))
        return
      }
      const [kind, count, merged] = String(message.content).split(' ')
      if (kind === 'stamped') {
        const words: string[] = []
        for (let i = 0; i < Number(count); i++) {
          const text = stampText(process.hrtime.bigint())
          words.push(text)
          if (!merged) ws.send(frame('token', { seq: ++seq, content: text }))
        }
        // `stamped <n> merged`: all in one frame, as a coalescing server sends them.
        if (merged) ws.send(frame('token', { seq: ++seq, content: words.join('') }))
        ws.send(frame('complete', { seq: ++seq, content: words.join(''), metadata: { finish_reason: 'stop' } }))
      } else if (kind === 'busy' && busyOnce) {
        busyOnce = false
        ws.send(frame('error', { metadata: { code: 'busy' } }))
      } else if (kind === 'busy-drop') {
        ws.send(frame('error', { metadata: { code: 'rate_limited' } }))
        ws.close(1011)
      } else if (kind === 'complete-drop') {
        ws.send(frame('complete', { seq: ++seq, content: ' a', metadata: { finish_reason: 'stop' } }))
        ws.close(1011)
      } else if (kind === 'long') {
        timer = setInterval(() => ws.send(frame('token', { seq: ++seq, content: ' a' })), 5)
      } else if (kind === 'bare') {
        ws.send(frame('token', { seq: ++seq }))
        ws.send(frame('error', { seq: ++seq }))
        ws.send(frame('error', { seq: ++seq }))
        ws.send(frame('complete', { seq: ++seq }))
      } else if (kind === 'drop') {
        ws.close(1011)
      } else if (kind === 'drop-saying') {
        ws.close(1011, 'store unavailable')
      } else if (kind === 'miscount') {
        ws.send(frame('token', { seq: ++seq, content: ' a' }))
        ws.send(frame('complete', { seq: ++seq, content: ' a b', metadata: { finish_reason: 'stop' } }))
      } else {
        ws.send(frame('complete', { seq: ++seq, content: ' ok', metadata: { finish_reason: 'stop' } }))
      }
    })
  })
  const port = await listen(server)
  return {
    url: `ws://127.0.0.1:${port}/ws/agent`,
    resumes,
    close: async () => {
      for (const ws of wss.clients) ws.terminate()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}

const group = (fields: Partial<LoadGroup> & Pick<LoadGroup, 'from' | 'prompt'>): LoadGroup => ({
  count: 1,
  stamped: false,
  cancelAfterTokens: null,
  maxRuns: 1,
  gapMs: 0,
  ...fields,
})

t.test('load worker: handshakes, chat loops, counters, cancels, retries, drops', async (t) => {
  const scripted = await scriptedServer()
  t.teardown(() => scripted.close())
  const worker = new LoadWorker('t')
  t.teardown(() => worker.closeAll({ timeoutMs: 1000 }))
  const openArgs = { url: scripted.url, secret: BENCH_SECRET, inflight: 3, localAddresses: ['127.0.0.2', '127.0.0.3'], timeoutMs: 5000 }

  const refused = await worker.open({ ...openArgs, url: `ws://127.0.0.1:${await freePort()}/`, count: 3 })
  t.match(refused, { opened: 0, failed: 3 })
  const rejected = await worker.open({ ...openArgs, url: `${scripted.url}?refuse`, count: 4 })
  t.equal(rejected.failed, 4)
  t.equal(rejected.errors.length, 4)
  t.match(rejected.errors[0], 'HTTP 401')
  const more = await worker.open({ ...openArgs, url: `${scripted.url}?refuse`, count: 6 })
  t.equal(more.errors.length, 5, 'at most five errors are kept')

  const opened = await worker.open({ ...openArgs, count: 8 })
  t.match(opened, { opened: 8, failed: 0 })
  t.ok(opened.endNs >= opened.startNs)
  t.same(worker.status(), { open: 8, running: 0, streaming: 0, unexpectedCloses: {} })

  t.same(
    worker.run({
      groups: [
        group({ from: 0, prompt: 'stamped 3', stamped: true, maxRuns: 2 }),
        group({ from: 1, prompt: 'busy' }),
        group({ from: 2, prompt: 'long {id}', cancelAfterTokens: 2 }),
        group({ from: 3, prompt: 'bare', maxRuns: 2, gapMs: 20 }),
        group({ from: 4, count: 2, prompt: 'drop' }),
        group({ from: 6, prompt: 'busy-drop' }),
        group({ from: 7, prompt: 'complete-drop', maxRuns: 2, gapMs: 20 }),
      ],
    }),
    { started: 8 },
  )
  t.same(await worker.waitRuns({ timeoutMs: 5000 }), { unfinished: 0 })
  await sleep(50) // complete-drop's second run: its gap ends on a closed socket
  const sample = worker.sample()
  t.equal(sample.latenciesUs.length, 6, 'three stamped tokens in each of two runs')
  t.ok(sample.latenciesUs.every((us) => us >= 0 && us < 60_000_000))
  t.equal(sample.cancels.length, 1, 'one recorded cancel, after the second token')
  t.match(sample.cancels[0]?.id, /^t\.2\.\d+$/)
  t.match(sample.counters, { completes: 2 + 1 + 1 + 2 + 1, cancelled: 1, errors: { busy: 1, unknown: 4, rate_limited: 1 } })
  t.ok(sample.counters.tokenFrames >= 8 + 6 + 2 + 2, 'unsolicited + stamped + long (until its cancel) + bare token frames')
  t.equal(worker.sample().counters.tokenFrames, 0, 'a sample resets the counters')
  t.same(worker.status(), { open: 4, running: 0, streaming: 0, unexpectedCloses: { 1011: 4 } })

  worker.run({ groups: [group({ from: 0, prompt: 'long' })] })
  t.same(await worker.waitRuns({ timeoutMs: 30 }), { unfinished: 1 }, 'waiting is bounded')
  t.same(await worker.halt({ timeoutMs: 2000 }), { stuck: 0 })

  worker.run({ groups: [group({ from: 0, count: 2, prompt: 'long', maxRuns: null }), group({ from: 2, prompt: 'ok', maxRuns: null, gapMs: 30 })] })
  await sleep(50)
  t.match(worker.status(), { running: 3, streaming: 2 }, 'loops running, and those that received a token since they started')
  t.same(await worker.halt({ timeoutMs: 2000 }), { stuck: 0 }, 'in-flight runs are cancelled and their complete awaited')
  await sleep(50) // the gap's timer finds the loop halted
  t.same(await worker.waitRuns({ timeoutMs: 100 }), { unfinished: 0 })
  t.same(await worker.closeAll({ timeoutMs: 2000 }), { closed: 8 })
  t.same(worker.status(), { open: 0, running: 0, streaming: 0, unexpectedCloses: {} })
})

t.test('load worker: watching connections resume the chatting ones’ sessions; tokens counted per frame', async (t) => {
  const scripted = await scriptedServer()
  t.teardown(() => scripted.close())
  const worker = new LoadWorker('w')
  t.teardown(() => worker.closeAll({ timeoutMs: 1000 }))
  const openArgs = { url: `${scripted.url}?quiet`, secret: BENCH_SECRET, inflight: 1, localAddresses: ['127.0.0.2'], timeoutMs: 5000 }
  t.match(await worker.open({ ...openArgs, count: 3 }), { opened: 3 })
  t.match(await worker.open({ ...openArgs, count: 1, watch: true }), { opened: 1 }, 'watches the sessions of the first chatting connection')
  t.same(worker.status(), { open: 4, running: 0, streaming: 0, unexpectedCloses: {} })

  worker.run({ groups: [group({ from: 0, count: 2, prompt: 'ok', maxRuns: 2 }), group({ from: 2, prompt: 'miscount' })] })
  t.same(await worker.waitRuns({ timeoutMs: 5000 }), { unfinished: 0 })
  t.ok(await until(() => scripted.resumes.length === 1, 5000))
  await sleep(50) // the answers to the resume
  t.same(scripted.resumes, [{ type: 'resume', session_id: 'w-s0', last_seq: 0 }], 'one resume, from the seq of the first sequenced frame, for its user’s session only')
  const { counters } = worker.sample()
  t.match(counters, {
    tokenFrames: 1,
    tokens: 1,
    completes: 5,
    // `ok` completes ' ok' without a token frame (4 runs), `miscount` sends ' a' and completes ' a b'.
    miscountedRuns: 5,
    watchFrames: 1,
    watchTokens: 2,
    watchErrors: 2,
    errors: { 'watch:not_found': 1, 'watch:unknown': 1 },
  })
  t.same(worker.status(), { open: 4, running: 0, streaming: 0, unexpectedCloses: {} }, 'a watcher starts nothing and is never halted')

  worker.run({ groups: [group({ from: 0, prompt: 'drop-saying' })] })
  await worker.waitRuns({ timeoutMs: 5000 })
  t.same(worker.status(), { open: 3, running: 0, streaming: 0, unexpectedCloses: { '1011 store unavailable': 1 } }, 'closes are counted by code and reason')
  t.same(await worker.closeAll({ timeoutMs: 2000 }), { closed: 4 }, 'watchers are closed too')
  t.same(worker.status(), { open: 0, running: 0, streaming: 0, unexpectedCloses: {} })
})

t.test('load worker: a merged frame counts all its tokens and gives each stamp its latency', async (t) => {
  const scripted = await scriptedServer()
  t.teardown(() => scripted.close())
  const worker = new LoadWorker('m')
  t.teardown(() => worker.closeAll({ timeoutMs: 1000 }))
  await worker.open({ url: `${scripted.url}?quiet`, secret: BENCH_SECRET, inflight: 1, localAddresses: ['127.0.0.2'], count: 1, timeoutMs: 5000 })
  worker.run({ groups: [group({ from: 0, prompt: 'stamped 3 merged', stamped: true })] })
  t.same(await worker.waitRuns({ timeoutMs: 5000 }), { unfinished: 0 })
  const sample = worker.sample()
  t.match(sample.counters, { tokenFrames: 1, tokens: 3, completes: 1, miscountedRuns: 0 })
  t.equal(sample.latenciesUs.length, 3, 'one latency per stamped token')
})

t.test('cycles: connect → chat → close, each a new user, half closed on the first token', async (t) => {
  const scripted = await scriptedServer()
  t.teardown(() => scripted.close())
  const args = { url: scripted.url, secret: BENCH_SECRET, inflight: 2, localAddresses: ['127.0.0.2', '127.0.0.3'], prompt: 'ok', timeoutMs: 5000 }
  t.same(await runCycles('c', { ...args, count: 5 }), { completed: 5, failed: 0, errors: [] })
  t.same(await runCycles('c', { ...args, count: 0 }), { completed: 0, failed: 0, errors: [] })

  const quiet = `${scripted.url}?quiet`
  const failing = async (fields: Partial<typeof args>, count = 1) => runCycles('c', { ...args, count, inflight: 1, ...fields })
  t.match(await failing({ url: quiet, prompt: 'busy-drop' }), { failed: 1, errors: [/^error frame \{"type":"error"/] }, 'an error frame fails the cycle')
  t.match(await failing({ url: quiet, prompt: 'drop' }), { failed: 1, errors: ['closed 1011 by the server'] })
  t.match(await failing({ url: quiet, prompt: 'long', timeoutMs: 100 }), { failed: 1, errors: ['cycle timed out'] })
  t.match(await failing({ url: `${scripted.url}?refuse` }), { failed: 1, errors: ['HTTP 401'] })
  t.match(await failing({ url: `ws://127.0.0.1:${await freePort()}/` }), { failed: 1, errors: [/ECONNREFUSED/] })
  t.match(await failing({ url: quiet, prompt: 'long' }, 2), { completed: 1, failed: 1 }, 'the second cycle closes on its first token')
  t.equal((await failing({ url: `${scripted.url}?refuse` }, 7)).errors.length, 5, 'at most five errors are kept')

  const pool = await LoadPool.start(2, 2)
  t.teardown(() => pool.stop())
  t.same(await pool.cycles({ url: scripted.url, count: 5, inflight: 2, prompt: 'ok', timeoutMs: 5000 }), { completed: 5, failed: 0, errors: [] }, 'split over the workers')
  const refused = await pool.cycles({ url: `${scripted.url}?refuse`, count: 12, inflight: 2, prompt: 'ok', timeoutMs: 5000 })
  t.match(refused, { completed: 0, failed: 12 })
  t.equal(refused.errors.length, 5)
})

t.test('server pool: fresh servers are stopped on release', async (t) => {
  const servers = new Servers({ reuse: false, upstreamURL: 'http://127.0.0.1:9/v1', profileDir: undefined })
  t.teardown(() => servers.stopAll())
  const server = await servers.acquire('baseline', { provider: 'mock', logLevel: 'warn' })
  const stats = await server.stats({ gc: true })
  t.ok(stats.rss > 0 && stats.heapUsed > 0)
  t.type(stats.loopDelayP99Us, 'number')
  t.ok(server.cpuUs() > 0, 'CPU time read from /proc')
  const client = new TestClient(server.url, bearer(token('carol')))
  await client.opened
  client.send({ type: 'chat', session_id: 'a', content: floodPrompt(3) })
  t.match((await client.untilComplete()).at(-1)?.metadata, { finish_reason: 'stop' }, 'the spawned baseline streams from the mock')
  client.close()
  await servers.release(server)
  await t.rejects(server.stats({ gc: false }), /after the child exited/)
})

t.test('framework floor: the handshake checked like the project, 4001 after the upgrade when refused', async (t) => {
  const servers = new Servers({ reuse: false, upstreamURL: 'http://127.0.0.1:9/v1', profileDir: undefined })
  t.teardown(() => servers.stopAll())
  const floor = await servers.acquire('floor', { provider: 'mock', logLevel: 'warn' })
  t.teardown(() => servers.release(floor))
  const expired = createSigner({ key: BENCH_SECRET })({ sub: 'x', exp: Math.floor(Date.now() / 1000) - 10 }) as string
  const noSubject = createSigner({ key: BENCH_SECRET, expiresIn: 60_000 })({ name: 'x' }) as string
  for (const options of [{}, bearer('not-a-jwt'), bearer(expired), bearer(noSubject)]) {
    const refused = new TestClient(floor.url, options)
    await refused.opened
    t.match(await refused.closed, { code: 4001, reason: 'invalid token' }, 'upgrade completed, then closed 4001')
  }
  const client = new TestClient(floor.url, bearer(token('dave')))
  await client.opened
  client.send({ type: 'ping' })
  await sleep(50)
  t.equal(client.socket.readyState, client.socket.OPEN, 'a valid token keeps the connection, and a frame is read without answer')
  client.close()
})

t.test('a run with no scenarios still writes its report', async (t) => {
  const outDir = await mkdtemp(join(tmpdir(), 'agw-bench-empty-'))
  t.teardown(() => rm(outDir, { recursive: true, force: true }))
  const progress: string[] = []
  const { report, files } = await runBench({ mode: 'full', only: [], outDir, hardTimeoutMs: 60_000, profile: false, strict: true, redisURL: 'redis://127.0.0.1:1', clusterSeed: '127.0.0.1:1', sizes: QUICK }, (m) => progress.push(m))
  t.same(report.scenarios, [])
  t.equal(files.length, 2, 'JSON and markdown, no histogram without latency samples')
  t.match(files[0], /\/\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.json$/, 'a full run is named by its date alone')
  t.equal(report.meta.mode, 'full')
  t.same((await readdir(outDir)).sort(), files.map((f) => f.slice(outDir.length + 1)).sort())
})
