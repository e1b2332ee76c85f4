import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import type { UnsequencedRunEvent } from '../../src/protocol/index.ts'
import { serializeEvent } from '../../src/protocol/serialize.ts'
import type { Backend, BeginRun, FinishRun, HistoryMessage, SessionRef } from '../../src/store/types.ts'
import { leasesKey, sessionKeys, userSessionsKey } from '../../src/store/redis/keys.ts'
import { closeBackend, redisBackend, useRedis } from '../helpers/redis.ts'
import { LuaScript } from '../../src/store/redis/scripts.ts'
import { randomUUID } from 'node:crypto'
import type { Redis } from 'ioredis'

const user = (content: string): HistoryMessage => ({ role: 'user', content })
const assistant = (content: string): HistoryMessage => ({ role: 'assistant', content })

const run = (runId: string, extra: Partial<BeginRun> = {}): BeginRun => ({
  runId,
  instanceId: 'instance-a',
  leaseMs: 10_000,
  input: { kind: 'message', message: user(`u-${runId}`) },
  maxMessages: 100,
  ...extra,
})

const complete = (sessionId: string, runId: string): UnsequencedRunEvent => ({
  type: 'complete',
  session_id: sessionId,
  content: 'done',
  metadata: { run_id: runId, finish_reason: 'interrupted' },
})
const token = (sessionId: string, runId: string, content = 'x'): UnsequencedRunEvent => ({ type: 'token', session_id: sessionId, content, metadata: { run_id: runId } })

const finish = (ref: SessionRef, runId: string, extra: Partial<FinishRun> = {}): FinishRun => ({
  runId,
  instanceId: 'instance-a',
  leaseMs: 10_000,
  event: complete(ref.id, runId),
  messages: [],
  maxMessages: 100,
  ...extra,
})

async function open(backend: Backend, owner: string, id: string, maxSessions = 10): Promise<SessionRef> {
  const result = await backend.sessions.open(owner, id, maxSessions)
  if (result.kind !== 'open') throw new Error(`${id}: ${result.kind}`)
  return { owner, id, gen: result.session.gen }
}

t.test('sessions: opened once per owner and id, read, touched, deleted', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r, { ttlSeconds: 120 })
  const { sessions } = backend
  t.equal(await sessions.get('alice', 's'), null, 'unknown')
  const created = await sessions.open('alice', 's', 10)
  t.match(created, { kind: 'open', session: { owner: 'alice', id: 's', messages: [], active: null } })
  const session = (created as { session: { gen: string; createdAt: number; updatedAt: number } }).session
  t.ok(session.createdAt > 0 && session.updatedAt === session.createdAt)
  t.same(await sessions.open('alice', 's', 10), created, 'opened again: the same generation')
  t.same(await sessions.get('alice', 's'), (created as { session: unknown }).session)
  t.equal(await sessions.get('mallory', 's'), null, 'ids are scoped per owner')
  const ref: SessionRef = { owner: 'alice', id: 's', gen: session.gen }
  const other = await open(backend, 'mallory', 's')
  t.not(other.gen, ref.gen)

  await sessions.beginRun(ref, run('r1'))
  await sessions.append(ref, 'r1', token('s', 'r1'))
  for (const key of await r.keys()) {
    if (key.endsWith('leases')) continue
    const ttl = await r.redis.pttl(key)
    t.ok(ttl > 0 && ttl <= 120_000, `${key} expires with the session TTL`)
  }
  const left = await sessions.expiresIn(ref)
  t.ok(left !== null && left > 110_000 && left <= 120_000, `expiresIn (${left} ms)`)
  await r.redis.pexpire(sessionKeys(r.prefix, ref).meta, 5000)
  t.ok((await sessions.expiresIn(ref))! <= 5000)
  t.equal(await sessions.touch(ref), true)
  t.ok((await sessions.expiresIn(ref))! > 110_000, 'touch pushes the expiry out by the TTL')
  t.equal(await sessions.touch({ ...ref, gen: 'old' }), false, 'another generation is not touched')
  t.equal(await sessions.expiresIn({ ...ref, gen: 'old' }), null)
  t.equal(await sessions.expiresIn({ ...ref, id: 'ghost' }), null)

  t.equal(await sessions.delete({ ...ref, gen: 'old' }), false, 'another generation is not deleted')
  t.equal(await sessions.delete(ref), true)
  t.equal(await sessions.delete(ref), false)
  t.equal(await sessions.get('alice', 's'), null)
  t.same(
    (await r.keys()).filter((key) => key.includes('{alice:') && !key.endsWith(':ev')),
    [],
    'every key of the session goes (its stream lingers for its tails, see event-log.test.ts)',
  )
  t.equal(await r.redis.zscore(userSessionsKey(r.prefix, 'alice'), 's'), null, 'and its place in the owner’s count')
  const again = await open(backend, 'alice', 's')
  t.not(again.gen, ref.gen, 'created again: a new generation')
  t.ok(await sessions.get('mallory', 's'), "the other owner's session is untouched")
  await sessions.ping()
})

