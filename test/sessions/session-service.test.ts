// Unit tests of the session core (SessionService + RunExecutor + Subscriptions) over the
// memory backend, with a fake connection (FakeWatcher) whose flow control the test drives.
import t from 'tap'
import { randomUUID } from 'node:crypto'
import pino from 'pino'
import type { FastifyBaseLogger } from 'fastify'
import { SessionService } from '../../src/sessions/session-service.ts'
import { RunExecutor, type ExecutorConfig, type RunObserver } from '../../src/sessions/run-executor.ts'
import { Subscriptions } from '../../src/sessions/subscriptions.ts'
import { LeaseSweeper } from '../../src/sessions/lease-sweeper.ts'
import { WatchList, type Watcher } from '../../src/sessions/watcher.ts'
import { createMemoryBackend } from '../../src/store/memory/index.ts'
import { refKey, type Backend, type HistoryMessage, type SessionRef } from '../../src/store/types.ts'
import { createToolRegistry } from '../../src/agent/tools/registry.ts'
import { defineTool, type Tool } from '../../src/agent/tools/types.ts'
import { Type } from '@sinclair/typebox'
import { UpstreamError } from '../../src/agent/upstream-error.ts'
import type { ModelClient, ModelRequest } from '../../src/agent/models/types.ts'
import type { Frame } from '../helpers/ws-client.ts'
import { sleep, waitFor } from '../ws/util.ts'

interface Teardown {
  teardown(fn: () => unknown): void
}

/** Words at `delayMs` each, stopping (with the signal's reason) on abort; records the requests and pulls. */
function slowModel(words: number, delayMs: number) {
  const requests: ModelRequest[] = []
  const state = { pulled: 0 }
  const model: ModelClient = {
    name: 'slow',
    async *stream(request) {
      requests.push(request)
      for (let i = 0; i < words; i++) {
        if (delayMs > 0) await sleep(delayMs)
        request.signal.throwIfAborted()
        state.pulled++
        yield [{ type: 'text', text: `w${i} ` }]
      }
      yield [{ type: 'finish', reason: 'stop' }]
    },
  }
  return { model, requests, state }
}

function failingModel(err: unknown): ModelClient {
  return {
    name: 'failing',
    // eslint-disable-next-line require-yield
    async *stream() {
      throw err
    },
  }
}

/** A connection as the core sees it; the test flips `writable` and closes it. */
class FakeWatcher implements Watcher {
  readonly id = randomUUID()
  readonly userId: string
  readonly raw: string[] = []
  readonly closes: Array<[number, string]> = []
  readonly watching: WatchList
  open = true
  #writable = true
  #waiters: Array<() => void> = []
  whenWritableCalls = 0

  constructor(userId = 'alice', maxWatched = 8) {
    this.userId = userId
    this.watching = new WatchList(maxWatched)
  }

  get isOpen(): boolean {
    return this.open
  }

  get writable(): boolean {
    return this.#writable
  }

  set writable(value: boolean) {
    this.#writable = value
    if (value) this.#wake()
  }

  whenWritable(): Promise<void> {
    this.whenWritableCalls++
    if (this.#writable || !this.open) return Promise.resolve()
    return new Promise((resolve) => this.#waiters.push(resolve))
  }

  deliver(frame: string): void {
    this.raw.push(frame)
  }

  close(code: number, reason: string): void {
    this.closes.push([code, reason])
    this.disconnect()
  }

  /** The socket went away: nothing is watched on its behalf any more. */
  disconnect(): void {
    if (!this.open) return
    this.open = false
    this.watching.closeAll()
    this.#wake()
  }

  #wake(): void {
    const waiters = this.#waiters
    this.#waiters = []
    for (const wake of waiters) wake()
  }

  get frames(): Frame[] {
    return this.raw.map((raw) => JSON.parse(raw) as Frame)
  }

  completes(): Frame[] {
    return this.frames.filter((f) => f.type === 'complete')
  }

  async complete(n = 1): Promise<Frame> {
    await waitFor(() => this.completes().length >= n, 5000, 'complete')
    return this.completes()[n - 1]!
  }
}

function logs() {
  const lines: Array<{ level: number; msg: string; [key: string]: unknown }> = []
  const log = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line)) }) as unknown as FastifyBaseLogger
  return { lines, log, has: (msg: string) => lines.some((line) => line.msg === msg) }
}

function memory(maxEvents = 100, ttlSeconds = 60): Backend {
  return createMemoryBackend({ ttlSeconds, maxEvents })
}

interface CoreOptions {
  backend?: Backend
  config?: Partial<ExecutorConfig>
  observer?: RunObserver
  log?: FastifyBaseLogger
  maxSessionsPerUser?: number
  refreshMs?: number
  /** A lease sweeper, as with a shared store (ends the runs of dead instances). */
  leases?: boolean
  tools?: Tool[]
}

function core(t: Teardown, model: ModelClient, options: CoreOptions = {}) {
  const backend = options.backend ?? memory()
  const log = options.log ?? logs().log
  const instanceId = randomUUID()
  const config: ExecutorConfig = {
    instanceId,
    systemPrompt: 'sys',
    historyMaxMessages: 50,
    resumeGraceMs: 0,
    maxToolRounds: 2,
    leaseMs: 10_000,
    approvalTools: new Set(),
    approvalTimeoutMs: 60_000,
    clientToolTimeoutMs: 60_000,
    ...options.config,
  }
  const subscriptions = new Subscriptions({ backend, log, refreshMs: options.refreshMs ?? 60_000 })
  const executor = new RunExecutor({ backend, model, tools: createToolRegistry(options.tools ?? []), config, logger: log, subscriptions, observer: options.observer })
  const leases = options.leases
    ? new LeaseSweeper({
        backend,
        intervalMs: 60_000,
        historyMaxMessages: 50,
        runsHere: (ref, runId) => executor.isLocal(ref, runId),
        startNext: (ref, next) => executor.startNext(ref, next),
        adopt: (ref, active) => executor.adopt(ref, active),
        instanceId: config.instanceId,
        leaseMs: config.leaseMs,
        log,
      })
    : undefined
  const service = new SessionService({
    backend,
    executor,
    subscriptions,
    leases,
    observer: options.observer,
    log,
    config: {
      instanceId: config.instanceId,
      leaseMs: config.leaseMs,
      historyMaxMessages: 50,
      maxSessionsPerUser: options.maxSessionsPerUser ?? 100,
      maxQueuedRuns: 4,
      serverToolNames: () => (options.tools ?? []).map((tool) => tool.name),
      busyRetryAfterMs: 500,
    },
  })
  t.teardown(async () => {
    await service.drain(0)
    subscriptions.close()
    if (!options.backend) await backend.close()
  })
  return { service, executor, subscriptions, backend }
}

const chat = (sessionId: string | undefined, content = 'go', requestId?: string) => ({ sessionId, content, requestId })

