import t from 'tap'
import { randomUUID } from 'node:crypto'
import pino from 'pino'
import type { FastifyBaseLogger } from 'fastify'
import { SessionRegistry, type RegistryConfig, type RunObserver } from '../../src/sessions/registry.ts'
import type { Subscriber } from '../../src/sessions/subscriber.ts'
import { createMemoryBackend } from '../../src/store/memory.ts'
import type { Backend } from '../../src/store/types.ts'
import { createToolRegistry } from '../../src/agent/tools/registry.ts'
import type { ModelClient, ModelRequest } from '../../src/agent/models/types.ts'
import type { Frame } from '../helpers/ws-client.ts'
import { sleep, waitFor } from '../ws/util.ts'

interface Teardown {
  teardown(fn: () => unknown): void
}

/** Words at `delayMs` each, stopping (with the signal's reason) on abort; records the requests. */
function slowModel(words: number, delayMs: number) {
  const requests: ModelRequest[] = []
  const model: ModelClient = {
    name: 'slow',
    async *stream(request) {
      requests.push(request)
      for (let i = 0; i < words; i++) {
        await sleep(delayMs)
        request.signal.throwIfAborted()
        yield { type: 'text', text: `w${i} ` }
      }
      yield { type: 'finish', reason: 'stop' }
    },
  }
  return { model, requests }
}

class FakeSubscriber implements Subscriber {
  readonly id = randomUUID()
  readonly userId: string
  readonly raw: string[] = []
  readonly bufferedAmount = 0
  constructor(userId = 'alice') {
    this.userId = userId
  }
  deliver(frame: string): void {
    this.raw.push(frame)
  }
  get frames(): Frame[] {
    return this.raw.map((raw) => JSON.parse(raw) as Frame)
  }
  async complete(): Promise<Frame> {
    await waitFor(() => this.frames.some((f) => f.type === 'complete'), 5000, 'complete')
    return this.frames.find((f) => f.type === 'complete')!
  }
}

function logs() {
  const lines: Array<{ level: number; msg: string }> = []
  const log = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line)) }) as unknown as FastifyBaseLogger
  return { lines, log }
}

function registry(t: Teardown, model: ModelClient, options: { backend?: Backend; config?: Partial<RegistryConfig>; observer?: RunObserver; log?: FastifyBaseLogger } = {}) {
  const backend = options.backend ?? createMemoryBackend({ ttlSeconds: 60, maxEvents: 100 })
  const sessions = new SessionRegistry({
    backend,
    model,
    tools: createToolRegistry([]),
    logger: options.log ?? logs().log,
    instanceId: randomUUID(),
    config: { systemPrompt: 'sys', historyMaxMessages: 50, resumeGraceMs: 0, maxToolRounds: 2, leaseMs: 10_000, busyRetryAfterMs: 500, ...options.config },
    ...(options.observer ? { observer: options.observer } : {}),
  })
  t.teardown(async () => {
    await sessions.drain(0)
    await backend.sessions.close()
    await backend.events.close()
    await backend.control.close()
  })
  return { sessions, backend }
}

t.test('get: the owner sees the session; others are forbidden; unknown is not_found', async (t) => {
  const { sessions } = registry(t, slowModel(1, 1).model)
  const alice = new FakeSubscriber()
  await sessions.chat(alice, { sessionId: 's1', content: 'hi', requestId: undefined })
  await alice.complete()
  const record = await sessions.get('alice', 's1')
  t.match(record, { id: 's1', owner: 'alice', messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'w0 ' }] })
  await t.rejects(sessions.get('mallory', 's1'), { code: 'forbidden' })
  await t.rejects(sessions.get('alice', 'nope'), { code: 'not_found' })
})

