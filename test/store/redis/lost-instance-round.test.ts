// An instance that died inside a recorded tool round (protocol.md §7a, 1.1): the round it left
// in the store is taken up by the other instance's sweeper. A server tool that was running there
// gets an error result and is not run again; a call that waits still waits (not announced
// twice); an answer claimed before the instance died, but never acted on, is acted on.
import t, { type Test } from 'tap'
import { signToken } from '../../helpers/app.ts'
import type { RecordedRequest } from '../../helpers/fake-upstream.ts'
import { textSteps } from '../../helpers/fake-upstream.ts'
import { redisBackend } from '../../helpers/redis.ts'
import { bearer, connect, type Frame } from '../../helpers/ws-client.ts'
import type { PendingCall } from '../../../src/protocol/index.ts'
import type { Backend, SessionRef } from '../../../src/store/types.ts'
import type { WaitingRound } from '../../../src/store/waiting-round.ts'
import { pair, type Pair } from './pair.ts'

const is = (content: string) => (frame: Frame) => frame.type === 'status' && frame.content === content

/** Answers with the tool results it was sent. */
function summarises(request: RecordedRequest) {
  const results = request.body.messages.filter((message: { role: string }) => message.role === 'tool').map((message: { content: string }) => message.content)
  return { steps: textSteps(`results: ${results.join(' | ')}`) }
}

/** What a dead instance left: a run of 'ghost' in round 0 with calls x (approval) and y (calculate, running), its lease lapsed. */
async function leftByAGhost(t: Test, p: Pair, owner: string, id: string, leaseMs = 1): Promise<{ backend: Backend; ref: SessionRef; x: PendingCall }> {
  const backend = await redisBackend(t, p.redis)
  const opened = await backend.sessions.open(owner, id, 100)
  if (opened.kind !== 'open') throw new Error('too many')
  const ref = { owner, id, gen: opened.session.gen }
  const begun = await backend.sessions.beginRun(ref, { runId: 'r', instanceId: 'ghost', leaseMs, input: { kind: 'message', message: { role: 'user', content: 'compute' } }, maxMessages: 10 })
  if (begun.kind !== 'started') throw new Error(begun.kind)
  const status = (content: string, metadata: Record<string, unknown>) => backend.sessions.append(ref, 'r', { type: 'status', session_id: id, content, metadata: { run_id: 'r', ...metadata } } as never)
  await status('thinking', {})
  const args = '{"expression":"2*3"}'
  await status('tool_call', { tool: 'calculate', call_id: 'x', arguments: { expression: '2*3' } })
  await status('tool_call', { tool: 'calculate', call_id: 'y', arguments: { expression: '2*3' } })
  const x: PendingCall = { call_id: 'x', tool: 'calculate', arguments: { expression: '2*3' }, kind: 'approval', expires_at: new Date(Date.now() + 60_000).toISOString() }
  const round: WaitingRound = {
    round: 0,
    messages: [{ role: 'assistant', content: null, tool_calls: ['x', 'y'].map((callId) => ({ id: callId, type: 'function' as const, function: { name: 'calculate', arguments: args } })) }],
    content: '',
    reasoning: '',
    calls: { x: { state: 'waiting', pending: x }, y: { state: 'running' } },
  }
  await backend.sessions.addPending(ref, 'r', round, 'x')
  await status('approval_required', { tool: 'calculate', call_id: 'x', arguments: x.arguments, expires_at: x.expires_at })
  return { backend, ref, x }
}

t.test('died inside a round: the running tool is cut off, the waiting call still waits, then goes on', async (t) => {
  const p = await pair(t, { TOOLS_REQUIRING_APPROVAL: ['calculate'], RUN_LEASE_MS: 400 })
  if (!p) return
  p.upstream.script(summarises)
  const owner = p.user('alice')
  await leftByAGhost(t, p, owner, 'cut')
  const onB = await connect(t, p.b.wsUrl, bearer(signToken(owner)))
  onB.send({ type: 'resume', session_id: 'cut', last_seq: 0 })
  const cut = await onB.next((frame) => is('tool_result')(frame) && frame.metadata?.call_id === 'y')
  t.match(cut.metadata, { is_error: true, result: /interrupted: the instance running this tool stopped/ }, 'not run again')
  onB.send({ type: 'resume', session_id: 'cut', last_seq: cut.seq! })
  t.match((await onB.next((frame) => is('resumed')(frame) && frame.metadata?.last_seq === cut.seq)).metadata, { pending: [{ call_id: 'x' }] }, 'x still waits')
  onB.send({ type: 'tool_approval', session_id: 'cut', call_id: 'x', approved: true })
  const complete = await onB.nextOfType('complete')
  t.match(complete.content, /results: .*"result":6.* \| Error: interrupted/)
  const reader = await connect(t, p.b.wsUrl, bearer(signToken(owner)))
  reader.send({ type: 'resume', session_id: 'cut', last_seq: 0 })
  await reader.next(is('resumed'))
  const log = reader.frames.filter((frame) => frame.seq !== undefined)
  t.same(log.map((frame) => frame.seq), log.map((_, i) => i + 1), 'no gap, no event twice')
  t.equal(log.filter(is('approval_required')).length, 1, 'announced once')
  for (const callId of ['x', 'y']) t.equal(log.filter((frame) => is('tool_result')(frame) && frame.metadata?.call_id === callId).length, 1, `one result for ${callId}`)
  t.equal(p.upstream.requests.length, 1, 'the model is asked once, with both results')
})

