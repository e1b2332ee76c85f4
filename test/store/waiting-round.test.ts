// The recorded round of a run that waits on the client (protocol.md §7a, 1.1), the same on the
// memory and the Redis backend: recording, claims (once, by kind, by generation), the states an
// append settles, adoption under a new fence (only when the lease lapsed and a round is
// recorded), parking, and the finish of a dead instance's run refused while it waits.
import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import type { PendingCall } from '../../src/protocol/index.ts'
import type { Backend, SessionRef } from '../../src/store/types.ts'
import { actionDue, waitingCalls, type WaitingRound } from '../../src/store/waiting-round.ts'
import { storeBackends } from './backends.ts'

const backends = storeBackends

function both(name: string, body: (t: Test, backend: Backend) => Promise<void>): void {
  t.test(name, async (t) => {
    for (const [kind, make] of backends) {
      await t.test(kind, async (t) => {
        const backend = await make(t)
        if (backend) await body(t, backend)
      })
    }
  })
}

async function started(backend: Backend, id: string, leaseMs = 60_000): Promise<SessionRef> {
  const opened = await backend.sessions.open('alice', id, 100)
  if (opened.kind !== 'open') throw new Error('too many')
  const ref = { owner: 'alice', id, gen: opened.session.gen }
  const begun = await backend.sessions.beginRun(ref, { runId: 'r1', instanceId: 'i1', leaseMs, input: { kind: 'message', message: { role: 'user', content: 'hi' } }, maxMessages: 10 })
  if (begun.kind !== 'started') throw new Error(begun.kind)
  return ref
}

const IN_A_MINUTE = new Date(Date.now() + 60_000).toISOString()
const pending = (id: string, kind: PendingCall['kind'] = 'approval', args: unknown = { list: [] }): PendingCall => ({
  call_id: id,
  tool: 'calculate',
  arguments: args,
  kind,
  expires_at: IN_A_MINUTE,
})

/** A round of three calls: a (approval), b (client tool), c (a server tool running). */
function round(states: WaitingRound['calls']): WaitingRound {
  return {
    round: 0,
    messages: [{ role: 'assistant', content: null, tool_calls: ['a', 'b', 'c'].map((id) => ({ id, type: 'function' as const, function: { name: 'calculate', arguments: '{}' } })) }],
    content: 'so far',
    reasoning: '',
    usage: { prompt_tokens: 1, completion_tokens: 2 },
    calls: states,
  }
}

const status = (ref: SessionRef, content: string, metadata: Record<string, unknown>) => ({ type: 'status' as const, session_id: ref.id, content, metadata: { run_id: 'r1', ...metadata } }) as never

