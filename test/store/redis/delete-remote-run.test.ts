/**
 * Defect: `DELETE /v1/sessions/{id}` through instance B of a session whose run streams on
 * instance A published the cancel and deleted the session's keys at once, without waiting
 * for the run's end: A's cancelled run then logged its `status:cancelled` and `complete`
 * into a fresh stream nobody read (or not at all), and A's watcher heard neither of them nor
 * of the delete. The contract (protocol.md §4): the delete aborts the run wherever it runs,
 * forgets the session once the run's `complete` is logged, and every watcher gets `error`
 * `not_found` and nothing after.
 */
import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { signToken } from '../../helpers/app.ts'
import { bearer, connect } from '../../helpers/ws-client.ts'
import { deleteSession, pair } from './pair.ts'

t.test('DELETE of a run on another instance deletes the keys at once, no complete ever logged', async (t) => {
  const p = await pair(t)
  if (!p) return
  p.upstream.script(() => ({ steps: [{ text: 'Hel' }, { text: 'lo' }, { stall: true }] }))
  const token = signToken(p.user('alice'))
  const onA = await connect(t, p.a.wsUrl, bearer(token))
  onA.send({ type: 'chat', session_id: 'doomed', content: 'hi', id: 'q1' })
  const request = await p.upstream.nextRequest()
  const token2 = await onA.next((frame) => frame.type === 'token' && String(frame.content).endsWith('lo'))
  const runId = token2.metadata?.run_id as string
  const before = onA.frames.length

  t.equal(await deleteSession(p.b.baseUrl, 'doomed', token), 204, 'deleted through B')
  await Promise.race([request.closed, sleep(5000)])
  t.ok(request.closedByClient, "A's upstream request is closed")

  await onA.next((frame) => frame.type === 'error', 5000).catch(() => undefined)
  await sleep(1000)
  const after = onA.frames.slice(before)
  t.same(
    after.map((frame) => `${frame.type}:${frame.type === 'error' ? frame.metadata?.code : (frame.content ?? '')}`),
    ['status:cancelled', 'complete:Hello', 'error:not_found'],
    'the watcher on A gets status:cancelled, complete, error not_found, and nothing after',
  )
  const complete = after.find((frame) => frame.type === 'complete')
  t.match(complete, { seq: token2.seq! + 2, metadata: { run_id: runId, finish_reason: 'cancelled' } }, 'complete finish_reason cancelled, in sequence')
  t.match(after.at(-1), { type: 'error', session_id: 'doomed', metadata: { code: 'not_found' } })
  t.equal(after.at(-1)?.seq, undefined, 'the not_found error has no seq')
})
