// The Redis side of the session list (GET /v1/sessions) and of queued runs: the user's list is
// its own key (another hash slot), so entries of sessions that expired linger until they are
// pruned at the cap or skipped by a listing; a queued run made active gets its lease indexed.
import t from 'tap'
import { listSessions, pruneExpired } from '../../../src/store/redis/session-list.ts'
import { leasesKey, metaKey, sessionKeys, userSessionsKey } from '../../../src/store/redis/keys.ts'
import type { Backend, BeginRun, FinishRun, SessionRef } from '../../../src/store/types.ts'
import { redisBackend, useRedis, type TestRedis } from '../../helpers/redis.ts'

const begin = (runId: string, extra: Partial<BeginRun> = {}): BeginRun => ({
  runId,
  instanceId: 'i1',
  leaseMs: 60_000,
  input: { kind: 'message', message: { role: 'user', content: `u-${runId}` } },
  maxMessages: 100,
  ...extra,
})
const finish = (ref: SessionRef, runId: string, extra: Partial<FinishRun> = {}): FinishRun => ({
  runId,
  instanceId: 'i2',
  leaseMs: 30_000,
  event: { type: 'complete', session_id: ref.id, content: '', metadata: { run_id: runId, finish_reason: 'stop' } },
  messages: [],
  maxMessages: 100,
  ...extra,
})

async function open(backend: Backend, owner: string, id: string, maxSessions = 100): Promise<SessionRef> {
  const opened = await backend.sessions.open(owner, id, maxSessions)
  if (opened.kind !== 'open') throw new Error(`${id}: too many`)
  return { owner, id, gen: opened.session.gen }
}

/** What a session's expiry leaves behind: its list entry, without its keys. */
const expire = (r: TestRedis, owner: string, id: string) => r.redis.del(metaKey(r.prefix, owner, id))
const listed = async (r: TestRedis, owner: string) => (await r.redis.zrange(userSessionsKey(r.prefix, owner), '0', '-1')).sort()

t.test('pruneExpired forgets the listed sessions whose keys expired; open prunes at the MAX_SESSIONS cap', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  t.equal(await pruneExpired(r.redis, r.prefix, 'nobody'), 0, 'an empty list')
  for (const id of ['a', 'b', 'c']) await open(backend, 'alice', id)
  t.equal(await pruneExpired(r.redis, r.prefix, 'alice'), 0, 'all alive: nothing pruned')
  await expire(r, 'alice', 'b')
  t.same(await listed(r, 'alice'), ['a', 'b', 'c'], 'an expired session stays listed by itself')
  t.equal(await pruneExpired(r.redis, r.prefix, 'alice'), 1)
  t.same(await listed(r, 'alice'), ['a', 'c'])

  t.same(await backend.sessions.open('alice', 'd', 2), { kind: 'too_many' }, 'at the cap, all alive: too many')
  await expire(r, 'alice', 'c')
  t.equal((await backend.sessions.open('alice', 'd', 2)).kind, 'open', 'at the cap, one expired: pruned, then admitted')
  t.same(await listed(r, 'alice'), ['a', 'd'])
})

t.test('listing skips (and forgets) expired entries, reading more batches to fill the page', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  const list = userSessionsKey(r.prefix, 'alice')
  for (const [i, id] of ['s1', 's2', 's3', 's4', 's5', 's6'].entries()) {
    await open(backend, 'alice', id)
    await r.redis.zadd(list, 1000 + i, id)
  }
  // The two newest expired: the first batch (limit + 1 = 3) holds one live session only.
  await expire(r, 'alice', 's6')
  await expire(r, 'alice', 's5')
  const first = await backend.sessions.list('alice', 2, undefined)
  t.same(first.sessions.map((session) => session.id), ['s4', 's3'])
  t.type(first.nextCursor, 'string', 'more follow')
  t.same(await listed(r, 'alice'), ['s1', 's2', 's3', 's4'], 'the expired entries were removed')
  await expire(r, 'alice', 's2')
  const rest = await backend.sessions.list('alice', 2, first.nextCursor)
  t.same(rest.sessions.map((session) => session.id), ['s1'], 'the cursor page skips s2 too')
  t.equal(rest.nextCursor, undefined, 'the last page')
  t.same(await listed(r, 'alice'), ['s1', 's3', 's4'])
  const whole = await listSessions(r.redis, r.prefix, 'alice', 10, undefined)
  t.equal(whole.nextCursor, undefined, 'no cursor at the end')
  const s4 = (await backend.sessions.get('alice', 's4'))!
  t.same(whole.sessions[0], { id: 's4', title: '', createdAt: s4.createdAt, updatedAt: s4.updatedAt, activeRunId: null }, 'each with its summary')
  t.same(whole.sessions.map((session) => session.id), ['s4', 's3', 's1'])
})