async function refOf(backend: Backend, owner: string, id: string): Promise<SessionRef> {
  const session = await backend.sessions.get(owner, id)
  if (!session) throw new Error(`no session ${id}`)
  return { owner, id, gen: session.gen }
}

/** A run recorded in the store that nobody executes (a dead instance's); its lease lapses after `leaseMs`. */
async function ghostRun(backend: Backend, owner: string, id: string, leaseMs: number, userMessage: HistoryMessage = { role: 'user', content: 'boo' }) {
  const opened = await backend.sessions.open(owner, id, 100)
  if (opened.kind !== 'open') throw new Error('too many')
  const ref = { owner, id, gen: opened.session.gen }
  const runId = `ghost-${randomUUID()}`
  const begun = await backend.sessions.beginRun(ref, { runId, instanceId: 'ghost', leaseMs, input: { kind: 'message', message: userMessage }, maxMessages: 50 })
  if (begun.kind !== 'started') throw new Error(`ghost run not started: ${begun.kind}`)
  await backend.sessions.append(ref, runId, { type: 'status', session_id: id, content: 'thinking', metadata: { run_id: runId } })
  await backend.sessions.append(ref, runId, { type: 'token', session_id: id, content: 'half ', metadata: { run_id: runId } })
  return { ref, runId }
}

t.test('chat: thinking, tokens, complete; the conversation is stored; a new session id when none is named', async (t) => {
  const { model, requests } = slowModel(2, 1)
  const { service, backend } = core(t, model)
  const alice = new FakeWatcher()
  t.equal(await service.chat(alice, chat('s1', 'hi', 'r1')), 's1')
  const complete = await alice.complete()
  t.match(alice.frames, [
    { type: 'status', content: 'thinking', seq: 1, metadata: { request_id: 'r1' } },
    { type: 'token', content: 'w0 ', seq: 2 },
    { type: 'token', content: 'w1 ', seq: 3 },
    { type: 'complete', content: 'w0 w1 ', seq: 4, metadata: { finish_reason: 'stop', request_id: 'r1' } },
  ])
  t.equal(complete.metadata?.run_id, alice.frames[0]!.metadata?.run_id)
  t.same(requests[0]!.messages, [
    { role: 'system', content: 'sys' },
    { role: 'user', content: 'hi' },
  ])
  await waitFor(() => service.activeRunCount === 0)
  t.match(await service.get('alice', 's1'), { id: 's1', owner: 'alice', active: null, messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'w0 w1 ' }] })

  // The next run sees the history.
  await service.chat(alice, chat('s1', 'more'))
  await alice.complete(2)
  t.same(requests[1]!.messages.slice(1), [
    { role: 'user', content: 'hi' },
    { role: 'assistant', content: 'w0 w1 ' },
    { role: 'user', content: 'more' },
  ])
  t.equal(alice.watching.size, 1, 'one subscription per session')
  t.equal(service.subscriptionCount, 1)

  const generated = await service.chat(alice, chat(undefined))
  t.match(generated, /^[0-9a-f-]{36}$/)
  await alice.complete(3)
  t.ok(await backend.sessions.get('alice', generated))
})

t.test('the same request id attaches to its run instead of starting another', async (t) => {
  const { model, requests } = slowModel(5, 15)
  const { service } = core(t, model)
  const alice = new FakeWatcher()
  await service.chat(alice, chat('s', 'go', 'q1'))
  await waitFor(() => alice.frames.some((f) => f.type === 'token'))
  // Sent again on the same connection: already watching, nothing new.
  t.equal(await service.chat(alice, chat('s', 'go', 'q1')), 's')
  // Sent again from another connection (a client that reconnected): it gets the run from its start.
  const again = new FakeWatcher()
  await service.chat(again, chat('s', 'go', 'q1'))
  const complete = await again.complete()
  await alice.complete()
  t.equal(requests.length, 1, 'one run only')
  t.same(again.raw, alice.raw, 'the same frames, byte for byte')
  t.equal(complete.metadata?.request_id, 'q1')
  // After the run ended, the duplicate replays it whole.
  const late = new FakeWatcher()
  await service.chat(late, chat('s', 'go', 'q1'))
  await late.complete()
  t.same(late.raw, alice.raw)
  t.equal(requests.length, 1)
  // A duplicate on a closed connection is no error.
  const closed = new FakeWatcher()
  closed.disconnect()
  t.equal(await service.chat(closed, chat('s', 'go', 'q1')), 's')
})

t.test('a duplicate whose events were trimmed away is history_gone', async (t) => {
  const backend = memory(2)
  const { service } = core(t, slowModel(4, 5).model, { backend })
  t.teardown(() => backend.close())
  const alice = new FakeWatcher()
  await service.chat(alice, chat('s', 'go', 'q1'))
  await alice.complete()
  await t.rejects(service.chat(new FakeWatcher(), chat('s', 'go', 'q1')), { code: 'history_gone', options: { sessionId: 's', requestId: 'q1' } })
})

t.test('busy while a run is active; too_many_sessions past the limit; a session deleted meanwhile is not_found', async (t) => {
  const { model } = slowModel(20, 10)
  const { service, backend } = core(t, model, { maxSessionsPerUser: 1 })
  const alice = new FakeWatcher()
  await service.chat(alice, chat('s'))
  const runId = (await backend.sessions.get('alice', 's'))!.active!.runId
  await t.rejects(service.chat(alice, chat('s', 'again', 'q2')), { code: 'busy', options: { sessionId: 's', requestId: 'q2', runId, retryAfterMs: 500 } })
  await t.rejects(service.chat(alice, chat('other')), { code: 'too_many_sessions', options: { retryable: false } })
  await service.cancel('alice', 's')
  await alice.complete()

  const beginRun = backend.sessions.beginRun.bind(backend.sessions)
  backend.sessions.beginRun = async (ref, run) => {
    await backend.sessions.delete(ref)
    return beginRun(ref, run)
  }
  await t.rejects(service.chat(alice, chat('s')), { code: 'not_found' })
})

t.test('cancel: the run ends cancelled; nothing to cancel is no_active_run; unknown is not_found', async (t) => {
  const { model, requests } = slowModel(50, 10)
  const told: string[] = []
  const observer: RunObserver = {
    started: () => ({ event: (type) => void told.push(type), cancelRequested: () => void told.push('cancelRequested'), ended: (reason) => void told.push(`ended:${reason}`) }),
    resumed: () => {},
    interrupted: () => {},
    handedOver: () => {},
  }
  const { service } = core(t, model, { observer })
  const alice = new FakeWatcher()
  await service.chat(alice, chat('s'))
  await waitFor(() => alice.frames.some((f) => f.type === 'token'))
  await service.cancel('alice', 's')
  await service.cancel('alice', 's').catch(() => {}) // a second cancel is harmless
  const complete = await alice.complete()
  t.match(complete, { metadata: { finish_reason: 'cancelled', reason: 'cancel' } })
  t.match(alice.frames.at(-2), { type: 'status', content: 'cancelled' })
  t.ok(requests[0]!.signal.aborted)
  t.same(told.filter((x) => x !== 'token'), ['cancelRequested', 'ended:cancelled'])
  await waitFor(() => service.activeRunCount === 0)
  await t.rejects(service.cancel('alice', 's'), { code: 'no_active_run' })
  await t.rejects(service.cancel('alice', 'nope'), { code: 'not_found' })
  await t.rejects(service.cancel('mallory', 's'), { code: 'not_found' }, "another user's session is invisible")
})