t.test('open: at most maxSessions per owner; deleted ones do not count', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  const a = await open(backend, 'alice', 'a', 2)
  await open(backend, 'alice', 'b', 2)
  t.same(await backend.sessions.open('alice', 'c', 2), { kind: 'too_many' })
  t.equal((await backend.sessions.open('alice', 'a', 2)).kind, 'open', 'an existing session opens at the cap')
  t.equal((await backend.sessions.open('bob', 'c', 2)).kind, 'open', 'the cap is per owner')
  await backend.sessions.delete(a)
  t.equal((await backend.sessions.open('alice', 'c', 2)).kind, 'open', 'a deleted session frees its place')
  t.same(await backend.sessions.open('alice', 'd', 2), { kind: 'too_many' })
  // A session whose keys expired stays listed (the list is in another slot) until the cap is hit.
  await r.redis.del(sessionKeys(r.prefix, { owner: 'alice', id: 'b', gen: '' }).meta)
  t.equal((await backend.sessions.open('alice', 'd', 2)).kind, 'open', 'an expired one frees its place too')
  t.same((await r.redis.zrange(userSessionsKey(r.prefix, 'alice'), '0', '-1')).sort(), ['c', 'd'], 'and is pruned from the list')
})

t.test('beginRun: started with the history, busy, duplicate request ids (the last 256), gone', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  const { sessions } = backend
  t.same(await sessions.beginRun({ owner: 'alice', id: 'nope', gen: 'x' }, run('r0')), { kind: 'gone' })
  const ref = await open(backend, 'alice', 's')
  t.same(await sessions.beginRun({ ...ref, gen: 'other' }, run('r0')), { kind: 'gone' }, 'another generation: gone')
  t.equal(await sessions.activeRun(ref), null)
  t.same(await sessions.beginRun(ref, run('r1', { requestId: 'q1' })), { kind: 'started', runId: 'r1', requestId: 'q1', startAfterSeq: 0, history: [], userMessage: user('u-r1') })
  const active = await sessions.activeRun(ref)
  t.match(active, { runId: 'r1', requestId: 'q1', instanceId: 'instance-a', startAfterSeq: 0 })
  t.ok(active!.leaseExpiresAt > Date.now() + 5000, 'leased for leaseMs')
  t.equal(await sessions.activeRun({ ...ref, gen: 'other' }), null, 'not for another generation')
  t.same((await sessions.get('alice', 's'))?.active, active, 'get shows the run')
  t.same((await sessions.get('alice', 's'))?.messages, [user('u-r1')], 'the user message is stored with the start')
  t.same(await sessions.beginRun(ref, run('r2', { requestId: 'q1' })), { kind: 'duplicate', runId: 'r1', startAfterSeq: 0 }, 'a seen key wins over busy')
  t.same(await sessions.beginRun(ref, run('r2')), { kind: 'busy', active })

  await sessions.append(ref, 'r1', token('s', 'r1'))
  t.ok(await sessions.finishRun(ref, finish(ref, 'r1', { messages: [assistant('a-r1')] })))
  t.same(await sessions.beginRun(ref, run('r2', { requestId: 'q1' })), { kind: 'duplicate', runId: 'r1', startAfterSeq: 0 }, 'ended runs stay known')
  t.same(await sessions.beginRun(ref, run('r2', { requestId: 'q2', reasoning: true })), { kind: 'started', runId: 'r2', requestId: 'q2', startAfterSeq: 2, history: [user('u-r1'), assistant('a-r1')], userMessage: user('u-r2'), reasoning: true })
  t.equal(await sessions.releaseRun(ref, 'r2'), true)

  for (let i = 3; i <= 257; i++) {
    t.equal((await sessions.beginRun(ref, run(`r${i}`, { requestId: `q${i}`, maxMessages: 3 }))).kind, 'started')
    await sessions.releaseRun(ref, `r${i}`)
  }
  t.equal((await sessions.beginRun(ref, run('again', { requestId: 'q1', maxMessages: 3 }))).kind, 'started', 'the oldest request id is forgotten')
  await sessions.releaseRun(ref, 'again')
  t.equal((await sessions.beginRun(ref, run('dup', { requestId: 'q3' }))).kind, 'duplicate', 'newer ones are kept')
  t.equal(await r.redis.llen(sessionKeys(r.prefix, ref).requests), 256)
  t.same((await sessions.get('alice', 's'))?.messages, [user('u-r256'), user('u-r257'), user('u-again')], 'history trimmed to maxMessages')
})