t.test('listing: equal scores are ordered by id (descending), so the cursor is exact', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  const list = userSessionsKey(r.prefix, 'bob')
  for (const id of ['b', 'd', 'a', 'c', 'e']) await open(backend, 'bob', id)
  await r.redis.zadd(list, 5, 'b', 5, 'd', 5, 'a', 5, 'c', 9, 'e')
  const seen: string[] = []
  let cursor: string | undefined
  for (let i = 0; i < 5; i++) {
    const page = await backend.sessions.list('bob', 2, cursor)
    seen.push(...page.sessions.map((session) => session.id))
    cursor = page.nextCursor
    if (!cursor) break
  }
  t.same(seen, ['e', 'd', 'c', 'b', 'a'])
  t.same(await backend.sessions.list('bob', 0, undefined), { sessions: [] }, 'limit 0')
})

t.test('a listing that cannot read a session fails (it does not guess)', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  await open(backend, 'carol', 'ok')
  await r.redis.zadd(userSessionsKey(r.prefix, 'carol'), Date.now(), 'broken')
  await r.redis.set(metaKey(r.prefix, 'carol', 'broken'), 'not a hash')
  await t.rejects(backend.sessions.list('carol', 10, undefined), /WRONGTYPE/)
  await t.rejects(pruneExpired(r.redis, r.prefix, 'carol'), /WRONGTYPE/)
})

t.test('finishRun makes the queued run active: its lease indexed, the old one removed, the list updated', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  const { sessions } = backend
  const leases = leasesKey(r.prefix)
  const member = (ref: SessionRef, runId: string) => JSON.stringify([ref.owner, ref.id, ref.gen, runId])
  const ref = await open(backend, 'alice', 's')
  await sessions.beginRun(ref, begin('r1', { requestId: 'q1' }))
  t.same(await sessions.beginRun(ref, begin('r2', { requestId: 'q2', onBusy: 'enqueue', maxQueued: 1 })), { kind: 'queued', runId: 'r2', position: 1, startAfterSeq: 0 }, 'no queued event asked for')
  t.equal((await backend.events.read(ref, 0)).lastSeq, 0, 'none logged')
  await r.redis.zadd(userSessionsKey(r.prefix, 'alice'), 1, 's')
  const before = Date.now()
  const finished = await sessions.finishRun(ref, finish(ref, 'r1'))
  t.same(finished?.next, { runId: 'r2', requestId: 'q2', startAfterSeq: 1, history: [{ role: 'user', content: 'u-r1' }], userMessage: { role: 'user', content: 'u-r2' } })
  t.equal(await r.redis.zscore(leases, member(ref, 'r1')), null, 'the finished run’s lease is gone from the index')
  const indexed = Number(await r.redis.zscore(leases, member(ref, 'r2')))
  t.ok(indexed >= before + 30_000 && indexed <= Date.now() + 30_000, 'the next one’s is there, for the finishing instance’s leaseMs')
  t.match(await sessions.activeRun(ref), { runId: 'r2', requestId: 'q2', instanceId: 'i2', startAfterSeq: 1 })
  t.ok(Number(await r.redis.zscore(userSessionsKey(r.prefix, 'alice'), 's')) >= before, 'listed as updated')
  t.same(await r.redis.lrange(sessionKeys(r.prefix, ref).requests, 0, -1), ['q1', 'q2'], 'its request id is listed once, though remembered again as it started')
  t.same(await sessions.beginRun(ref, begin('r3', { requestId: 'q2' })), { kind: 'duplicate', runId: 'r2', startAfterSeq: 1 })
  t.same((await sessions.finishRun(ref, finish(ref, 'r2')))?.next, null)
  t.equal(await r.redis.zcard(leases), 0)
})