t.test('two instances on one store: cancel and delete reach the run through the control bus', async (t) => {
  const backend = memory()
  t.teardown(() => backend.close())
  const { model, requests } = slowModel(50, 10)
  const a = core(t, model, { backend })
  const b = core(t, slowModel(1, 1).model, { backend })
  const alice = new FakeWatcher()
  await a.service.chat(alice, chat('shared'))
  await waitFor(() => alice.frames.some((f) => f.type === 'token'))
  const ref = await refOf(backend, 'alice', 'shared')
  await backend.control.publish({ kind: 'orphaned', ref, runId: 'not-this-run' })
  await backend.control.publish({ kind: 'cancel', ref: { ...ref, id: 'elsewhere' }, runId: 'x', reason: 'client' })
  t.notOk(requests[0]!.signal.aborted, 'messages about other runs are ignored')
  t.notOk(b.executor.isLocal(ref, alice.frames[0]!.metadata!.run_id as string))
  t.ok(a.executor.isLocal(ref, alice.frames[0]!.metadata!.run_id as string))
  await b.service.cancel('alice', 'shared')
  t.match(await alice.complete(), { metadata: { finish_reason: 'cancelled', reason: 'cancel' } })

  await a.service.chat(alice, chat('shared', 'again'))
  await waitFor(() => requests.length === 2)
  await b.service.delete('alice', 'shared')
  t.match(requests[1]!.signal.reason, { cause: 'deleted' })
  t.match(alice.frames.at(-1), { type: 'error', metadata: { code: 'not_found' }, content: 'session deleted' })
  t.match(alice.completes().at(-1), { metadata: { finish_reason: 'cancelled', reason: 'deleted' } })
  await t.rejects(b.service.get('alice', 'shared'), { code: 'not_found' })
  t.equal(alice.watching.size, 0, 'the deleted session is no longer watched')
})

t.test('resume: replays after last_seq, then status:resumed, then live events; restarts a watch', async (t) => {
  const { model } = slowModel(6, 20)
  const results: string[] = []
  const observer: RunObserver = {
    started: () => ({ event: () => {}, cancelRequested: () => {}, ended: () => {} }),
    resumed: (result) => void results.push(result),
    interrupted: () => {},
    handedOver: () => {},
  }
  const { service, backend } = core(t, model, { observer, config: { resumeGraceMs: 10_000 } })
  const alice = new FakeWatcher()
  await service.chat(alice, chat('s'))
  await waitFor(() => alice.frames.filter((f) => f.type === 'token').length >= 2)
  alice.disconnect()
  const back = new FakeWatcher()
  await service.resume(back, 's', 1)
  const resumedAt = back.frames.findIndex((f) => f.type === 'status' && f.content === 'resumed')
  const resumed = back.frames[resumedAt]!
  t.equal(resumed.metadata?.last_seq, resumedAt + 1, 'last_seq: what was replayed')
  t.equal(resumed.metadata?.active_run, alice.frames[0]!.metadata?.run_id)
  t.same(
    back.frames.slice(0, resumedAt).map((f) => f.seq),
    Array.from({ length: resumedAt }, (_, i) => i + 2),
    'replayed from seq 2',
  )
  await back.complete()
  const seqs = back.frames.filter((f) => f.seq !== undefined).map((f) => f.seq)
  t.same(seqs, Array.from({ length: seqs.length }, (_, i) => i + 2), 'every event once, in order')

  // Resuming again on the same connection restarts its watch from there.
  await service.resume(back, 's', 0)
  t.equal(back.watching.size, 1)
  t.match(back.frames.at(-1), { type: 'status', content: 'resumed', metadata: { active_run: null } })
  t.equal(back.frames.filter((f) => f.seq === 1).length, 1)

  await t.rejects(service.resume(back, 'nope', 0), { code: 'not_found' })
  await t.rejects(service.resume(back, 's', 999), { code: 'history_gone' })
  const read = backend.events.read.bind(backend.events)
  backend.events.read = async () => {
    throw new Error('store down')
  }
  await t.rejects(service.resume(back, 's', 0), { message: 'store down' })
  backend.events.read = read
  t.same(results, ['ok', 'ok', 'not_found', 'history_gone', 'internal'])
})

t.test('resume replay waits for the watcher to be writable, and stops when it closes', async (t) => {
  // Paced: each delta its own event (ready together, they would be merged into one token).
  const { service } = core(t, slowModel(5, 1).model)
  const alice = new FakeWatcher()
  await service.chat(alice, chat('s'))
  await alice.complete()
  const back = new FakeWatcher()
  back.writable = false
  const resuming = service.resume(back, 's', 0)
  await sleep(30)
  t.same(back.raw, [], 'nothing replayed while not writable')
  t.equal(back.whenWritableCalls, 1)
  back.writable = true
  await resuming
  t.equal(back.frames.length, 8, '7 events, then resumed')
  t.match(back.frames.at(-1), { content: 'resumed', metadata: { last_seq: 7, active_run: null } })

  const closing = new FakeWatcher()
  closing.writable = false
  const stopped = service.resume(closing, 's', 0)
  await sleep(10)
  closing.disconnect()
  await stopped
  t.same(closing.raw, [], 'closed mid-replay: nothing more, no error')
  t.equal(closing.watching.size, 0)
})

t.test('a watcher that closes while resume subscribes gets nothing and no error', async (t) => {
  const { service, backend } = core(t, slowModel(1, 0).model)
  const alice = new FakeWatcher()
  await service.chat(alice, chat('s'))
  await alice.complete()
  const back = new FakeWatcher()
  const activeRun = backend.sessions.activeRun.bind(backend.sessions)
  backend.sessions.activeRun = async (ref) => {
    back.disconnect()
    return activeRun(ref)
  }
  await service.resume(back, 's', 0)
  t.notOk(back.frames.some((f) => f.content === 'resumed'), 'no status:resumed')
  backend.sessions.activeRun = activeRun
  const failing = new FakeWatcher()
  backend.sessions.addWatcher = async () => {
    throw new Error('store down')
  }
  await t.rejects(service.resume(failing, 's', 0), { message: 'store down' })
  t.equal(failing.watching.size, 0)
})

