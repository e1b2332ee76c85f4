import t from 'tap'
import { MemorySessionStore, MemoryEventLog, MemoryControlBus, createMemoryBackend } from '../../src/store/memory.ts'
import type { LoggedEvent, ControlMessage } from '../../src/store/types.ts'
import type { UnsequencedRunEvent } from '../../src/protocol/index.ts'

const token = (sessionId: string, text: string): UnsequencedRunEvent => ({ type: 'token', session_id: sessionId, content: text, metadata: { run_id: 'r1' } })
const run = (runId: string, requestId?: string) => ({ runId, instanceId: 'i1', startAfterSeq: 0, leaseMs: 1000, ...(requestId ? { requestId } : {}) })
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve))

function clock(start = 1_000_000) {
  const c = { now: start, fn: () => c.now }
  return c
}

t.test('MemorySessionStore: create, read, history', async (t) => {
  const time = clock()
  const store = new MemorySessionStore({ ttlSeconds: 60, now: time.fn })
  t.teardown(() => store.close())
  t.equal(await store.get('s1'), null)
  const created = await store.getOrCreate('s1', 'alice')
  t.same(created, { id: 's1', owner: 'alice', messages: [], createdAt: time.now, updatedAt: time.now })
  time.now += 10
  t.equal((await store.getOrCreate('s1', 'mallory')).owner, 'alice', 'an existing session keeps its owner')

  await store.appendMessages('s1', [{ role: 'user', content: 'u1' }, { role: 'assistant', content: 'a1' }], 3)
  await store.appendMessages('s1', [{ role: 'user', content: 'u2' }, { role: 'assistant', content: 'a2' }], 3)
  const record = (await store.get('s1'))!
  t.same(record.messages.map((m) => m.content), ['a1', 'u2', 'a2'], 'oldest dropped first')
  t.equal(record.updatedAt, time.now)
  record.messages.push({ role: 'user', content: 'mutated' })
  t.equal((await store.get('s1'))!.messages.length, 3, 'callers get copies')
  await store.appendMessages('unknown', [{ role: 'user', content: 'x' }], 3)
  t.equal(await store.get('unknown'), null, 'appending to an unknown session creates nothing')

  t.equal(await store.delete('s1'), true)
  t.equal(await store.delete('s1'), false)
  await store.ping()
})

t.test('MemorySessionStore: runs, idempotency keys, leases, watchers', async (t) => {
  const time = clock()
  const store = new MemorySessionStore({ ttlSeconds: 60, now: time.fn })
  t.teardown(() => store.close())
  await t.rejects(store.beginRun('nope', run('r0')), /does not exist/)
  await store.getOrCreate('s1', 'alice')
  t.same(await store.beginRun('s1', run('r1', 'q1')), { kind: 'started' })
  t.same(await store.activeRun('s1'), { runId: 'r1', requestId: 'q1', instanceId: 'i1', startAfterSeq: 0, leaseExpiresAt: time.now + 1000 })
  t.match(await store.beginRun('s1', run('r2')), { kind: 'busy', active: { runId: 'r1' } })
  t.same(await store.beginRun('s1', run('r3', 'q1')), { kind: 'duplicate', runId: 'r1', startAfterSeq: 0 }, 'a seen key wins over busy')

  time.now += 500
  t.equal(await store.renewLease('s1', 'r1', 1000), true)
  t.equal((await store.activeRun('s1'))!.leaseExpiresAt, time.now + 1000)
  t.equal(await store.renewLease('s1', 'other', 1000), false)
  t.equal(await store.renewLease('nope', 'r1', 1000), false)
  t.equal(await store.endRun('s1', 'other'), false)
  t.equal(await store.endRun('s1', 'r1'), true)
  t.equal(await store.endRun('s1', 'r1'), false)
  t.equal(await store.activeRun('s1'), null)
  t.same(await store.beginRun('s1', { ...run('r4', 'q1'), startAfterSeq: 9 }), { kind: 'duplicate', runId: 'r1', startAfterSeq: 0 }, 'remembered after the run ended')
  t.same(await store.beginRun('s1', run('r5')), { kind: 'started' }, 'no key: always a new run')
  await store.endRun('s1', 'r5')

  // Keys are remembered up to a bound, oldest forgotten first.
  for (let i = 0; i < 256; i++) {
    await store.beginRun('s1', run(`k${i}`, `key-${i}`))
    await store.endRun('s1', `k${i}`)
  }
  t.same(await store.beginRun('s1', run('again', 'q1')), { kind: 'started' }, 'the oldest key was forgotten')
  await store.endRun('s1', 'again')
  t.match(await store.beginRun('s1', run('again2', 'key-255')), { kind: 'duplicate', runId: 'k255' })

  await store.addWatcher('s1', 'c1')
  await store.addWatcher('s1', 'c2')
  await store.addWatcher('s1', 'c1')
  await store.addWatcher('nope', 'c1')
  t.equal(await store.watcherCount('s1'), 2)
  t.equal(await store.removeWatcher('s1', 'c1'), 1)
  t.equal(await store.removeWatcher('s1', 'c2'), 0)
  t.equal(await store.removeWatcher('nope', 'c2'), 0)
  t.equal(await store.watcherCount('nope'), 0)
})