t.test('delete: aborts the run, waits for its end, forgets the session and its events', async (t) => {
  const { model, requests } = slowModel(50, 20)
  const { sessions, backend } = registry(t, model)
  const alice = new FakeSubscriber()
  await sessions.chat(alice, { sessionId: 'doomed', content: 'go', requestId: undefined })
  await waitFor(() => alice.frames.some((f) => f.type === 'token'))
  await t.rejects(sessions.delete('mallory', 'doomed'), { code: 'forbidden' })
  await sessions.delete('alice', 'doomed')
  t.ok(requests[0]!.signal.aborted, 'the upstream signal fired')
  t.match(alice.frames.at(-1), { type: 'complete', metadata: { finish_reason: 'cancelled', reason: 'deleted' } })
  t.equal(sessions.activeRunCount, 0)
  await t.rejects(sessions.get('alice', 'doomed'), { code: 'not_found' })
  t.equal(await backend.events.lastSeq('doomed'), 0)
  await t.rejects(sessions.delete('alice', 'doomed'), { code: 'not_found' })

  await sessions.chat(alice, { sessionId: 'idle', content: 'hi', requestId: undefined })
  await waitFor(() => alice.frames.filter((f) => f.type === 'complete').length === 2)
  await sessions.delete('alice', 'idle')
  await t.rejects(sessions.get('alice', 'idle'), { code: 'not_found' })
})

t.test('two instances on one store: a cancel sent to the other reaches the run through the control bus', async (t) => {
  const backend = createMemoryBackend({ ttlSeconds: 60, maxEvents: 100 })
  const { model, requests } = slowModel(50, 20)
  const told: string[] = []
  const observer: RunObserver = {
    started: () => ({ event: () => {}, cancelRequested: () => void told.push('cancelRequested'), ended: (reason) => void told.push(`ended:${reason}`) }),
    resumed: () => {},
    interrupted: () => {},
  }
  const a = registry(t, model, { backend, observer }).sessions
  const b = registry(t, slowModel(1, 1).model, { backend }).sessions
  const alice = new FakeSubscriber()
  await a.chat(alice, { sessionId: 'shared', content: 'go', requestId: undefined })
  await waitFor(() => alice.frames.some((f) => f.type === 'token'))
  await backend.control.publish({ kind: 'orphaned', sessionId: 'shared', runId: 'not-this-run' })
  await backend.control.publish({ kind: 'cancel', sessionId: 'elsewhere', runId: 'x', reason: 'client' })
  t.notOk(requests[0]!.signal.aborted, 'messages about other runs are ignored')
  await b.cancel('alice', 'shared')
  const complete = await alice.complete()
  t.match(complete, { metadata: { finish_reason: 'cancelled', reason: 'cancel' } })
  t.ok(requests[0]!.signal.aborted)
  t.same(told, ['cancelRequested', 'ended:cancelled'])

  // A delete sent to the other instance aborts the run as deleted.
  await a.chat(alice, { sessionId: 'shared', content: 'again', requestId: undefined })
  await waitFor(() => requests.length === 2)
  await b.delete('alice', 'shared')
  await waitFor(() => requests[1]!.signal.aborted, 5000, 'abort')
  t.match(requests[1]!.signal.reason, { cause: 'deleted' })
  await t.rejects(b.get('alice', 'shared'), { code: 'not_found' })
})

t.test('a store failure while checking watchers is logged; the run goes on', async (t) => {
  const { lines, log } = logs()
  const backend = createMemoryBackend({ ttlSeconds: 60, maxEvents: 100 })
  const { sessions } = registry(t, slowModel(5, 20).model, { backend, log })
  backend.sessions.watcherCount = async () => {
    throw new Error('store down')
  }
  const alice = new FakeSubscriber()
  await sessions.chat(alice, { sessionId: 's', content: 'go', requestId: undefined })
  await sessions.disconnect(alice)
  const watcher = new FakeSubscriber()
  await waitFor(() => lines.some((line) => line.msg === 'could not check watchers'))
  await sessions.resume(watcher, 's', 0)
  t.match(await watcher.complete(), { metadata: { finish_reason: 'stop' } }, 'not aborted')
})