t.test('get and delete: owner-scoped; delete aborts the run, waits for its end, forgets the session', async (t) => {
  const { model, requests } = slowModel(50, 10)
  const { service, backend } = core(t, model)
  const alice = new FakeWatcher()
  await service.chat(alice, chat('doomed'))
  await waitFor(() => alice.frames.some((f) => f.type === 'token'))
  const ref = await refOf(backend, 'alice', 'doomed')
  await t.rejects(service.get('mallory', 'doomed'), { code: 'not_found' })
  await t.rejects(service.delete('mallory', 'doomed'), { code: 'not_found' })
  await service.delete('alice', 'doomed')
  t.ok(requests[0]!.signal.aborted, 'the upstream signal fired')
  t.match(alice.completes().at(-1), { metadata: { finish_reason: 'cancelled', reason: 'deleted' } })
  t.match(alice.frames.at(-1), { type: 'error', content: 'session deleted', metadata: { code: 'not_found', retryable: false } })
  t.equal(service.activeRunCount, 0)
  await t.rejects(service.get('alice', 'doomed'), { code: 'not_found' })
  t.same(await backend.events.read(ref, 0), { events: [], gone: false, lastSeq: 0 })
  await t.rejects(service.delete('alice', 'doomed'), { code: 'not_found' })

  await service.chat(alice, chat('idle', 'hi'))
  await alice.complete(2)
  await waitFor(() => service.activeRunCount === 0)
  await service.delete('alice', 'idle')
  await t.rejects(service.get('alice', 'idle'), { code: 'not_found' })
})

t.test('delete of a run nobody executes waits at most two leases', async (t) => {
  const backend = memory()
  t.teardown(() => backend.close())
  const { service } = core(t, slowModel(1, 0).model, { backend, config: { leaseMs: 40 } })
  await ghostRun(backend, 'alice', 'ghost', 60_000)
  const started = performance.now()
  await service.delete('alice', 'ghost')
  const took = performance.now() - started
  t.ok(took >= 70 && took < 1000, `waited ${Math.round(took)} ms`)
  t.equal(await backend.sessions.get('alice', 'ghost'), null)
})

t.test('with a lease sweeper: a dead instance’s run is ended as interrupted by chat, resume and delete', async (t) => {
  const backend = memory()
  t.teardown(() => backend.close())
  const { model, requests } = slowModel(1, 0)
  const { service } = core(t, model, { backend, leases: true })
  const alice = new FakeWatcher()

  await ghostRun(backend, 'alice', 'by-chat', 10)
  await sleep(20)
  await service.chat(alice, chat('by-chat', 'hello'))
  await waitFor(() => alice.completes().length === 1)
  t.equal(requests.length, 1, 'the chat ran after the dead run was ended')
  t.same(
    (await backend.sessions.get('alice', 'by-chat'))!.messages.map((m) => m.content),
    ['boo', 'half ', 'hello', 'w0 '],
    'what the dead run had said stays in the conversation',
  )

  await ghostRun(backend, 'alice', 'by-resume', 10)
  await sleep(20)
  const back = new FakeWatcher()
  await service.resume(back, 'by-resume', 0)
  await back.complete()
  t.same(back.frames.map((f) => f.type), ['status', 'token', 'status', 'complete'])
  t.match(back.frames[2], { content: 'resumed', metadata: { last_seq: 2, active_run: null } })
  t.match(back.frames[3], { seq: 3, metadata: { finish_reason: 'interrupted', reason: 'instance lost' }, content: 'half ' })

  await ghostRun(backend, 'alice', 'by-delete', 10)
  await sleep(20)
  await service.delete('alice', 'by-delete')
  t.equal(await backend.sessions.get('alice', 'by-delete'), null)

  // A lease not yet expired is busy.
  await ghostRun(backend, 'alice', 'alive', 60_000)
  await t.rejects(service.chat(alice, chat('alive')), { code: 'busy' })
})

t.test("a stop published while nobody held the run is told again to the instance that adopts it; the drain stops following", async (t) => {
  const backend = memory()
  t.teardown(() => backend.close())
  const { service } = core(t, slowModel(1, 0).model, { backend })
  const cancels: string[] = []
  backend.control.onMessage((message) => void (message.kind === 'cancel' && cancels.push(message.runId)))
  const { ref, runId } = await ghostRun(backend, 'alice', 'handed', 60_000)
  await service.cancel('alice', 'handed')
  await waitFor(() => cancels.length === 1)
  // The dead holder's waiting run lapses and another instance adopts it (its sweeper, say).
  const call = { call_id: 'a', tool: 'calculate', arguments: {}, kind: 'approval' as const, expires_at: new Date(Date.now() + 60_000).toISOString() }
  const waiting = { round: 0, messages: [], content: 'half ', reasoning: '', calls: { a: { state: 'waiting' as const, pending: call } } }
  t.ok(await backend.sessions.addPending(ref, runId, waiting, 'a'))
  t.ok(await backend.sessions.parkRun(ref, runId))
  const fence = `${runId}~third`
  t.ok(await backend.sessions.adoptRun(ref, runId, { instanceId: 'third', leaseMs: 60_000, fence }), 'adopted elsewhere')
  await waitFor(() => cancels.length === 2)
  t.same(cancels, [runId, runId], 'the new holder was told too')
  const complete = { type: 'complete', session_id: 'handed', content: 'half ', metadata: { run_id: runId, finish_reason: 'cancelled' } } as never
  t.ok(await backend.sessions.finishRun(ref, { runId: fence, instanceId: 'third', leaseMs: 60_000, event: complete, messages: [], maxMessages: 50 }))
  await sleep(60)
  t.equal(cancels.length, 2, 'once it ended, nothing more')

  // A run nobody takes over is followed for two leases at most; the drain ends that at once.
  await ghostRun(backend, 'alice', 'stuck', 60_000)
  await service.cancel('alice', 'stuck')
  await waitFor(() => cancels.length === 3)
  const drained = await Promise.race([service.drain(0).then(() => true), sleep(5000).then(() => false)])
  t.ok(drained, 'the drain did not wait out the follow-up')
})

t.test('the grace: a run whose last watcher left is aborted unless somebody comes back in time', async (t) => {
  const { model, requests } = slowModel(100, 10)
  const { lines, log } = logs()
  const { service, backend } = core(t, model, { log, config: { resumeGraceMs: 80 } })
  const alice = new FakeWatcher()
  await service.chat(alice, chat('s'))
  await waitFor(() => alice.frames.some((f) => f.type === 'token'))
  alice.disconnect()
  await waitFor(() => requests[0]!.signal.aborted, 5000, 'abort after the grace')
  t.match(requests[0]!.signal.reason, { cause: 'disconnect' })
  t.ok(lines.some((line) => line.msg === 'run aborted: nobody resumed within the grace'))
  await waitFor(() => service.activeRunCount === 0)
  const ref = await refOf(backend, 'alice', 's')
  const held = await backend.events.read(ref, 0)
  t.match(JSON.parse(held.events.at(-1)!.frame), { type: 'complete', metadata: { finish_reason: 'cancelled', reason: 'disconnect' } })

  // Back within the grace: the run goes on.
  const bob = new FakeWatcher()
  await service.chat(bob, chat('s2'))
  await waitFor(() => bob.frames.some((f) => f.type === 'token'))
  bob.disconnect()
  await sleep(20)
  const back = new FakeWatcher()
  await service.resume(back, 's2', 0)
  await sleep(150)
  t.notOk(requests[1]!.signal.aborted, 'resumed within the grace: not aborted')
  await service.cancel('alice', 's2')
  await back.complete()
})

