import t from 'tap'
import { MemorySessionStore, MemoryEventLog, MemoryControlBus, createMemoryBackend } from '../../src/store/memory/index.ts'
import { REQUEST_IDS_KEPT } from '../../src/store/memory/session-store.ts'
import { serializeEvent } from '../../src/protocol/serialize.ts'
import type { BeginRun, ControlMessage, FinishRun, LogEnd, LoggedEvent, LogListener, SessionRecord, SessionRef } from '../../src/store/types.ts'
import type { UnsequencedRunEvent } from '../../src/protocol/index.ts'

const token = (sessionId: string, text: string, runId = 'r1'): UnsequencedRunEvent => ({ type: 'token', session_id: sessionId, content: text, metadata: { run_id: runId } })
const complete = (sessionId: string, runId: string): UnsequencedRunEvent => ({
  type: 'complete',
  session_id: sessionId,
  content: 'done',
  metadata: { run_id: runId, finish_reason: 'stop' },
})
const user = (content: string) => ({ role: 'user' as const, content })
const assistant = (content: string) => ({ role: 'assistant' as const, content })
const run = (runId: string, extra: Partial<BeginRun> = {}): BeginRun => ({
  runId,
  instanceId: 'i1',
  leaseMs: 1000,
  input: { kind: 'message', message: user(`u-${runId}`) },
  maxMessages: 100,
  ...extra,
})
const finish = (ref: SessionRef, runId: string, extra: Partial<FinishRun> = {}): FinishRun => ({
  runId,
  instanceId: 'i1',
  leaseMs: 1000,
  event: complete(ref.id, runId),
  messages: [assistant(`a-${runId}`)],
  maxMessages: 100,
  ...extra,
})
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve))
const refOf = (session: SessionRecord): SessionRef => ({ owner: session.owner, id: session.id, gen: session.gen })

function clock(start = 1_000_000) {
  const c = { now: start, fn: () => c.now }
  return c
}

/** A memory log and store on an injected clock. */
function memory(options: { ttlSeconds?: number; maxEvents?: number; now?: () => number } = {}) {
  const log = new MemoryEventLog({ maxEvents: options.maxEvents ?? 100 })
  const store = new MemorySessionStore({ ttlSeconds: options.ttlSeconds ?? 60, log, ...(options.now ? { now: options.now } : {}) })
  return { log, store }
}

async function opened(store: MemorySessionStore, owner: string, id: string, maxSessions = 10): Promise<SessionRef> {
  const result = await store.open(owner, id, maxSessions)
  if (result.kind !== 'open') throw new Error(`could not open ${id}`)
  return refOf(result.session)
}

/** Records what a log subscription hears. */
function recorder() {
  const events: LoggedEvent[] = []
  const ends: LogEnd[] = []
  const listener: LogListener = { event: (event) => void events.push(event), end: (reason) => void ends.push(reason) }
  return { events, ends, listener, seqs: () => events.map((event) => event.seq) }
}

t.test('MemorySessionStore: open, get, owners, touch, expiresIn, delete', async (t) => {
  const time = clock()
  const { store } = memory({ now: time.fn })
  t.teardown(() => store.close())
  t.equal(await store.get('alice', 's1'), null)
  const created = await store.open('alice', 's1', 10)
  t.same(created, { kind: 'open', session: { owner: 'alice', id: 's1', gen: '1', title: '', messages: [], createdAt: time.now, updatedAt: time.now, active: null } })
  const ref = await opened(store, 'alice', 's1')
  t.same(ref, { owner: 'alice', id: 's1', gen: '1' }, 'opening again gets the same generation')
  t.same(await store.get('alice', 's1'), (created as { session: SessionRecord }).session)
  t.equal(await store.get('mallory', 's1'), null, 'ids are scoped per owner')
  const other = await opened(store, 'mallory', 's1')
  t.not(other.gen, ref.gen, "another owner's session of that id is another session")

  time.now += 10_000
  t.equal(await store.expiresIn(ref), 50_000)
  t.equal(await store.touch(ref), true)
  t.equal(await store.expiresIn(ref), 60_000, 'touch pushes the expiry out by the TTL')
  t.equal(await store.touch({ ...ref, gen: 'old' }), false, 'another generation is not touched')
  t.equal(await store.expiresIn({ ...ref, gen: 'old' }), null)
  t.equal(await store.touch({ ...ref, id: 'nope' }), false)

  t.equal(await store.delete({ ...ref, gen: 'old' }), false, 'another generation is not deleted')
  t.equal(await store.delete(ref), true)
  t.equal(await store.delete(ref), false)
  t.equal(await store.get('alice', 's1'), null)
  t.equal(await store.expiresIn(ref), null)
  const again = await opened(store, 'alice', 's1')
  t.not(again.gen, ref.gen, 'created again after deletion: a new generation')
  t.ok(await store.get('mallory', 's1'), "the other owner's session is untouched")
  await store.ping()
})