t.test('MemorySessionStore: TTL with an injected clock', async (t) => {
  const time = clock()
  const store = new MemorySessionStore({ ttlSeconds: 10, now: time.fn })
  t.teardown(() => store.close())
  const expired: string[] = []
  store.onExpire = (id) => void expired.push(id)
  await store.getOrCreate('idle', 'alice')
  await store.getOrCreate('running', 'alice')
  await store.beginRun('running', run('r1'))
  await store.getOrCreate('watched', 'alice')
  await store.addWatcher('watched', 'c1')
  await store.getOrCreate('swept', 'alice')

  time.now += 10_000
  t.not(await store.get('idle'), null, 'exactly at the TTL it is still alive')
  time.now += 1
  store.sweep()
  t.same(expired.sort(), ['idle', 'swept'], 'idle sessions expire; a run or a watcher keeps one alive')
  t.not(await store.get('running'), null)
  t.not(await store.get('watched'), null)

  await store.getOrCreate('lazy', 'alice')
  time.now += 10_001
  t.equal(await store.get('lazy'), null, 'an expired session is gone on read too, before any sweep')
  t.ok(expired.includes('lazy'))
  t.equal((await store.getOrCreate('lazy', 'bob')).owner, 'bob', 'and its id is free again')

  await store.endRun('running', 'r1')
  time.now += 10_001
  t.equal(await store.activeRun('running'), null)
  t.ok(expired.includes('running'))

  const quiet = new MemorySessionStore({ ttlSeconds: 10, now: time.fn })
  t.teardown(() => quiet.close())
  await quiet.getOrCreate('s', 'alice')
  time.now += 10_001
  quiet.sweep()
  t.equal(await quiet.get('s'), null, 'expiry works without an onExpire listener')
})

t.test('MemorySessionStore: the sweeper runs on its own and stops on close', async (t) => {
  const time = clock()
  const store = new MemorySessionStore({ ttlSeconds: 0.02, now: time.fn })
  const expired: string[] = []
  store.onExpire = (id) => void expired.push(id)
  await store.getOrCreate('s', 'alice')
  time.now += 1000
  await new Promise((resolve) => setTimeout(resolve, 80))
  t.same(expired, ['s'])
  await store.close()
  await store.getOrCreate('after', 'alice')
  time.now += 1000
  await new Promise((resolve) => setTimeout(resolve, 60))
  t.same(expired, ['s'], 'closed: cleared and no longer sweeping')
})

t.test('MemoryEventLog: seq, serialization, read', async (t) => {
  const log = new MemoryEventLog({ maxEvents: 100 })
  t.teardown(() => log.close())
  t.same(await log.read('s1', 0), { events: [], gone: false, lastSeq: 0 }, 'an empty session holds everything after 0')
  t.same(await log.read('s1', 3), { events: [], gone: true, lastSeq: 0 }, 'but not after 3')
  t.equal(await log.lastSeq('s1'), 0)
  const first = await log.append('s1', token('s1', 'a'))
  t.same(first, { seq: 1, frame: '{"type":"token","session_id":"s1","seq":1,"content":"a","metadata":{"run_id":"r1"}}' })
  await log.append('s1', token('s1', 'b'))
  t.equal((await log.append('s2', token('s2', 'x'))).seq, 1, 'seq is per session')
  await log.append('s1', token('s1', 'c'))
  t.equal(await log.lastSeq('s1'), 3)
  t.same((await log.read('s1', 1)).events.map((e) => e.seq), [2, 3])
  t.same(await log.read('s1', 3), { events: [], gone: false, lastSeq: 3 }, 'caught up')
  t.equal((await log.read('s1', 4)).gone, true, 'ahead of the log: gone')
  await log.delete('s1')
  t.equal(await log.lastSeq('s1'), 0)
})