t.test('an orphaned message arms the grace; a watcher still counted keeps the run', async (t) => {
  const { model, requests } = slowModel(100, 10)
  const { lines, log } = logs()
  const { service, backend } = core(t, model, { log, config: { resumeGraceMs: 20 } })
  const alice = new FakeWatcher()
  await service.chat(alice, chat('s'))
  await waitFor(() => alice.frames.some((f) => f.type === 'token'))
  const ref = await refOf(backend, 'alice', 's')
  const runId = alice.frames[0]!.metadata!.run_id as string
  await backend.control.publish({ kind: 'orphaned', ref, runId })
  await sleep(80)
  t.notOk(requests[0]!.signal.aborted, 'alice still watches')

  // The watcher count fails: logged, the run goes on.
  const watcherCount = backend.sessions.watcherCount.bind(backend.sessions)
  backend.sessions.watcherCount = async () => {
    throw new Error('store down')
  }
  await backend.control.publish({ kind: 'orphaned', ref, runId })
  await waitFor(() => lines.some((line) => line.msg === 'could not check watchers'))
  t.notOk(requests[0]!.signal.aborted)
  backend.sessions.watcherCount = watcherCount
  // The store forgets alice's watch (e.g. it aged out): nobody is counted any more.
  await backend.sessions.removeWatcher(ref, alice.watching.get(refKey(ref))!.id)
  await backend.control.publish({ kind: 'orphaned', ref, runId })
  await waitFor(() => requests[0]!.signal.aborted, 5000, 'abort')
  await alice.complete()
})

t.test('backpressure: while a watcher is not writable, deltas are merged into one token, and pulling stops at the limit', async (t) => {
  const { model, state } = slowModel(50, 2)
  const { service } = core(t, model)
  const alice = new FakeWatcher()
  const fine = new FakeWatcher()
  alice.writable = false
  await service.chat(alice, chat('s'))
  await sleep(30)
  t.equal(state.pulled, 0, 'not even started: its thinking waits for the socket')
  t.match(alice.frames, [{ content: 'thinking' }])
  alice.writable = true
  await waitFor(() => state.pulled >= 3)
  alice.writable = false
  const delivered = alice.frames.length
  await sleep(40)
  t.equal(alice.frames.length, delivered, 'nothing more sent to a backed-up socket')
  // A watcher that closes does not hold the run.
  await service.resume(fine, 's', 0)
  fine.writable = false
  alice.disconnect()
  fine.writable = true
  const complete = await fine.complete()
  t.equal(state.pulled, 50)
  const frames = fine.frames.filter((f) => f.seq !== undefined)
  t.same(frames.map((f) => f.seq), frames.map((_, i) => i + 1), 'every event once, in order')
  t.ok(frames.filter((f) => f.type === 'token').length < 50, 'fewer, larger token frames')
  t.equal(frames.filter((f) => f.type === 'token').map((f) => f.content).join(''), complete.content, 'and nothing lost: the tokens still add up to the complete')
})

t.test('merging holds at most 64 K characters: then the run stops pulling until the socket drains', async (t) => {
  const big = 'x'.repeat(40 * 1024)
  let pulled = 0
  const model: ModelClient = {
    name: 'big',
    async *stream() {
      for (let i = 0; i < 6; i++) {
        await sleep(5)
        pulled++
        yield [{ type: 'text', text: big }]
      }
      yield [{ type: 'finish', reason: 'stop' }]
    },
  }
  const { service } = core(t, model)
  const alice = new FakeWatcher()
  // Backed up by its first token, as a socket past its high-water mark would be.
  const deliver = alice.deliver.bind(alice)
  let first = true
  alice.deliver = (frame) => {
    deliver(frame)
    if (first && frame.includes('"type":"token"')) alice.writable = first = false
  }
  await service.chat(alice, chat('big'))
  await sleep(40)
  t.ok(pulled <= 4, `pulling stopped once 64 K were held (${pulled} of 6 pulled)`)
  alice.writable = true
  const complete = await alice.complete()
  t.equal(complete.content?.length, 6 * big.length)
})

t.test('a watcher closed mid-chat: the run starts unwatched and is aborted after the grace', async (t) => {
  const { model, requests } = slowModel(100, 10)
  // Long enough for each run to ask the model (a turn after its start) on a busy machine.
  const { service, backend } = core(t, model, { config: { resumeGraceMs: 200 } })

  const closed = new FakeWatcher()
  closed.disconnect()
  t.equal(await service.chat(closed, chat('already')), 'already')
  await waitFor(() => requests.length === 1)
  await waitFor(() => requests[0]!.signal.aborted, 5000, 'abort after the grace')
  t.match(requests[0]!.signal.reason, { cause: 'disconnect' })

  // Closes while the store counts it.
  const alice = new FakeWatcher()
  const addWatcher = backend.sessions.addWatcher.bind(backend.sessions)
  backend.sessions.addWatcher = async (ref, id) => {
    await addWatcher(ref, id)
    alice.disconnect()
  }
  await service.chat(alice, chat('during-count'))
  backend.sessions.addWatcher = addWatcher
  await waitFor(() => requests.length === 2)
  await waitFor(() => requests[1]!.signal.aborted, 5000, 'abort after the grace')

  // Closes while the log tail opens.
  const bob = new FakeWatcher()
  const subscribe = backend.events.subscribe.bind(backend.events)
  backend.events.subscribe = async (ref, after, listener) => {
    const tail = await subscribe(ref, after, listener)
    bob.disconnect()
    return tail
  }
  await service.chat(bob, chat('during-tail'))
  backend.events.subscribe = subscribe
  await waitFor(() => requests.length === 3)
  await waitFor(() => requests[2]!.signal.aborted, 5000, 'abort after the grace')
  t.same([alice.raw, bob.raw, closed.raw], [[], [], []])
  await waitFor(() => service.activeRunCount === 0)
  t.equal(service.subscriptionCount, 0)
})

t.test('subscribing the sender fails: the run is released, the session not left busy', async (t) => {
  const { model, requests } = slowModel(1, 0)
  const { service, backend } = core(t, model)
  const addWatcher = backend.sessions.addWatcher.bind(backend.sessions)
  backend.sessions.addWatcher = async () => {
    throw new Error('store down')
  }
  const alice = new FakeWatcher()
  await t.rejects(service.chat(alice, chat('s')), { message: 'store down' })
  t.equal((await backend.sessions.get('alice', 's'))!.active, null)
  t.equal(alice.watching.size, 0)
  backend.sessions.addWatcher = addWatcher
  await service.chat(alice, chat('s'))
  t.match(await alice.complete(), { metadata: { finish_reason: 'stop' } })
  t.equal(requests.length, 1)
})