t.test('MemorySessionStore: at most maxSessions per owner; expired and deleted ones do not count', async (t) => {
  const time = clock()
  const { store } = memory({ ttlSeconds: 10, now: time.fn })
  t.teardown(() => store.close())
  const a = await opened(store, 'alice', 'a', 2)
  time.now += 5000
  await opened(store, 'alice', 'b', 2)
  t.same(await store.open('alice', 'c', 2), { kind: 'too_many' })
  t.equal((await store.open('alice', 'a', 2)).kind, 'open', 'an existing session opens at the cap')
  t.equal((await store.open('bob', 'c', 2)).kind, 'open', 'the cap is per owner')
  await store.delete(a)
  t.equal((await store.open('alice', 'c', 2)).kind, 'open', 'a deleted session frees its place')
  t.same(await store.open('alice', 'd', 2), { kind: 'too_many' })
  time.now += 10_000
  t.equal((await store.open('alice', 'd', 2)).kind, 'open', 'an expired one (b) frees its place too')
  t.equal(await store.get('alice', 'b'), null)
})

t.test('MemorySessionStore: runs, history, idempotency keys, leases', async (t) => {
  const time = clock()
  const { store, log } = memory({ now: time.fn })
  t.teardown(() => store.close())
  t.same(await store.beginRun({ owner: 'alice', id: 'nope', gen: '1' }, run('r0')), { kind: 'gone' })
  const ref = await opened(store, 'alice', 's1')
  t.same(await store.beginRun({ ...ref, gen: 'other' }, run('r0')), { kind: 'gone' }, 'another generation: gone')
  t.equal(await store.activeRun(ref), null)
  t.same(await store.beginRun(ref, run('r1', { requestId: 'q1' })), { kind: 'started', runId: 'r1', requestId: 'q1', startAfterSeq: 0, history: [], userMessage: user('u-r1') })
  t.same(await store.activeRun(ref), { runId: 'r1', fence: 'r1', requestId: 'q1', instanceId: 'i1', startAfterSeq: 0, leaseExpiresAt: time.now + 1000 })
  t.same((await store.get('alice', 's1'))?.messages, [user('u-r1')], 'the user message is stored with the start')
  t.match(await store.get('alice', 's1'), { active: { runId: 'r1' } })
  t.match(await store.beginRun(ref, run('r2')), { kind: 'busy', active: { runId: 'r1' } })
  t.same(await store.beginRun(ref, run('r3', { requestId: 'q1' })), { kind: 'duplicate', runId: 'r1', startAfterSeq: 0 }, 'a seen key wins over busy')
  t.equal(await store.expiresIn(ref), 60_000, 'a session with a run does not count down')

  t.same(await store.append(ref, 'r1', token('s1', 'a')), { seq: 1, frame: serializeEvent(token('s1', 'a'), 1) })
  t.equal(await store.append(ref, 'other', token('s1', 'x')), null, 'only the active run appends')
  t.equal(await store.append({ ...ref, gen: 'other' }, 'r1', token('s1', 'x')), null, 'into its own generation only')
  t.equal(log.lastSeq(ref), 1, 'nothing appended by refused writes')

  time.now += 500
  t.equal(await store.renewLease(ref, 'r1', 1000), true)
  t.equal((await store.activeRun(ref))!.leaseExpiresAt, time.now + 1000)
  t.equal(await store.renewLease(ref, 'other', 1000), false)
  t.equal(await store.renewLease({ ...ref, id: 'nope' }, 'r1', 1000), false)

  t.equal(await store.finishRun(ref, finish(ref, 'other')), null, 'not the active run')
  t.equal(await store.finishRun(ref, finish(ref, 'r1', { ifLeaseExpired: true })), null, 'the lease is alive')
  time.now += 1001
  t.equal(await store.finishRun(ref, finish(ref, 'r1', { ifLeaseExpired: true, ifLastSeq: 0 })), null, 'the log moved on')
  t.equal(log.lastSeq(ref), 1)
  t.same(await store.finishRun(ref, finish(ref, 'r1', { ifLeaseExpired: true, ifLastSeq: 1 })), { event: { seq: 2, frame: serializeEvent(complete('s1', 'r1'), 2) }, next: null })
  t.equal(await store.activeRun(ref), null, 'the session is free')
  const record = (await store.get('alice', 's1'))!
  t.same(record.messages, [user('u-r1'), assistant('a-r1')], 'the run’s messages are stored with its complete')
  t.equal(record.updatedAt, time.now)
  record.messages.push(user('mutated'))
  t.equal((await store.get('alice', 's1'))!.messages.length, 2, 'callers get copies')

  t.same(await store.beginRun(ref, run('r4', { requestId: 'q1' })), { kind: 'duplicate', runId: 'r1', startAfterSeq: 0 }, 'remembered after the run ended')
  t.same(await store.beginRun(ref, run('r5', { reasoning: true })), { kind: 'started', runId: 'r5', startAfterSeq: 2, history: [user('u-r1'), assistant('a-r1')], userMessage: user('u-r5'), reasoning: true }, 'the history before this run’s message')
  t.equal(await store.releaseRun(ref, 'other'), false)
  t.equal(await store.releaseRun(ref, 'r5'), true, 'released without logging anything')
  t.equal(await store.releaseRun(ref, 'r5'), false)
  t.equal(log.lastSeq(ref), 2)

  // History is trimmed to maxMessages, oldest first, at the start and at the finish.
  await store.beginRun(ref, run('r6', { maxMessages: 3 }))
  t.same((await store.get('alice', 's1'))!.messages, [assistant('a-r1'), user('u-r5'), user('u-r6')])
  await store.finishRun(ref, finish(ref, 'r6', { maxMessages: 3, messages: [assistant('x'), assistant('y')] }))
  t.same((await store.get('alice', 's1'))!.messages, [user('u-r6'), assistant('x'), assistant('y')])

  // Keys are remembered up to a bound, oldest forgotten first.
  for (let i = 0; i < REQUEST_IDS_KEPT; i++) {
    await store.beginRun(ref, run(`k${i}`, { requestId: `key-${i}` }))
    await store.releaseRun(ref, `k${i}`)
  }
  t.equal((await store.beginRun(ref, run('again', { requestId: 'q1' }))).kind, 'started', 'the oldest key was forgotten')
  await store.releaseRun(ref, 'again')
  t.match(await store.beginRun(ref, run('again2', { requestId: `key-${REQUEST_IDS_KEPT - 1}` })), { kind: 'duplicate', runId: `k${REQUEST_IDS_KEPT - 1}` })
  t.same(await store.expiredLeases(), [], 'one instance: no lease of another to end')
})