t.test('an answer claimed before its instance died, never acted on, is acted on by the sweeper', async (t) => {
  const p = await pair(t, { TOOLS_REQUIRING_APPROVAL: ['calculate'], RUN_LEASE_MS: 400 })
  if (!p) return
  p.upstream.script(summarises)
  const owner = p.user('bob')
  const { backend, ref } = await leftByAGhost(t, p, owner, 'claimed')
  // y had finished before the death; x's answer was claimed on an instance that forwarded it to the dead one.
  await backend.sessions.append(ref, 'r', { type: 'status', session_id: 'claimed', content: 'tool_result', metadata: { run_id: 'r', tool: 'calculate', call_id: 'y', result: { result: 6 }, is_error: false } } as never, { callId: 'y', state: { state: 'done', outcome: { ok: true, result: { result: 6 } } } })
  t.match(await backend.sessions.claimPending(ref, 'x', { kind: 'approval', approved: false, reason: 'not now' }), { adopted: null })
  const onB = await connect(t, p.b.wsUrl, bearer(signToken(owner)))
  onB.send({ type: 'resume', session_id: 'claimed', last_seq: 0 })
  const complete = await onB.nextOfType('complete')
  t.match(complete.content, /results: Error: not run: the user denied it: not now \| \{"result":6\}/)
  t.equal(onB.frames.filter((frame) => is('tool_result')(frame) && frame.metadata?.call_id === 'y').length, 1, "y's result is not logged again")
})

t.test("DELETE of a dead instance's waiting run while its lease still runs: ended here once it lapses", async (t) => {
  const p = await pair(t, { TOOLS_REQUIRING_APPROVAL: ['calculate'], RUN_LEASE_MS: 400 })
  if (!p) return
  p.upstream.script(summarises)
  const owner = p.user('carol')
  // Its lease (like every lease, at most RUN_LEASE_MS long) lapses inside the two leases a DELETE waits.
  await leftByAGhost(t, p, owner, 'doomed', 400)
  const token = signToken(owner)
  const onB = await connect(t, p.b.wsUrl, bearer(token))
  onB.send({ type: 'resume', session_id: 'doomed', last_seq: 0 })
  await onB.next(is('resumed'))
  const response = await fetch(`${p.b.baseUrl}/v1/sessions/doomed`, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } })
  t.equal(response.status, 204)
  t.match(await onB.nextOfType('complete'), { metadata: { finish_reason: 'cancelled', reason: 'deleted' } }, 'ended cleanly, not dropped')
  t.match(await onB.next((frame) => frame.type === 'error'), { metadata: { code: 'not_found' } })
  t.equal(p.upstream.requests.length, 0, 'never went back to the model')
})

/**
 * Regression (cancel-of-a-dead-instances-run-reaches-nobody): a cancel while the dead
 * instance's lease still ran was published to nobody; the run was then adopted (its cut-off
 * tool was due) and went on waiting for its approval, the cancel forgotten, the client never
 * told. Same for a DELETE when the other instance's sweeper, not the deleting instance, was the
 * one to adopt it: the session was deleted under the run.
 */
t.test('a cancel while the dead instance still holds the lease ends the run once it is adopted, wherever', async (t) => {
  const p = await pair(t, { TOOLS_REQUIRING_APPROVAL: ['calculate'], RUN_LEASE_MS: 400 })
  if (!p) return
  p.upstream.script(summarises)
  const owner = p.user('dave')
  await leftByAGhost(t, p, owner, 'forgotten', 600)
  const onB = await connect(t, p.b.wsUrl, bearer(signToken(owner)))
  onB.send({ type: 'resume', session_id: 'forgotten', last_seq: 0 })
  await onB.next(is('resumed'))
  onB.send({ type: 'cancel', session_id: 'forgotten' })
  t.match(await onB.nextOfType('complete'), { metadata: { finish_reason: 'cancelled' } }, 'cancelled, not left waiting for its approval')
  t.equal(p.upstream.requests.length, 0, 'never went back to the model')
})