t.test('beginRun is atomic across instances: one of many concurrent starts wins', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backends = await Promise.all([1, 2, 3].map(() => redisBackend(t, r)))
  const ref = await open(backends[0]!, 'alice', 's')
  const results = await Promise.all(
    Array.from({ length: 12 }, (_, i) => backends[i % 3]!.sessions.beginRun(ref, run(`r${i}`, { instanceId: `i${i % 3}` }))),
  )
  t.equal(results.filter((result) => result.kind === 'started').length, 1)
  t.equal(results.filter((result) => result.kind === 'busy').length, 11)
})

t.test('writes of a run are fenced: refused once another finish, release or delete ended it', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const a = await redisBackend(t, r)
  const b = await redisBackend(t, r)
  const ref = await open(a, 'alice', 's')

  await a.sessions.beginRun(ref, run('r1'))
  t.equal((await a.sessions.append(ref, 'r1', token('s', 'r1')))?.seq, 1)
  t.equal(await a.sessions.append(ref, 'other', token('s', 'other')), null, 'only the active run appends')
  t.equal(await a.sessions.append({ ...ref, gen: 'old' }, 'r1', token('s', 'r1')), null, 'into its own generation only')
  t.ok(await b.sessions.finishRun(ref, finish(ref, 'r1')), 'another instance ends it')
  t.equal(await a.sessions.append(ref, 'r1', token('s', 'r1', 'late')), null, 'after finish: append refused')
  t.equal(await a.sessions.renewLease(ref, 'r1', 10_000), false, 'renewal refused')
  t.equal(await a.sessions.finishRun(ref, finish(ref, 'r1')), null, 'a second finish refused')
  t.equal(await a.sessions.releaseRun(ref, 'r1'), false)

  await a.sessions.beginRun(ref, run('r2'))
  t.equal(await b.sessions.releaseRun(ref, 'r2'), true)
  t.equal(await a.sessions.append(ref, 'r2', token('s', 'r2')), null, 'after release: append refused')
  t.equal(await a.sessions.finishRun(ref, finish(ref, 'r2')), null)

  await a.sessions.beginRun(ref, run('r3'))
  t.same((await a.events.read(ref, 0)).events.map((event) => event.seq), [1, 2], 'the log holds only what was accepted')
  t.equal(await b.sessions.delete(ref), true)
  t.equal(await a.sessions.append(ref, 'r3', token('s', 'r3')), null, 'after delete: append refused')
  t.equal(await a.sessions.renewLease(ref, 'r3', 10_000), false)
  t.equal(await a.sessions.finishRun(ref, finish(ref, 'r3')), null)
  t.equal(await a.sessions.releaseRun(ref, 'r3'), false)
  t.same(await a.events.read(ref, 0), { events: [], gone: false, lastSeq: 0 }, 'a deleted generation holds nothing')

  const next = await open(a, 'alice', 's')
  t.not(next.gen, ref.gen)
  t.same(await a.sessions.beginRun(next, run('r3')), { kind: 'started', runId: 'r3', startAfterSeq: 0, history: [], userMessage: user('u-r3') }, 'nothing of the old generation')
  t.equal(await a.sessions.append(ref, 'r3', token('s', 'r3')), null, 'the old generation’s run cannot write into the new one')
  t.same(await a.events.read(next, 0), { events: [], gone: false, lastSeq: 0 }, 'the new generation does not see the old events')
  t.equal((await a.sessions.append(next, 'r3', token('s', 'r3')))?.seq, 1, 'its seqs start again')
})