t.test('MemorySessionStore: a run’s writes are refused once another finish, release or delete ended it', async (t) => {
  const { store, log } = memory()
  t.teardown(() => store.close())
  const ref = await opened(store, 'alice', 's')
  await store.beginRun(ref, run('r1'))
  t.ok(await store.finishRun(ref, finish(ref, 'r1')))
  t.equal(await store.append(ref, 'r1', token('s', 'late')), null, 'after finish: append refused')
  t.equal(await store.renewLease(ref, 'r1', 1000), false, 'renewal refused')
  t.equal(await store.finishRun(ref, finish(ref, 'r1')), null, 'a second finish refused')
  t.equal(await store.releaseRun(ref, 'r1'), false)

  await store.beginRun(ref, run('r2'))
  await store.releaseRun(ref, 'r2')
  t.equal(await store.append(ref, 'r2', token('s', 'late')), null, 'after release: append refused')
  t.equal(await store.finishRun(ref, finish(ref, 'r2')), null)

  await store.beginRun(ref, run('r3'))
  await store.append(ref, 'r3', token('s', 'kept'))
  t.equal(await store.delete(ref), true, 'a session is deleted with its run')
  t.equal(await store.append(ref, 'r3', token('s', 'late')), null, 'after delete: append refused')
  t.equal(await store.renewLease(ref, 'r3', 1000), false)
  t.equal(await store.finishRun(ref, finish(ref, 'r3')), null)
  t.equal(await store.releaseRun(ref, 'r3'), false)

  // The same id again: a new generation, whose log starts from nothing.
  const next = await opened(store, 'alice', 's')
  t.not(next.gen, ref.gen)
  t.same(await store.beginRun(next, run('r3')), { kind: 'started', runId: 'r3', startAfterSeq: 0, history: [], userMessage: user('u-r3') }, 'nothing of the old generation')
  t.equal(await store.append(ref, 'r3', token('s', 'late')), null, 'the old generation’s run cannot write into the new one')
  t.same(await log.read(next, 0), { events: [], gone: false, lastSeq: 0 })
  t.equal((await store.append(next, 'r3', token('s', 'new')))?.seq, 1)
})