t.test('fenced: a run released behind its back stops without further events', async (t) => {
  const { model, requests } = slowModel(100, 10)
  const { lines, log } = logs()
  const { service, backend } = core(t, model, { log })
  const alice = new FakeWatcher()
  await service.chat(alice, chat('s'))
  await waitFor(() => alice.frames.some((f) => f.type === 'token'))
  const ref = await refOf(backend, 'alice', 's')
  t.ok(await backend.sessions.releaseRun(ref, alice.frames[0]!.metadata!.run_id as string))
  await waitFor(() => requests[0]!.signal.aborted, 5000, 'abort')
  t.match(requests[0]!.signal.reason, { cause: 'fenced' })
  await waitFor(() => service.activeRunCount === 0)
  t.ok(lines.some((line) => line.msg === 'run fenced: another instance ended it'))
  const count = alice.raw.length
  await sleep(30)
  t.equal(alice.raw.length, count)
  t.notOk(alice.frames.some((f) => f.type === 'complete' || f.content === 'cancelled'), 'no final frames from the loser')
  t.same(alice.closes, [])
})

t.test('fenced by its lease: a renewal refused stops the run; a failing renewal is only logged', async (t) => {
  const { model, requests } = slowModel(100, 200)
  const { lines, log } = logs()
  const { service, backend } = core(t, model, { log, config: { leaseMs: 30 } })
  const alice = new FakeWatcher()
  let renewals = 0
  const renew = backend.sessions.renewLease.bind(backend.sessions)
  backend.sessions.renewLease = async (...args) => {
    if (++renewals <= 2) throw new Error('store down')
    return renew(...args)
  }
  await service.chat(alice, chat('s'))
  await waitFor(() => renewals >= 4, 5000, 'renewals')
  t.ok(lines.some((line) => line.msg === 'lease renewal failed'))
  t.notOk(requests[0]!.signal.aborted, 'renewed leases keep it going')
  const ref = await refOf(backend, 'alice', 's')
  // Right after a token: the next renewal comes long before the next token.
  const tokens = alice.raw.length
  await waitFor(() => alice.raw.length > tokens)
  await backend.sessions.releaseRun(ref, alice.frames[0]!.metadata!.run_id as string)
  await waitFor(() => requests[0]!.signal.aborted, 5000, 'abort')
  t.ok(lines.some((line) => line.msg === 'lease lost: the run no longer holds its session'))
  await waitFor(() => service.activeRunCount === 0)
  t.notOk(alice.frames.some((f) => f.type === 'complete'))
})

t.test('fenced with its session gone (the store lost its state): local watchers are closed 1011', async (t) => {
  const { model, requests } = slowModel(100, 10)
  const { lines, log } = logs()
  const backend = memory()
  t.teardown(() => backend.close())
  const { service } = core(t, model, { log, backend })
  const alice = new FakeWatcher()
  const other = new FakeWatcher('bob')
  const gone = new FakeWatcher('carol')
  gone.disconnect()
  await service.chat(alice, chat('s'))
  await service.chat(other, chat('s'))
  await service.chat(gone, chat('s'))
  // Both watched runs stream (run starts are spread one per turn; the unwatched one may end
  // before it ever asks the model).
  await waitFor(() => [alice, other].every((watcher) => watcher.frames.some((f) => f.type === 'token')))
  // A Redis that restarted empty: the sessions are gone, nobody was told.
  await backend.sessions.close()
  await waitFor(() => service.activeRunCount === 0)
  t.ok(requests.length >= 2 && requests.every((r) => r.signal.aborted), 'every model request made was closed')
  t.ok(lines.some((line) => line.msg === 'run fenced: its session is gone'))
  t.same(alice.closes, [[1011, 'session state lost']])
  t.same(other.closes, [[1011, 'session state lost']])
  t.equal(service.subscriptionCount, 0)
})

t.test('finishRun failing: once, the run ends as an error; always, its watchers are told the state is lost', async (t) => {
  const { lines, log } = logs()
  // Paced: thinking and two tokens of their own, seq 1-3.
  const { service, backend } = core(t, slowModel(2, 1).model, { log })
  const finishRun = backend.sessions.finishRun.bind(backend.sessions)
  let failures = 1
  backend.sessions.finishRun = async (ref, finish) => {
    if (failures-- > 0) throw new Error('store down')
    return finishRun(ref, finish)
  }
  const alice = new FakeWatcher()
  await service.chat(alice, chat('once'))
  t.match(await alice.complete(), { metadata: { finish_reason: 'error' } })
  t.match(alice.frames.at(-2), { type: 'error', metadata: { code: 'internal', retryable: true } })

  failures = Infinity
  const bob = new FakeWatcher()
  await service.chat(bob, chat('always'))
  await waitFor(() => bob.closes.length > 0)
  t.same(bob.closes, [[1011, 'session state lost']])
  t.notOk(bob.frames.some((f) => f.type === 'complete'))
  t.ok(lines.some((line) => line.msg === 'run could not log its end'))
  await waitFor(() => service.activeRunCount === 0)
})

t.test('a cancelled run whose end is fenced ends quietly', async (t) => {
  const { lines, log } = logs()
  const { model, requests } = slowModel(100, 10)
  const { service, backend } = core(t, model, { log })
  const alice = new FakeWatcher()
  await service.chat(alice, chat('s'))
  await waitFor(() => alice.frames.some((f) => f.type === 'token'))
  const ref = await refOf(backend, 'alice', 's')
  const runId = alice.frames[0]!.metadata!.run_id as string
  const append = backend.sessions.append.bind(backend.sessions)
  backend.sessions.append = async (r, id, event) => {
    // The run's `cancelled` finds the session ended elsewhere.
    if (event.type === 'status' && event.content === 'cancelled') await backend.sessions.releaseRun(r, id)
    return append(r, id, event)
  }
  await service.cancel('alice', 's')
  await waitFor(() => service.activeRunCount === 0)
  t.ok(requests[0]!.signal.aborted)
  t.ok(lines.some((line) => line.msg === 'run fenced: another instance ended it'))
  t.notOk(alice.frames.some((f) => f.type === 'complete'))
  t.equal(await backend.sessions.activeRun(ref), null)
  t.ok(runId)
})