t.test('finishRun logs the final event, stores the messages and ends the run in one step, under its conditions', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  const { sessions, events } = backend
  const ref = await open(backend, 'alice', 's')
  await sessions.beginRun(ref, run('r1', { leaseMs: 300 }))
  await sessions.append(ref, 'r1', { type: 'status', session_id: 's', content: 'thinking', metadata: { run_id: 'r1' } })

  t.equal(await sessions.finishRun(ref, finish(ref, 'other')), null, 'not the active run')
  t.equal(await sessions.finishRun(ref, finish(ref, 'r1', { ifLeaseExpired: true })), null, 'lease still alive')
  await sleep(350)
  t.equal(await sessions.finishRun(ref, finish(ref, 'r1', { ifLeaseExpired: true, ifLastSeq: 0 })), null, 'the log moved on')
  t.equal((await events.read(ref, 0)).lastSeq, 1, 'nothing appended by refusals')
  t.same((await sessions.get('alice', 's'))?.messages, [user('u-r1')], 'nor stored')
  const logged = await sessions.finishRun(ref, finish(ref, 'r1', { ifLeaseExpired: true, ifLastSeq: 1, messages: [assistant('one'), assistant('two')], maxMessages: 2 }))
  t.same(logged, { event: { seq: 2, frame: serializeEvent(complete('s', 'r1'), 2) }, next: null })
  t.equal(await sessions.activeRun(ref), null, 'and the session is free')
  t.same((await sessions.get('alice', 's'))?.messages, [assistant('one'), assistant('two')], 'messages stored, trimmed to maxMessages')
  t.equal(await sessions.finishRun(ref, finish(ref, 'r1', { ifLeaseExpired: true })), null, 'only once')
  t.same((await events.read(ref, 1)).events, [logged!.event])

  await sessions.beginRun(ref, run('r2'))
  t.same(await sessions.finishRun(ref, finish(ref, 'r2')), { event: { seq: 3, frame: serializeEvent(complete('s', 'r2'), 3) }, next: null }, 'no conditions, no messages')
  t.same((await sessions.get('alice', 's'))?.messages, [assistant('one'), assistant('two'), user('u-r2')])
})

t.test('leases: renewed only by the active run; the lease index follows the runs', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  const { sessions } = backend
  const leases = leasesKey(r.prefix)
  const member = (ref: SessionRef, runId: string) => JSON.stringify([ref.owner, ref.id, ref.gen, runId])
  const ref = await open(backend, 'alice', 's')
  await sessions.beginRun(ref, run('r1', { leaseMs: 1000 }))
  const before = (await sessions.activeRun(ref))!.leaseExpiresAt
  t.ok(Math.abs(Number(await r.redis.zscore(leases, member(ref, 'r1'))) - before) < 1000, 'begun: indexed by its lease expiry')
  t.equal(await sessions.renewLease(ref, 'r1', 60_000), true)
  const renewed = (await sessions.activeRun(ref))!.leaseExpiresAt
  t.ok(renewed >= before + 50_000)
  t.equal(Number(await r.redis.zscore(leases, member(ref, 'r1'))), renewed, 'renewed: the index moves with it')
  t.equal(await sessions.renewLease(ref, 'r2', 60_000), false)
  t.equal(await sessions.renewLease({ ...ref, id: 'ghost' }, 'r1', 60_000), false)
  t.equal(await r.redis.zcard(leases), 1, 'refused renewals add nothing')
  t.same(await sessions.expiredLeases(10), [], 'nothing expired')

  await sessions.finishRun(ref, finish(ref, 'r1'))
  t.equal(await r.redis.zcard(leases), 0, 'finished: removed from the index')
  await sessions.beginRun(ref, run('r2'))
  await sessions.releaseRun(ref, 'r2')
  t.equal(await r.redis.zcard(leases), 0, 'released: removed')
})