t.test('MemorySessionStore: TTL with an injected clock; expiry ends the log for its readers', async (t) => {
  const time = clock()
  const { store, log } = memory({ ttlSeconds: 10, now: time.fn })
  t.teardown(() => store.close())
  const idle = await opened(store, 'alice', 'idle')
  const running = await opened(store, 'alice', 'running')
  await store.beginRun(running, run('r1'))
  const swept = await opened(store, 'alice', 'swept')
  await store.addWatcher(swept, 'c1')
  const reader = recorder()
  await log.subscribe(swept, 0, reader.listener)

  time.now += 9_999
  t.ok(await store.get('alice', 'idle'), 'just before the TTL it is still alive')
  t.equal(await store.expiresIn(idle), 1)
  time.now += 1
  store.sweep()
  t.same(reader.ends, ['expired'], 'readers of an expired session hear it')
  t.equal(await store.get('alice', 'swept'), null, 'idle sessions expire, watched or not')
  t.equal(await store.watcherCount(swept), 0)
  t.ok(await store.get('alice', 'running'), 'a session with a run does not')
  t.equal(await store.get('alice', 'idle'), null)

  const lazy = await opened(store, 'alice', 'lazy')
  time.now += 10_001
  t.equal(await store.touch(lazy), false, 'an expired session is gone on use too, before any sweep')
  t.equal((await store.open('alice', 'lazy', 10)).kind, 'open', 'and its id is free again')

  await store.finishRun(running, finish(running, 'r1'))
  time.now += 10_001
  t.equal(await store.activeRun(running), null)
  t.equal(await store.get('alice', 'running'), null, 'the TTL counts from the run’s end')
})

t.test('MemorySessionStore: the sweeper runs on its own and stops on close', async (t) => {
  const time = clock()
  const { store, log } = memory({ ttlSeconds: 0.02, now: time.fn })
  const ref = await opened(store, 'alice', 's')
  const reader = recorder()
  await log.subscribe(ref, 0, reader.listener)
  time.now += 1000
  await new Promise((resolve) => setTimeout(resolve, 80))
  t.same(reader.ends, ['expired'])
  await store.close()
  t.equal(await store.get('alice', 's'), null)

  const real = memory({ ttlSeconds: 60 })
  t.teardown(() => real.store.close())
  const fresh = await real.store.open('alice', 's', 1)
  t.ok(fresh.kind === 'open' && Math.abs(fresh.session.createdAt - Date.now()) < 1000, 'the real clock by default')
})

