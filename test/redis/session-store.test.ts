import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import type { UnsequencedRunEvent } from '../../src/protocol/index.ts'
import { serializeEvent, type BeginRun, type HistoryMessage } from '../../src/store/types.ts'
import type { RedisSessionStore } from '../../src/store/redis/index.ts'
import { closeBackend, redisBackend, useRedis } from '../helpers/redis.ts'

const run = (runId: string, extra: Partial<BeginRun> = {}): BeginRun => ({
  runId,
  instanceId: 'instance-a',
  startAfterSeq: 0,
  leaseMs: 10_000,
  ...extra,
})

const complete = (sessionId: string, runId: string): UnsequencedRunEvent => ({
  type: 'complete',
  session_id: sessionId,
  content: 'done',
  metadata: { run_id: runId, finish_reason: 'interrupted' },
})

t.test('sessions: created once for their owner, history appended and trimmed, deleted', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const { sessions } = await redisBackend(t, r, { ttlSeconds: 120 })
  t.equal(await sessions.get('s'), null, 'unknown')
  const created = await sessions.getOrCreate('s', 'alice')
  t.match(created, { id: 's', owner: 'alice', messages: [] })
  t.ok(created.createdAt > 0 && created.updatedAt === created.createdAt)
  t.equal((await sessions.getOrCreate('s', 'mallory')).owner, 'alice', 'the first owner keeps it')

  const messages: HistoryMessage[] = [
    { role: 'user', content: 'one' },
    { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'calc', arguments: '{}' } }] },
    { role: 'tool', content: '2', tool_call_id: 'c1' },
  ]
  await sessions.appendMessages('s', messages, 10)
  await sessions.appendMessages('s', [{ role: 'assistant', content: 'four' }], 3)
  await sessions.appendMessages('s', [], 3)
  const stored = await sessions.get('s')
  t.same(stored?.messages, [...messages.slice(1), { role: 'assistant', content: 'four' }], 'oldest dropped first')
  t.ok(stored!.updatedAt >= created.updatedAt)
  for (const key of await r.keys()) {
    const ttl = await r.redis.pttl(key)
    t.ok(ttl > 0 && ttl <= 120_000, `${key} expires with the session TTL`)
  }

  await sessions.appendMessages('ghost', messages, 10)
  t.equal(await sessions.get('ghost'), null, 'appending to an unknown session creates nothing')
  t.equal(await sessions.delete('s'), true)
  t.equal(await sessions.delete('s'), false)
  t.same(await r.keys(), [])
  await sessions.ping()
})

t.test('beginRun: started, busy, duplicate request ids (the last 256), and unknown sessions', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const { sessions } = await redisBackend(t, r)
  await t.rejects(sessions.beginRun('nope', run('r0')), /does not exist/)
  await sessions.getOrCreate('s', 'alice')
  t.equal(await sessions.activeRun('s'), null)
  t.same(await sessions.beginRun('s', run('r1', { requestId: 'q1', startAfterSeq: 4 })), { kind: 'started' })
  const active = await sessions.activeRun('s')
  t.match(active, { runId: 'r1', requestId: 'q1', instanceId: 'instance-a', startAfterSeq: 4 })
  t.ok(active!.leaseExpiresAt > Date.now() + 5000, 'leased for leaseMs')
  t.same(await sessions.beginRun('s', run('r2', { requestId: 'q1' })), { kind: 'duplicate', runId: 'r1', startAfterSeq: 4 })
  t.same(await sessions.beginRun('s', run('r2')), { kind: 'busy', active })

  t.equal(await sessions.endRun('s', 'other'), false, 'only the active run ends')
  t.equal(await sessions.endRun('s', 'r1'), true)
  t.equal(await sessions.endRun('s', 'r1'), false)
  t.equal(await sessions.activeRun('s'), null)
  t.same(await sessions.beginRun('s', run('r2', { requestId: 'q1' })), { kind: 'duplicate', runId: 'r1', startAfterSeq: 4 }, 'ended runs stay known')

  for (let i = 2; i <= 257; i++) {
    t.equal((await sessions.beginRun('s', run(`r${i}`, { requestId: `q${i}` }))).kind, 'started')
    await sessions.endRun('s', `r${i}`)
  }
  t.equal((await sessions.beginRun('s', run('again', { requestId: 'q1' }))).kind, 'started', 'the oldest request id is forgotten')
  t.equal((await sessions.beginRun('s', run('dup', { requestId: 'q3' }))).kind, 'duplicate', 'newer ones are kept')
  t.equal(await r.redis.llen(`${r.prefix}session:{s}:requests`), 256)
})