t.test('expiredLeases: the runs whose lease passed, at most limit; stale entries are cleaned up', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  const { sessions } = backend
  const leases = leasesKey(r.prefix)
  const refs = await Promise.all(['a', 'b', 'c', 'alive', 'deleted'].map((id) => open(backend, 'alice', id)))
  const [a, b, c, alive, deleted] = refs as [SessionRef, SessionRef, SessionRef, SessionRef, SessionRef]
  for (const ref of [a, b, c, deleted]) await sessions.beginRun(ref, run(`run-${ref.id}`, { leaseMs: 30 }))
  await sessions.beginRun(alive, run('run-alive', { leaseMs: 60_000 }))
  await sessions.delete(deleted)
  // A run that ended without its entry removed (its instance died between the two steps).
  await r.redis.hdel(sessionKeys(r.prefix, c).meta, 'runId', 'run', 'runStart', 'leaseExpiresAt')
  await sessions.beginRun(c, run('run-c2'))
  await sleep(60)

  const firstTwo = await sessions.expiredLeases(2)
  t.ok(firstTwo.length <= 2, 'at most limit')
  const all = await sessions.expiredLeases(100)
  t.same(
    all.map((lease) => lease.fence).sort(),
    ['run-a', 'run-b'],
    'expired and still active; a live lease, a deleted session and an ended run are not listed',
  )
  t.same(all.find((lease) => lease.fence === 'run-a')?.ref, a)
  const left = (await r.redis.zrange(leases, '0', '-1')).map((entry) => (JSON.parse(entry) as string[])[3]).sort()
  t.same(left, ['run-a', 'run-alive', 'run-b', 'run-c2'], 'the stale entries were removed from the index')
})

t.test('watchers: counted across instances; a dead instance’s age out, a live one’s are refreshed', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const alive = await redisBackend(t, r, { watcherTtlMs: 300 })
  const doomed = await redisBackend(t, r, { watcherTtlMs: 300 })
  const ghost = { owner: 'alice', id: 'ghost', gen: 'x' }
  await alive.sessions.addWatcher(ghost, 'w0')
  t.equal(await alive.sessions.watcherCount(ghost), 0, 'no session, no watchers')
  t.equal(await alive.sessions.removeWatcher(ghost, 'w0'), 0)
  const ref = await open(alive, 'alice', 's')
  await alive.sessions.addWatcher({ ...ref, gen: 'old' }, 'w9')
  t.equal(await alive.sessions.watcherCount(ref), 0, 'not for another generation')
  await alive.sessions.addWatcher(ref, 'w1')
  await alive.sessions.addWatcher(ref, 'w2')
  await doomed.sessions.addWatcher(ref, 'w3')
  t.equal(await doomed.sessions.watcherCount(ref), 3)
  t.equal(await alive.sessions.removeWatcher(ref, 'w2'), 2)
  // The doomed instance stops refreshing (as a crashed one would); the alive one keeps going.
  await closeBackend(doomed)
  for (let i = 0; i < 4; i++) {
    await sleep(175)
    await alive.sessions.refreshWatchers([{ ref, ids: ['w1'] }])
  }
  await alive.sessions.refreshWatchers([])
  t.equal(await alive.sessions.watcherCount(ref), 1, 'w3 aged out, w1 refreshed')
  t.equal(await alive.sessions.removeWatcher(ref, 'w1'), 0)
})

t.test('close is idempotent, and closes its connection once the log and bus have too', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  await backend.sessions.close()
  await backend.sessions.close()
  await backend.sessions.ping()
  await backend.close()
  await backend.close()
  await t.rejects(backend.sessions.ping(), 'closed')
})

t.test('LuaScript: EVALSHA, EVAL when Redis does not know the script yet; other errors are thrown', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  // A script of its own (a fresh sha): Redis has never seen it.
  const echo = new LuaScript(`return {KEYS[1], ARGV[1], '${randomUUID()}'}`)
  const calls: string[] = []
  const spied = new Proxy(r.redis, {
    get(target, property) {
      const value = Reflect.get(target, property, target) as unknown
      if (property === 'evalsha' || property === 'eval') calls.push(property)
      return typeof value === 'function' ? value.bind(target) : value
    },
  })
  t.match(await echo.run(spied, ['k'], ['a']), ['k', 'a'])
  t.same(calls, ['evalsha', 'eval'], 'unknown: NOSCRIPT, then EVAL (which loads it)')
  t.match(await echo.run(spied, ['k'], [2]), ['k', '2'])
  t.same(calls, ['evalsha', 'eval', 'evalsha'], 'known from then on')

  const failing = new LuaScript(`return redis.error_reply('boom ${randomUUID()}')`)
  await t.rejects(failing.run(r.redis, [], []), /boom/, 'an error of the script, on EVAL')
  await t.rejects(failing.run(r.redis, [], []), /boom/, 'and on EVALSHA: not taken for NOSCRIPT')
  const odd = { evalsha: async () => Promise.reject('not an Error') } as unknown as Redis
  t.equal(await echo.run(odd, [], []).catch((err: unknown) => err), 'not an Error', 'whatever else is thrown passes through')
})