t.test('MemorySessionStore: watchers', async (t) => {
  const { store } = memory()
  t.teardown(() => store.close())
  const ref = await opened(store, 'alice', 's')
  const nope = { ...ref, gen: 'nope' }
  await store.addWatcher(ref, 'c1')
  await store.addWatcher(ref, 'c2')
  await store.addWatcher(ref, 'c1')
  await store.addWatcher(nope, 'c3')
  t.equal(await store.watcherCount(ref), 2)
  await store.refreshWatchers()
  t.equal(await store.removeWatcher(ref, 'c1'), 1)
  t.equal(await store.removeWatcher(ref, 'c2'), 0)
  t.equal(await store.removeWatcher(nope, 'c2'), 0)
  t.equal(await store.watcherCount(nope), 0)
})

t.test('MemoryEventLog: seq, serialization, read, generations', async (t) => {
  const log = new MemoryEventLog({ maxEvents: 100 })
  t.teardown(() => log.close())
  const s1 = { owner: 'alice', id: 's1', gen: '1' }
  t.same(await log.read(s1, 0), { events: [], gone: false, lastSeq: 0 }, 'an empty session holds everything after 0')
  t.same(await log.read(s1, 3), { events: [], gone: true, lastSeq: 0 }, 'but not after 3')
  t.equal(log.lastSeq(s1), 0)
  t.same(log.append(s1, token('s1', 'a')), { seq: 1, frame: '{"type":"token","session_id":"s1","seq":1,"content":"a","metadata":{"run_id":"r1"}}' })
  log.append(s1, token('s1', 'b'))
  t.equal(log.append({ ...s1, id: 's2' }, token('s2', 'x')).seq, 1, 'seq is per session')
  t.equal(log.append({ ...s1, gen: '2' }, token('s1', 'x')).seq, 1, 'and per generation')
  t.equal(log.append({ ...s1, owner: 'bob' }, token('s1', 'x')).seq, 1, 'and per owner')
  log.append(s1, token('s1', 'c'))
  t.equal(log.lastSeq(s1), 3)
  t.same((await log.read(s1, 1)).events.map((e) => e.seq), [2, 3])
  t.same(await log.read(s1, 3), { events: [], gone: false, lastSeq: 3 }, 'caught up')
  t.equal((await log.read(s1, 4)).gone, true, 'ahead of the log: gone')
  log.end(s1, 'deleted')
  t.equal(log.lastSeq(s1), 0)
  t.same(await log.read(s1, 0), { events: [], gone: false, lastSeq: 0 })
  log.end({ ...s1, id: 'never' }, 'deleted')
})

t.test('MemoryEventLog: retention and the gone logic', async (t) => {
  const log = new MemoryEventLog({ maxEvents: 4 })
  t.teardown(() => log.close())
  const s = { owner: 'alice', id: 's', gen: '1' }
  for (let i = 1; i <= 10; i++) log.append(s, token('s', `t${i}`))
  t.equal((await log.read(s, 0)).gone, true)
  t.equal((await log.read(s, 5)).gone, true, 'seq 6 is no longer held')
  t.same((await log.read(s, 6)).events.map((e) => e.seq), [7, 8, 9, 10], 'the last maxEvents are')
  t.same((await log.read(s, 9)).events.map((e) => e.seq), [10])
  for (let i = 11; i <= 40; i++) log.append(s, token('s', `t${i}`))
  t.same((await log.read(s, 36)).events.map((e) => e.seq), [37, 38, 39, 40], 'trimming keeps holding exactly the last maxEvents')
  t.equal((await log.read(s, 35)).gone, true)
})