t.test('model failures: an upstream error is relayed; a bug is internal; credentials are logged loudly', async (t) => {
  const cases = [
    { err: new UpstreamError('server', 'upstream said 503', { status: 503 }), code: 'upstream_error', content: 'upstream said 503', msg: 'run failed upstream', level: 40 },
    { err: new UpstreamError('rate_limited', 'slow down', { status: 429, retryAfterMs: 1500 }), code: 'upstream_error', content: 'slow down', msg: 'run failed upstream', level: 40 },
    { err: new UpstreamError('auth', 'bad key', { status: 401 }), code: 'upstream_error', content: 'bad key', msg: 'UPSTREAM REJECTED OUR CREDENTIALS: check OPENAI_API_KEY / OPENAI_BASE_URL', level: 50 },
    { err: new TypeError('cannot read properties of undefined'), code: 'internal', content: 'internal error', msg: 'run failed', level: 50 },
  ]
  for (const [i, c] of cases.entries()) {
    const { lines, log } = logs()
    const { service } = core(t, failingModel(c.err), { log })
    const alice = new FakeWatcher()
    await service.chat(alice, chat(`s${i}`, 'go', 'r1'))
    await alice.complete()
    const [thinking, error, complete] = alice.frames
    t.match(thinking, { content: 'thinking' })
    t.match(error, { type: 'error', seq: 2, content: c.content, metadata: { code: c.code, run_id: thinking!.metadata?.run_id, request_id: 'r1' } })
    t.match(complete, { metadata: { finish_reason: 'error', request_id: 'r1' } })
    t.notMatch(alice.raw.join(''), /cannot read properties/, 'a bug stays in the logs')
    t.ok(lines.some((line) => line.msg === c.msg && line.level === c.level), c.msg)
  }
})

t.test('history that starts with orphaned tool results is trimmed before the model sees it', async (t) => {
  const backend = memory()
  t.teardown(() => backend.close())
  const { model, requests } = slowModel(1, 0)
  const { service } = core(t, model, { backend })
  // A conversation trimmed from the front: it starts with a tool result.
  const { ref, runId } = await ghostRun(backend, 'alice', 's', 60_000, { role: 'tool', content: 'result', tool_call_id: 'c1' })
  await backend.sessions.finishRun(ref, {
    runId,
    instanceId: 'ghost',
    leaseMs: 60_000,
    event: { type: 'complete', session_id: 's', content: '', metadata: { run_id: runId, finish_reason: 'stop' } },
    messages: [],
    maxMessages: 50,
  })
  const alice = new FakeWatcher()
  await service.chat(alice, chat('s', 'first'))
  await alice.complete()
  t.same(requests[0]!.messages, [
    { role: 'system', content: 'sys' },
    { role: 'user', content: 'first' },
  ], 'only tool results: nothing of it')

  const mixed = await ghostRun(backend, 'alice', 't', 60_000, { role: 'tool', content: 'result', tool_call_id: 'c1' })
  await backend.sessions.finishRun(mixed.ref, {
    runId: mixed.runId,
    instanceId: 'ghost',
    leaseMs: 60_000,
    event: { type: 'complete', session_id: 't', content: 'x', metadata: { run_id: mixed.runId, finish_reason: 'stop' } },
    messages: [{ role: 'assistant', content: 'x' }],
    maxMessages: 50,
  })
  await service.chat(alice, chat('t', 'second'))
  await alice.complete(2)
  t.same(requests[1]!.messages.slice(1), [
    { role: 'assistant', content: 'x' },
    { role: 'user', content: 'second' },
  ])
})

t.test('drain: runs get the grace to finish, then are cancelled as shutdown', async (t) => {
  const quick = slowModel(3, 10)
  const a = core(t, quick.model)
  const alice = new FakeWatcher()
  await a.service.chat(alice, chat('s'))
  await a.service.drain(2000)
  t.match(alice.completes(), [{ metadata: { finish_reason: 'stop' } }], 'finished within the grace')
  t.equal(a.service.activeRunCount, 0)

  const slow = slowModel(1000, 10)
  const b = core(t, slow.model)
  const bob = new FakeWatcher()
  await b.service.chat(bob, chat('s'))
  const started = performance.now()
  await b.service.drain(50)
  t.ok(performance.now() - started >= 45)
  t.match(bob.completes(), [{ metadata: { finish_reason: 'cancelled', reason: 'shutdown' } }])
  t.equal(b.service.activeRunCount, 0)
  await b.service.drain(0)
})

t.test('drain waits for runs started during the grace', async (t) => {
  const { model } = slowModel(3, 10)
  const { service } = core(t, model)
  const alice = new FakeWatcher()
  await service.chat(alice, chat('a'))
  const draining = service.drain(2000)
  await sleep(5)
  await service.chat(alice, chat('b'))
  await draining
  t.equal(alice.completes().length, 2)
  t.match(alice.completes(), [{ metadata: { finish_reason: 'stop' } }, { metadata: { finish_reason: 'stop' } }])
})

t.test('MAX_WATCHED: one more session closes the least recently named one', async (t) => {
  const { service } = core(t, slowModel(1, 0).model)
  const alice = new FakeWatcher('alice', 2)
  await service.chat(alice, chat('one', 'x', 'q1'))
  await service.chat(alice, chat('two'))
  await waitFor(() => alice.completes().length === 2)
  // Named again (a duplicate): now the most recent.
  await service.chat(alice, chat('one', 'x', 'q1'))
  await service.chat(alice, chat('three'))
  await waitFor(() => alice.completes().length === 3)
  t.equal(alice.watching.size, 2)
  t.equal(service.subscriptionCount, 2)
  const count = alice.raw.length
  // 'two' was dropped: a run in it from another connection does not reach alice.
  const other = new FakeWatcher()
  await service.chat(other, chat('two', 'more'))
  await other.complete()
  await sleep(20)
  t.equal(alice.raw.length, count, 'nothing of the dropped session reaches alice')
  // 'one' is still watched.
  await service.chat(other, chat('one', 'again'))
  await waitFor(() => alice.completes().length === 4)
})

t.test('watched sessions that expire are ended for their watchers', async (t) => {
  const backend = memory(100, 0.15)
  t.teardown(() => backend.close())
  const { service } = core(t, slowModel(3, 10).model, { backend })
  const alice = new FakeWatcher()
  await service.chat(alice, chat('s'))
  await alice.complete()
  await waitFor(() => alice.frames.at(-1)?.content === 'session expired', 5000, 'expiry')
  t.match(alice.frames.at(-1), { type: 'error', session_id: 's', metadata: { code: 'not_found', retryable: false } })
  t.equal(alice.watching.size, 0)
  t.equal(service.subscriptionCount, 0)
})