t.test('MemoryEventLog: retention and the gone logic', async (t) => {
  const log = new MemoryEventLog({ maxEvents: 4 })
  t.teardown(() => log.close())
  for (let i = 1; i <= 10; i++) await log.append('s', token('s', `t${i}`))
  t.equal((await log.read('s', 0)).gone, true)
  t.equal((await log.read('s', 5)).gone, true, 'seq 6 is no longer held')
  t.same((await log.read('s', 6)).events.map((e) => e.seq), [7, 8, 9, 10], 'the last maxEvents are')
  t.same((await log.read('s', 9)).events.map((e) => e.seq), [10])
  for (let i = 11; i <= 40; i++) await log.append('s', token('s', `t${i}`))
  t.same((await log.read('s', 36)).events.map((e) => e.seq), [37, 38, 39, 40], 'trimming keeps holding exactly the last maxEvents')
  t.equal((await log.read('s', 35)).gone, true)
})

t.test('MemoryEventLog.subscribe: backlog, then live, no gap, no duplicate', async (t) => {
  const log = new MemoryEventLog({ maxEvents: 100 })
  t.teardown(() => log.close())
  for (const text of ['a', 'b', 'c']) await log.append('s', token('s', text))
  const got: LoggedEvent[] = []
  const subscription = await log.subscribe('s', 1, (event) => got.push(event))
  t.same(got, [], 'nothing before the caller has reacted to the resolved promise')
  // Appended after subscribing but before the backlog is delivered: exactly once, in order.
  await log.append('s', token('s', 'd'))
  t.same(got, [])
  await nextTurn()
  t.same(got.map((e) => e.seq), [2, 3, 4])
  await log.append('s', token('s', 'e'))
  t.same(got.map((e) => e.seq), [2, 3, 4, 5], 'live after the backlog')
  await log.append('other', token('other', 'x'))
  t.equal(got.length, 4, 'other sessions do not leak in')
  subscription.close()
  await log.append('s', token('s', 'f'))
  t.equal(got.length, 4, 'closed: nothing more')

  // A subscriber that claims to be ahead of the log gets nothing it already has.
  const ahead: number[] = []
  const sub3 = await log.subscribe('s', 9, (event) => ahead.push(event.seq))
  await nextTurn()
  for (const text of ['g', 'h', 'i', 'j']) await log.append('s', token('s', text))
  t.same(ahead, [10], 'seq 7..9 skipped, 10 delivered')
  sub3.close()

  const fresh: number[] = []
  const sub2 = await log.subscribe('new-session', 0, (event) => fresh.push(event.seq))
  await log.append('new-session', token('new-session', 'x'))
  await nextTurn()
  await log.append('new-session', token('new-session', 'y'))
  t.same(fresh, [1, 2], 'subscribing to a session before its first event')
  const empty = await log.subscribe('empty', 0, () => {})
  t.same(await log.read('empty', 0), { events: [], gone: false, lastSeq: 0 }, 'a log with no events yet holds everything after 0')
  t.equal((await log.read('empty', 1)).gone, true)
  empty.close()
  sub2.close()
})

t.test('MemoryControlBus and createMemoryBackend', async (t) => {
  const bus = new MemoryControlBus()
  const seen: ControlMessage[] = []
  bus.onMessage((message) => void seen.push(message))
  const message: ControlMessage = { kind: 'orphaned', sessionId: 's', runId: 'r' }
  await bus.publish(message)
  t.same(seen, [message])
  await bus.close()
  await bus.publish(message)
  t.equal(seen.length, 1, 'closed: no handlers')

  const backend = createMemoryBackend({ ttlSeconds: 60, maxEvents: 10 })
  t.equal(backend.kind, 'memory')
  await backend.events.append('s', token('s', 'a'))
  ;(backend.sessions as MemorySessionStore).onExpire('s')
  t.equal(await backend.events.lastSeq('s'), 0, "an expired session's events go with it")
  await backend.sessions.close()
  await backend.events.close()
  await backend.control.close()
})