t.test('MemoryEventLog: token events are held as text, and replay byte for byte across runs and trims', async (t) => {
  // 8 events a run: what is held always spans two runs.
  const log = new MemoryEventLog({ maxEvents: 12 })
  t.teardown(() => log.close())
  const s = { owner: 'alice', id: 's', gen: '1' }
  const sent: LoggedEvent[] = []
  const texts = ['plain ', '"quoted" \\ back', 'ünï \u2028 line\nbreak', '{"type":"status"}', '']
  for (const [r, runId] of ['r1', 'r2', 'r3', 'r4'].entries()) {
    sent.push(log.append(s, { type: 'status', session_id: 's', content: 'thinking', metadata: { run_id: runId } }))
    for (const [i, text] of texts.entries()) {
      sent.push(log.append(s, token('s', text, runId)))
      // A later run announced while this one streams: its event sits between this run's tokens.
      if (i === 1) sent.push(log.append(s, { type: 'status', session_id: 's', content: 'queued', metadata: { run_id: `q${r}`, position: 1 } } as UnsequencedRunEvent))
    }
    sent.push(log.append(s, complete('s', runId)))
    for (let after = Math.max(0, sent.length - 12); after < sent.length; after++) {
      t.same((await log.read(s, after)).events, sent.slice(after), `run ${runId}: the frames after ${after}, as first sent`)
    }
  }
  t.equal((await log.read(s, sent.length - 13)).gone, true, 'and nothing older than the last maxEvents')
  const tokensOnly = new MemoryEventLog({ maxEvents: 3 })
  const first = [1, 2, 3, 4, 5, 6].map((i) => tokensOnly.append(s, token('s', `t${i}`, i < 5 ? 'a' : 'b')))
  t.same((await tokensOnly.read(s, 3)).events, first.slice(3), 'a trimmed run that began before the oldest held token still names it')
})

t.test('MemoryEventLog.subscribe: backlog, then live, no gap, no duplicate', async (t) => {
  const log = new MemoryEventLog({ maxEvents: 100 })
  t.teardown(() => log.close())
  const s = { owner: 'alice', id: 's', gen: '1' }
  for (const text of ['a', 'b', 'c']) log.append(s, token('s', text))
  const got = recorder()
  const subscription = await log.subscribe(s, 1, got.listener)
  t.same(got.events, [], 'nothing before the caller has reacted to the resolved promise')
  // Appended after subscribing but before the backlog is delivered: exactly once, in order.
  log.append(s, token('s', 'd'))
  t.same(got.events, [])
  await nextTurn()
  t.same(got.seqs(), [2, 3, 4])
  log.append(s, token('s', 'e'))
  t.same(got.seqs(), [2, 3, 4, 5], 'live after the backlog')
  log.append({ ...s, id: 'other' }, token('other', 'x'))
  log.append({ ...s, gen: '2' }, token('s', 'x'))
  t.equal(got.events.length, 4, 'other sessions and generations do not leak in')
  subscription.close()
  log.append(s, token('s', 'f'))
  t.equal(got.events.length, 4, 'closed: nothing more')

  const ahead = recorder()
  await log.subscribe(s, 9, ahead.listener)
  await nextTurn()
  t.same(ahead.ends, ['history_gone'], 'a subscriber ahead of the log cannot be served')

  const fresh = recorder()
  const sub2 = await log.subscribe({ ...s, id: 'new' }, 0, fresh.listener)
  log.append({ ...s, id: 'new' }, token('new', 'x'))
  await nextTurn()
  log.append({ ...s, id: 'new' }, token('new', 'y'))
  t.same(fresh.seqs(), [1, 2], 'subscribing to a session before its first event')
  sub2.close()
  const empty = await log.subscribe({ ...s, id: 'empty' }, 0, recorder().listener)
  t.same(await log.read({ ...s, id: 'empty' }, 0), { events: [], gone: false, lastSeq: 0 }, 'a log with no events yet holds everything after 0')
  t.equal((await log.read({ ...s, id: 'empty' }, 1)).gone, true)
  empty.close()

  const early = recorder()
  const closedEarly = await log.subscribe(s, 0, early.listener)
  closedEarly.close()
  closedEarly.resume()
  await nextTurn()
  t.same(early.events, [], 'closed before its first delivery: nothing')
})