t.test('the hub: a session the store forgot, refresh and release failures', async (t) => {
  const { lines, log } = logs()
  const { service, subscriptions, backend } = core(t, slowModel(3, 30).model, { log, refreshMs: 20 })
  const expiresIn = backend.sessions.expiresIn.bind(backend.sessions)

  // The store says it is gone, the log never said so (state lost): the hub ends it.
  const alice = new FakeWatcher()
  await service.chat(alice, chat('t'))
  await alice.complete()
  alice.disconnect()
  backend.sessions.expiresIn = async () => null
  const carol = new FakeWatcher()
  await service.resume(carol, 't', 0)
  await waitFor(() => carol.frames.at(-1)?.content === 'session expired', 5000, 'ended')
  t.equal(carol.watching.size, 0)

  // The check fails: logged, checked again later.
  backend.sessions.expiresIn = async () => {
    throw new Error('store down')
  }
  const eve = new FakeWatcher()
  await service.resume(eve, 't', 0)
  await waitFor(() => lines.some((line) => line.msg === 'session expiry check failed'))
  t.equal(eve.watching.size, 1)
  backend.sessions.expiresIn = expiresIn

  // Refreshing the watchers of a running session fails: logged; so does releasing one.
  backend.sessions.refreshWatchers = async () => {
    throw new Error('store down')
  }
  backend.sessions.removeWatcher = async () => {
    throw new Error('store down')
  }
  const dave = new FakeWatcher()
  await service.chat(dave, chat('u'))
  await waitFor(() => lines.some((line) => line.msg === 'watcher refresh failed'))
  dave.disconnect()
  await waitFor(() => lines.some((line) => line.msg === 'could not release watcher'))
  t.equal(subscriptions.of({ owner: 'alice', id: 'u', gen: 'x' }).size, 0)
  await subscriptions.whenWritable({ owner: 'alice', id: 'nobody', gen: 'x' })
})

t.test('tool calls are relayed as status frames', async (t) => {
  const echo = defineTool({
    name: 'echo',
    description: 'echoes',
    parameters: Type.Object({ text: Type.String() }),
    run: ({ text }) => ({ echoed: text }),
  })
  let calls = 0
  const model: ModelClient = {
    name: 'tools',
    async *stream() {
      if (calls++ === 0) {
        yield [{ type: 'tool_call', index: 0, id: 'c1', name: 'echo', arguments: '{"text":"hi"}' }]
        yield [{ type: 'finish', reason: 'tool_calls' }]
        return
      }
      yield [{ type: 'text', text: 'done' }]
      yield [{ type: 'finish', reason: 'stop' }]
    },
  }
  const { service } = core(t, model, { tools: [echo as unknown as Tool] })
  const alice = new FakeWatcher()
  await service.chat(alice, chat('s'))
  await alice.complete()
  t.match(alice.frames.map((f) => f.content), ['thinking', 'tool_call', 'tool_result', 'done', 'done'])
  t.match(alice.frames[1], { type: 'status', metadata: { tool: 'echo', call_id: 'c1', arguments: { text: 'hi' } } })
  t.match(alice.frames[2], { type: 'status', metadata: { tool: 'echo', call_id: 'c1', result: { echoed: 'hi' }, is_error: false } })
})

t.test('a run fenced at its complete ends quietly; resume with nothing to replay; a duplicate that cannot subscribe', async (t) => {
  const { lines, log } = logs()
  // Paced: thinking and two tokens of their own, seq 1-3.
  const { service, backend } = core(t, slowModel(2, 1).model, { log })
  const finishRun = backend.sessions.finishRun.bind(backend.sessions)
  backend.sessions.finishRun = async (ref, finish) => {
    // Ended elsewhere just before its complete.
    await backend.sessions.releaseRun(ref, finish.runId)
    return finishRun(ref, finish)
  }
  const alice = new FakeWatcher()
  await service.chat(alice, chat('s', 'go', 'q1'))
  await waitFor(() => service.activeRunCount === 0)
  t.ok(lines.some((line) => line.msg === 'run fenced: another instance ended it'))
  t.notOk(alice.frames.some((f) => f.type === 'complete'))
  backend.sessions.finishRun = finishRun

  const back = new FakeWatcher()
  await service.resume(back, 's', 3)
  t.same(back.frames, [{ type: 'status', session_id: 's', content: 'resumed', metadata: { last_seq: 3, active_run: null, pending: [] } }])

  backend.sessions.addWatcher = async () => {
    throw new Error('store down')
  }
  await t.rejects(service.chat(new FakeWatcher(), chat('s', 'go', 'q1')), { message: 'store down' })
})

t.test('a watcher on another instance that falls behind what the log holds is told history_gone', async (t) => {
  const backend = memory(2)
  t.teardown(() => backend.close())
  const a = core(t, slowModel(10, 2).model, { backend })
  const b = core(t, slowModel(1, 0).model, { backend })
  const alice = new FakeWatcher()
  await a.service.chat(alice, chat('s'))
  const far = new FakeWatcher()
  await b.service.resume(far, 's', 0)
  far.writable = false
  await alice.complete()
  far.writable = true
  await waitFor(() => far.frames.some((f) => f.metadata?.code === 'history_gone'), 5000, 'history_gone')
  t.equal(far.watching.size, 0)
})

t.test('merged text is logged before the next event and before the complete', async (t) => {
  for (const then of ['tool', 'finish'] as const) {
    let calls = 0
    const model: ModelClient = {
      name: 'merge',
      async *stream() {
        if (calls++ > 0) {
          yield [{ type: 'text', text: 'after' }]
          yield [{ type: 'finish', reason: 'stop' }]
          return
        }
        for (const text of ['a', 'b', 'c', 'd']) {
          await sleep(5)
          yield [{ type: 'text', text }]
        }
        if (then === 'tool') yield [{ type: 'tool_call', index: 0, id: 'c1', name: 'echo', arguments: '{"text":"x"}' }]
        yield [{ type: 'finish', reason: then === 'tool' ? 'tool_calls' : 'stop' }]
      },
    }
    const echo = defineTool({ name: 'echo', description: 'echo', parameters: Type.Object({ text: Type.String() }), run: ({ text }) => text })
    const { service } = core(t, model, { tools: [echo as unknown as Tool] })
    const alice = new FakeWatcher()
    const deliver = alice.deliver.bind(alice)
    let first = true
    alice.deliver = (frame) => {
      deliver(frame)
      if (first && frame.includes('"type":"token"')) {
        alice.writable = first = false
        setTimeout(() => (alice.writable = true), 60)
      }
    }
    await service.chat(alice, chat(`m-${then}`))
    const complete = await alice.complete()
    const frames = alice.frames.filter((frame) => frame.seq !== undefined)
    t.same(frames.map((frame) => frame.seq), frames.map((_, i) => i + 1), `${then}: every event once, in order`)
    t.match(frames.filter((frame) => frame.type === 'token').map((frame) => frame.content).slice(0, 2), ['a', 'bcd'], `${then}: merged while backed up`)
    t.equal(frames.filter((frame) => frame.type === 'token').map((frame) => frame.content).join(''), complete.content)
  }
})

t.test('a token the store failed to take once: the run still logs its error and complete, once the store is back', async (t) => {
  const { service, backend } = core(t, slowModel(3, 1).model)
  const append = backend.sessions.append.bind(backend.sessions)
  let failed = false
  backend.sessions.append = async (ref, fence, event, settles) => {
    if (event.type === 'token' && !failed) {
      failed = true
      throw new Error('store blip')
    }
    return append(ref, fence, event, settles)
  }
  const alice = new FakeWatcher()
  await service.chat(alice, chat('s'))
  await alice.complete()
  t.match(alice.frames.at(-2), { type: 'error', metadata: { code: 'internal' } })
  t.match(alice.frames.at(-1), { type: 'complete', metadata: { finish_reason: 'error' } })
})