both('a round is recorded at its first wait; answers claim it once, by kind and generation', async (t, backend) => {
  const { sessions } = backend
  const ref = await started(backend, 'rec')
  t.equal(await sessions.waitingRound(ref), null, 'nothing recorded before a wait')
  t.equal(await sessions.addPending(ref, 'other-fence', round({ a: { state: 'waiting', pending: pending('a') } }), 'a'), false, 'fenced')
  t.equal(await sessions.addPending(ref, 'r1', round({ a: { state: 'waiting', pending: pending('a') }, b: { state: 'running' }, c: { state: 'running' } }), 'a'), true)
  // b waits too: its own state is set; the others' recorded states stay.
  t.equal(await sessions.addPending(ref, 'r1', round({ a: { state: 'running' }, b: { state: 'waiting', pending: pending('b', 'client_tool') }, c: { state: 'done', outcome: { ok: true, result: 1 } } }), 'b'), true)
  const recorded = (await sessions.waitingRound(ref)) as WaitingRound
  t.match(recorded, { content: 'so far', usage: { prompt_tokens: 1 }, calls: { a: { state: 'waiting' }, b: { state: 'waiting' }, c: { state: 'running' } } })
  t.same(await sessions.listPending(ref), [pending('a'), pending('b', 'client_tool')], "in the model's order; `[]` arguments kept as an array")
  t.same(waitingCalls(recorded).map((call) => call.call_id), ['a', 'b'])
  t.equal(actionDue(recorded), 0, 'a call cut short (c runs) is due now')

  t.equal(await sessions.claimPending({ ...ref, gen: 'old' }, 'a', { kind: 'approval', approved: true }), null, 'another generation claims nothing')
  t.equal(await sessions.claimPending(ref, 'a', { kind: 'client_tool', output: 'x', isError: false }), null, 'the wrong kind claims nothing')
  t.equal(await sessions.claimPending(ref, 'zz', { kind: 'approval', approved: true }), null, 'an unknown call')
  t.same(await sessions.claimPending(ref, 'a', { kind: 'approval', approved: true, reason: 'ok' }), { runId: 'r1', adopted: null }, 'claimed; the lease is alive: nobody adopts')
  t.equal(await sessions.claimPending(ref, 'a', { kind: 'approval', approved: false }), null, 'once')
  t.same(await sessions.callState(ref, 'a'), { state: 'answered', pending: pending('a'), answer: { kind: 'approval', approved: true, reason: 'ok' } })
  t.equal(await sessions.callState(ref, 'nope'), null)
  t.same(await sessions.listPending(ref), [pending('b', 'client_tool')], 'an answered call no longer waits')

  // An append settles a call of the round in the same step.
  t.ok(await sessions.append(ref, 'r1', status(ref, 'approval_resolved', { call_id: 'a', approved: true }), { callId: 'a', state: { state: 'resolved', approved: true } }))
  t.equal(await sessions.append(ref, 'other-fence', status(ref, 'tool_result', { call_id: 'c' }), { callId: 'c', state: { state: 'done', outcome: { ok: true, result: 3 } } }), null, 'fenced: nothing settled')
  t.same(await sessions.callState(ref, 'a'), { state: 'resolved', approved: true })
  t.same(await sessions.callState(ref, 'c'), { state: 'running' })

  t.equal(await sessions.endRound(ref, 'other-fence'), false)
  t.equal(await sessions.endRound(ref, 'r1'), true)
  t.equal(await sessions.waitingRound(ref), null, 'the round is over')
  t.same(await sessions.listPending(ref), [])
  t.equal(await sessions.waitingRound({ ...ref, gen: 'old' }), null)
})

both('adoption: only a lapsed lease with a recorded round, under a new fence that shuts the old holder out', async (t, backend) => {
  const { sessions } = backend
  const ref = await started(backend, 'adopt')
  const asked = { instanceId: 'i2', leaseMs: 60_000, fence: 'r1~b' }
  t.equal(await sessions.adoptRun(ref, 'r1', asked), null, 'no round recorded')
  await sessions.addPending(ref, 'r1', round({ a: { state: 'waiting', pending: pending('a') }, b: { state: 'done', outcome: { ok: true, result: 2 } }, c: { state: 'done', outcome: { ok: false, error: 'e' } } }), 'a')
  t.equal(await sessions.adoptRun(ref, 'r1', asked), null, 'the lease is alive')
  t.equal(await sessions.parkRun(ref, 'other-fence'), false)
  t.equal(await sessions.parkRun(ref, 'r1'), true, 'let go')
  await sessions.deferLease(ref, 'r1', Date.now() + 1000)
  t.ok(((await sessions.activeRun(ref))?.leaseExpiresAt ?? Infinity) <= Date.now(), 'its lease has lapsed')
  t.equal(await sessions.finishRun(ref, { runId: 'r1', instanceId: 'i2', leaseMs: 1000, event: status(ref, 'x', {}), messages: [], maxMessages: 10, ifLeaseExpired: true }), null, 'a waiting run is not ended as interrupted')
  t.equal(await sessions.adoptRun(ref, 'wrong', asked), null, 'fenced')
  const adopted = await sessions.adoptRun(ref, 'r1', asked)
  t.match(adopted, { active: { runId: 'r1', fence: 'r1~b', instanceId: 'i2' }, round: { calls: { a: { state: 'waiting' }, b: { state: 'done' } } } })
  t.ok((adopted?.active.leaseExpiresAt ?? 0) > Date.now(), 'a new lease')
  t.match(await sessions.activeRun(ref), { runId: 'r1', fence: 'r1~b', instanceId: 'i2' })
  t.match((await sessions.get('alice', 'adopt'))?.active, { fence: 'r1~b' })
  t.equal(await sessions.append(ref, 'r1', status(ref, 'token', {})), null, "the old holder's writes are refused")
  t.equal(await sessions.renewLease(ref, 'r1', 1000), false)
  t.equal(await sessions.adoptRun(ref, 'r1~b', { ...asked, fence: 'r1~c' }), null, 'held again: nobody else adopts')
  t.ok(await sessions.append(ref, 'r1~b', status(ref, 'token', {})))
})