t.test('MemoryEventLog.subscribe: pause, resume, and the history_gone gap', async (t) => {
  const log = new MemoryEventLog({ maxEvents: 4 })
  t.teardown(() => log.close())
  const s = { owner: 'alice', id: 's', gen: '1' }
  const got = recorder()
  const subscription = await log.subscribe(s, 0, got.listener)
  await nextTurn()
  log.append(s, token('s', 'a'))
  subscription.pause()
  log.append(s, token('s', 'b'))
  log.append(s, token('s', 'c'))
  t.same(got.seqs(), [1], 'a paused subscription gets nothing')
  subscription.resume()
  t.same(got.seqs(), [1, 2, 3], 'on resume it catches up from the log')
  subscription.resume()
  log.append(s, token('s', 'd'))
  t.same(got.seqs(), [1, 2, 3, 4], 'then live again')

  subscription.pause()
  for (let i = 0; i < 6; i++) log.append(s, token('s', `x${i}`))
  t.same(got.ends, [])
  subscription.resume()
  t.same(got.ends, ['history_gone'], 'what it missed was trimmed: it ends')
  log.append(s, token('s', 'after'))
  t.equal(got.events.length, 4, 'and hears nothing more')

  // Pausing inside a delivery stops the catch-up; resuming inside one continues it, once each.
  const juggler = recorder()
  let sub: { pause(): void; resume(): void } | undefined
  const listener: LogListener = {
    event: (event) => {
      juggler.listener.event(event)
      if (event.seq === 8) sub!.pause()
      if (event.seq === 9) {
        sub!.pause()
        sub!.resume()
      }
    },
    end: juggler.listener.end,
  }
  sub = await log.subscribe(s, 7, listener)
  await nextTurn()
  t.same(juggler.seqs(), [8], 'paused by its own listener: the catch-up stops')
  sub.resume()
  t.same(juggler.seqs(), [8, 9, 10, 11], 'each event once, in order')

  // A subscription that starts behind what is held.
  const late = recorder()
  await log.subscribe(s, 2, late.listener)
  await nextTurn()
  t.same(late.ends, ['history_gone'])
  t.same(late.events, [])
})

t.test('MemoryEventLog: deletion ends every reader; a new generation starts afresh', async (t) => {
  const { store, log } = memory()
  t.teardown(() => store.close())
  const ref = await opened(store, 'alice', 's')
  await store.beginRun(ref, run('r1'))
  await store.append(ref, 'r1', token('s', 'a'))
  const live = recorder()
  const paused = recorder()
  await log.subscribe(ref, 0, live.listener)
  const pausedSub = await log.subscribe(ref, 1, paused.listener)
  await nextTurn()
  pausedSub.pause()
  await store.delete(ref)
  t.same(live.ends, ['deleted'])
  t.same(paused.ends, ['deleted'], 'paused ones too')
  t.same(live.seqs(), [1])

  const next = await opened(store, 'alice', 's')
  const reader = recorder()
  await log.subscribe(next, 0, reader.listener)
  await store.beginRun(next, run('r2'))
  await store.append(next, 'r2', token('s', 'new'))
  await nextTurn()
  t.same(reader.events, [{ seq: 1, frame: serializeEvent(token('s', 'new'), 1) }], 'only the new generation’s events')
  t.same(live.seqs(), [1], 'old readers hear nothing of it')
})

