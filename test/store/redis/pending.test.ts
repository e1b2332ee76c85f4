import t from 'tap'
import { redisBackend, useRedis } from '../../helpers/redis.ts'

t.test('waiting calls belong to one generation of a session', async (t) => {
  const redis = await useRedis(t)
  if (!redis) return
  const backend = await redisBackend(t, redis)
  const opened = await backend.sessions.open('alice', 's', 10)
  if (opened.kind !== 'open') throw new Error('not opened')
  const ref = { owner: 'alice', id: 's', gen: opened.session.gen }
  const begun = await backend.sessions.beginRun(ref, { runId: 'r', instanceId: 'i', leaseMs: 10_000, input: { kind: 'message', message: { role: 'user', content: 'hi' } }, maxMessages: 10 })
  t.equal(begun.kind, 'started')
  const call = { call_id: 'c', tool: 't', arguments: {}, kind: 'approval' as const, expires_at: new Date().toISOString() }
  t.equal(await backend.sessions.addPending(ref, 'r', call), true)
  t.equal(await backend.sessions.addPending(ref, 'other-run', call), false, 'fenced by the run')
  t.same(await backend.sessions.listPending(ref), [call])
  t.same(await backend.sessions.listPending({ ...ref, gen: 'older' }), [], 'another generation sees none')
  t.equal(await backend.sessions.claimPending({ ...ref, gen: 'older' }, 'c', 'approval'), null)
  t.equal(await backend.sessions.claimPending(ref, 'c', 'client_tool'), null, 'the other kind of answer takes nothing')
  t.match(await backend.sessions.claimPending(ref, 'c', 'approval'), { ...call, runId: 'r' })
  t.equal(await backend.sessions.claimPending(ref, 'c', 'approval'), null, 'once')
})