both("an answer to a run whose lease lapsed adopts it in the same step; a deadline's claim", async (t, backend) => {
  const { sessions } = backend
  const ref = await started(backend, 'claim-adopt', 1)
  await sessions.addPending(ref, 'r1', round({ a: { state: 'waiting', pending: pending('a') }, b: { state: 'waiting', pending: pending('b', 'client_tool') }, c: { state: 'done', outcome: { ok: true, result: 0 } } }), 'a')
  await sessions.addPending(ref, 'r1', round({ b: { state: 'waiting', pending: pending('b', 'client_tool') } }), 'b')
  await sleep(10)
  const recorded = (await sessions.waitingRound(ref)) as WaitingRound
  const deadlines = waitingCalls(recorded).map((call) => Date.parse(call.expires_at))
  t.equal(actionDue(recorded), Math.min(...deadlines), 'nothing due before the earliest deadline')
  const expired = await sessions.claimPending(ref, 'b', { kind: 'client_tool', expired: true })
  t.same(expired, { runId: 'r1', adopted: null }, 'a deadline claims without adopting')
  const claim = await sessions.claimPending(ref, 'a', { kind: 'approval', approved: false, reason: 'no' }, { instanceId: 'i3', leaseMs: 60_000, fence: 'r1~z' })
  t.match(claim, { runId: 'r1', adopted: { active: { fence: 'r1~z', instanceId: 'i3' }, round: { calls: { a: { state: 'answered', answer: { approved: false, reason: 'no' } }, b: { state: 'answered', answer: { expired: true } } } } } })
  t.match(await sessions.activeRun(ref), { fence: 'r1~z' })
  const finished = await sessions.finishRun(ref, { runId: 'r1~z', instanceId: 'i3', leaseMs: 1000, event: status(ref, 'x', {}), messages: [], maxMessages: 10 })
  t.ok(finished, 'the adopter finishes it')
  t.equal(await sessions.waitingRound(ref), null, 'the round goes with the run')
  t.equal(await sessions.claimPending(ref, 'a', { kind: 'approval', approved: true }), null, 'nothing waits any more')
})

t.test('actionDue: all done is due now; waiting calls at their earliest deadline', async (t) => {
  const soon = new Date(Date.now() + 5000).toISOString()
  const later = new Date(Date.now() + 9000).toISOString()
  t.equal(actionDue(round({ a: { state: 'done', outcome: { ok: true, result: 1 } }, b: { state: 'done', outcome: { ok: true, result: 1 } }, c: { state: 'done', outcome: { ok: true, result: 1 } } })), 0)
  t.equal(actionDue(round({ a: { state: 'waiting', pending: { ...pending('a'), expires_at: later } }, b: { state: 'waiting', pending: { ...pending('b'), expires_at: soon } }, c: { state: 'done', outcome: { ok: true, result: 1 } } })), Date.parse(soon))
  t.equal(actionDue(round({ a: { state: 'waiting', pending: pending('a') } })), 0, 'a call with no recorded state was cut short')
})