t.test('MemoryControlBus and createMemoryBackend', async (t) => {
  const bus = new MemoryControlBus()
  const seen: ControlMessage[] = []
  bus.onMessage((message) => void seen.push(message))
  const message: ControlMessage = { kind: 'orphaned', ref: { owner: 'alice', id: 's', gen: '1' }, runId: 'r' }
  await bus.publish(message)
  t.same(seen, [message])
  await bus.close()
  await bus.publish(message)
  t.equal(seen.length, 1, 'closed: no handlers')

  const backend = createMemoryBackend({ ttlSeconds: 60, maxEvents: 10 })
  t.equal(backend.kind, 'memory')
  const opened = await backend.sessions.open('alice', 's', 1)
  t.equal(opened.kind, 'open')
  const ref = refOf((opened as { session: SessionRecord }).session)
  await backend.sessions.beginRun(ref, run('r1'))
  t.equal((await backend.sessions.append(ref, 'r1', token('s', 'a')))?.seq, 1, 'the store writes into the backend’s log')
  t.equal((await backend.events.read(ref, 0)).lastSeq, 1)
  await backend.close()
  await backend.close()
  t.equal(await backend.sessions.get('alice', 's'), null, 'closed: forgotten')
})

t.test('MemorySessionStore.list: ties broken by id, so the cursor is exact; expired sessions are not listed', async (t) => {
  const time = clock()
  const { store } = memory({ ttlSeconds: 10, now: time.fn })
  t.teardown(() => store.close())
  for (const id of ['b', 'd', 'a', 'c']) await opened(store, 'alice', id)
  time.now += 1000
  const old = await opened(store, 'alice', 'old')
  await store.beginRun(old, run('r1'))
  await store.releaseRun(old, 'r1')
  time.now -= 1000
  const page = async (limit: number, cursor?: string) => {
    const listed = await store.list('alice', limit, cursor)
    return { ids: listed.sessions.map((session) => session.id), cursor: listed.nextCursor }
  }
  const first = await page(2)
  t.same(first.ids, ['old', 'd'], 'the newest first; equal times by id, descending')
  const second = await page(2, first.cursor)
  t.same(second.ids, ['c', 'b'], 'the cursor resumes exactly after d')
  t.same(await page(2, second.cursor), { ids: ['a'], cursor: undefined })
  t.same((await store.list('alice', 10, undefined)).sessions[0], { id: 'old', title: '', createdAt: time.now + 1000, updatedAt: time.now + 1000, activeRunId: null })
  time.now += 10_500
  t.same((await page(10)).ids, ['old'], 'the others expired: not listed (and forgotten)')
  t.equal(await store.get('alice', 'a'), null)
})

t.test('MemorySessionStore: a queued run remembers its request id once; it starts with the finishing instance’s lease', async (t) => {
  const time = clock()
  const { store } = memory({ now: time.fn })
  t.teardown(() => store.close())
  const ref = await opened(store, 'alice', 's')
  await store.beginRun(ref, run('r1'))
  t.same(await store.beginRun(ref, run('r2', { requestId: 'q2', onBusy: 'enqueue', maxQueued: 1 })), { kind: 'queued', runId: 'r2', position: 1, startAfterSeq: 0 }, 'no queued event asked for: none logged')
  time.now += 100
  const finished = await store.finishRun(ref, finish(ref, 'r1', { instanceId: 'i9', leaseMs: 5000 }))
  t.same(finished?.next, { runId: 'r2', requestId: 'q2', startAfterSeq: 1, history: [user('u-r1'), assistant('a-r1')], userMessage: user('u-r2') })
  t.same(await store.activeRun(ref), { runId: 'r2', fence: 'r2', requestId: 'q2', instanceId: 'i9', startAfterSeq: 1, leaseExpiresAt: time.now + 5000 })
  t.same((await store.beginRun(ref, run('r3', { requestId: 'q2' }))), { kind: 'duplicate', runId: 'r2', startAfterSeq: 1 })
  // The queued run's maxMessages applies when it starts.
  await store.finishRun(ref, finish(ref, 'r2'))
  await store.beginRun(ref, run('r3'))
  await store.beginRun(ref, run('r4', { onBusy: 'interrupt', maxQueued: 1, maxMessages: 2 }))
  await store.finishRun(ref, finish(ref, 'r3', { messages: [] }))
  t.same((await store.get('alice', 's'))!.messages, [user('u-r3'), user('u-r4')], 'trimmed to the queued run’s maxMessages')
})