t.test('the lease is renewed while a run lives; a lost lease stops the run without more events from it', async (t) => {
  const backend = createMemoryBackend({ ttlSeconds: 60, maxEvents: 100 })
  let renewals = 0
  const renew = backend.sessions.renewLease.bind(backend.sessions)
  backend.sessions.renewLease = async (...args) => {
    renewals++
    return renew(...args)
  }
  const { model, requests } = slowModel(200, 10)
  const { lines, log } = logs()
  const { sessions } = registry(t, model, { backend, log, config: { leaseMs: 60 } })
  const alice = new FakeSubscriber()
  await sessions.chat(alice, { sessionId: 's', content: 'go', requestId: undefined })
  await waitFor(() => renewals >= 2, 5000, 'renewals')
  t.notOk(requests[0]!.signal.aborted, 'renewed leases keep it going')
  const runId = alice.frames[0]!.metadata?.run_id as string
  // Another instance ended the run (its lease looked expired): ours must stop.
  await backend.sessions.endRun('s', runId)
  await waitFor(() => requests[0]!.signal.aborted, 5000, 'abort')
  t.ok(lines.some((line) => line.msg === 'lease lost: the run was ended by another instance'))
  await waitFor(() => sessions.activeRunCount === 0)
  t.notOk(alice.frames.some((f) => f.type === 'status' && (f as { content?: string }).content === 'cancelled'), 'no status:cancelled from the loser')
})

t.test('a failing lease renewal is logged and the run goes on', async (t) => {
  const backend = createMemoryBackend({ ttlSeconds: 60, maxEvents: 100 })
  backend.sessions.renewLease = async () => {
    throw new Error('store down')
  }
  const { lines, log } = logs()
  const { sessions } = registry(t, slowModel(8, 15).model, { backend, log, config: { leaseMs: 30 } })
  const alice = new FakeSubscriber()
  await sessions.chat(alice, { sessionId: 's', content: 'go', requestId: undefined })
  t.match(await alice.complete(), { metadata: { finish_reason: 'stop' } })
  t.ok(lines.some((line) => line.msg === 'lease renewal failed'))
})

t.test('a model that fails with a bug (not an upstream error): internal, retryable, then complete error', async (t) => {
  const broken: ModelClient = {
    name: 'broken',
    async *stream() {
      throw new TypeError('cannot read properties of undefined')
    },
  }
  const { lines, log } = logs()
  const { sessions } = registry(t, broken, { log })
  const alice = new FakeSubscriber()
  await sessions.chat(alice, { sessionId: 's', content: 'go', requestId: 'r1' })
  await alice.complete()
  const [thinking, error, complete] = alice.frames
  t.match(thinking, { content: 'thinking' })
  t.same(error, {
    type: 'error',
    session_id: 's',
    seq: 2,
    content: 'internal error',
    metadata: { code: 'internal', retryable: true, run_id: thinking!.metadata?.run_id, request_id: 'r1' },
  })
  t.match(complete, { metadata: { finish_reason: 'error' } })
  t.notMatch(alice.raw.join(''), /cannot read properties/, 'the bug stays in the logs')
  t.ok(lines.some((line) => line.msg === 'run failed' && line.level === 50))
})

t.test('the observer is told a resume that failed for a store reason as internal', async (t) => {
  const backend = createMemoryBackend({ ttlSeconds: 60, maxEvents: 100 })
  const results: string[] = []
  const observer: RunObserver = {
    started: () => ({ event: () => {}, cancelRequested: () => {}, ended: () => {} }),
    resumed: (result) => void results.push(result),
    interrupted: () => {},
  }
  const { sessions } = registry(t, slowModel(1, 1).model, { backend, observer })
  const alice = new FakeSubscriber()
  await sessions.chat(alice, { sessionId: 's', content: 'go', requestId: undefined })
  await alice.complete()
  await sessions.resume(alice, 's', 0)
  await t.rejects(sessions.resume(alice, 'nope', 0), { code: 'not_found' })
  backend.events.read = async () => {
    throw new Error('store down')
  }
  await t.rejects(sessions.resume(alice, 's', 0), { message: 'store down' })
  t.same(results, ['ok', 'not_found', 'internal'])
})