t.test('beginRun is atomic across instances: one of many concurrent starts wins', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backends = await Promise.all([1, 2, 3].map(() => redisBackend(t, r)))
  await backends[0]!.sessions.getOrCreate('s', 'alice')
  const results = await Promise.all(
    Array.from({ length: 12 }, (_, i) => backends[i % 3]!.sessions.beginRun('s', run(`r${i}`, { instanceId: `i${i % 3}` }))),
  )
  t.equal(results.filter((result) => result.kind === 'started').length, 1)
  t.equal(results.filter((result) => result.kind === 'busy').length, 11)
  const sameKey = await Promise.all(backends.map((b, i) => b.sessions.beginRun('t', run(`x${i}`, { requestId: 'same' })).catch(() => null)))
  t.same(sameKey, [null, null, null], 'no session, no run')
})

t.test('leases: renewed only by the active run', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const { sessions } = await redisBackend(t, r)
  await sessions.getOrCreate('s', 'alice')
  await sessions.beginRun('s', run('r1', { leaseMs: 1000 }))
  const before = (await sessions.activeRun('s'))!.leaseExpiresAt
  t.equal(await sessions.renewLease('s', 'r1', 60_000), true)
  t.ok((await sessions.activeRun('s'))!.leaseExpiresAt >= before + 50_000)
  t.equal(await sessions.renewLease('s', 'r2', 60_000), false)
  t.equal(await sessions.renewLease('ghost', 'r1', 60_000), false)
})

t.test('finishRun logs the final event and ends the run in one step, under its conditions', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  const { sessions, events } = backend
  const finishRun = backend.finishRun!
  await sessions.getOrCreate('s', 'alice')
  await sessions.beginRun('s', run('r1', { leaseMs: 300 }))
  await events.append('s', { type: 'status', session_id: 's', content: 'thinking', metadata: { run_id: 'r1' } })

  t.equal(await finishRun('s', { runId: 'other', event: complete('s', 'other') }), null, 'not the active run')
  t.equal(await finishRun('s', { runId: 'r1', event: complete('s', 'r1'), ifLeaseExpired: true }), null, 'lease still alive')
  await sleep(350)
  t.equal(await finishRun('s', { runId: 'r1', event: complete('s', 'r1'), ifLeaseExpired: true, ifLastSeq: 0 }), null, 'the log moved on')
  t.same(await events.read('s', 0).then((held) => held.lastSeq), 1, 'nothing appended by refusals')
  const logged = await finishRun('s', { runId: 'r1', event: complete('s', 'r1'), ifLeaseExpired: true, ifLastSeq: 1 })
  t.same(logged, { seq: 2, frame: serializeEvent(complete('s', 'r1'), 2) })
  t.equal(await sessions.activeRun('s'), null, 'and the session is free')
  t.equal(await finishRun('s', { runId: 'r1', event: complete('s', 'r1'), ifLeaseExpired: true }), null, 'only once')
  t.same((await events.read('s', 1)).events, [logged])

  await sessions.beginRun('s', run('r2'))
  t.same(await finishRun('s', { runId: 'r2', event: complete('s', 'r2') }), { seq: 3, frame: serializeEvent(complete('s', 'r2'), 3) })
})

t.test('watchers: counted across instances; a dead instance’s age out, a live one’s are refreshed', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const alive = await redisBackend(t, r, { watcherTtlMs: 300 })
  const doomed = await redisBackend(t, r, { watcherTtlMs: 300 })
  await alive.sessions.addWatcher('ghost', 'w0')
  t.equal(await alive.sessions.watcherCount('ghost'), 0, 'no session, no watchers')
  t.equal(await alive.sessions.removeWatcher('ghost', 'w0'), 0)
  await alive.sessions.getOrCreate('s', 'alice')
  await alive.sessions.addWatcher('s', 'w1')
  await alive.sessions.addWatcher('s', 'w2')
  await doomed.sessions.addWatcher('s', 'w3')
  t.equal(await doomed.sessions.watcherCount('s'), 3)
  t.equal(await alive.sessions.removeWatcher('s', 'w2'), 2)
  // The doomed instance stops refreshing (as a crashed one would); the alive one keeps going.
  await closeBackend(doomed)
  await sleep(700)
  t.equal(await alive.sessions.watcherCount('s'), 1, 'w3 aged out, w1 refreshed')
  t.equal(await alive.sessions.removeWatcher('s', 'w1'), 0)
})

t.test('a failed watcher refresh is logged, not thrown', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const warnings: unknown[] = []
  const log = { info() {}, debug() {}, error() {}, warn: (obj: unknown) => void warnings.push(obj) }
  const backend = await redisBackend(t, r, { logger: log, watcherTtlMs: 60_000 })
  await backend.sessions.getOrCreate('s', 'alice')
  await backend.sessions.addWatcher('s', 'w1')
  await r.redis.set(`${r.prefix}session:{s}:watchers`, 'not a zset')
  await (backend.sessions as RedisSessionStore).refreshWatchers()
  t.equal(warnings.length, 1)
})
