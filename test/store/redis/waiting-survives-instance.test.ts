// A waiting run survives its instance (protocol.md §7a, 1.1): the drain lets a run that only
// waits on a person go (parked) instead of cancelling it, and an answer on another instance
// goes on with it there: claimed and adopted in one store step, the tool run once, no event
// logged twice. The sweeper keeps a parked run's deadline; cancel and DELETE end it cleanly.
import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { signToken } from '../../helpers/app.ts'
import type { RecordedRequest } from '../../helpers/fake-upstream.ts'
import { textSteps } from '../../helpers/fake-upstream.ts'
import { bearer, connect, type Frame, type TestClient } from '../../helpers/ws-client.ts'
import { deleteSession, pair } from './pair.ts'

const is = (content: string) => (frame: Frame) => frame.type === 'status' && frame.content === content

/** Calls `tool` once, then answers with what the tool said. */
function calls(tool: string, args: string) {
  return (request: RecordedRequest) => {
    const last = request.body.messages.at(-1)
    if (last.role === 'tool') return { steps: textSteps(`it is ${last.content}`) }
    return { steps: [{ toolCalls: [{ index: 0, id: `call_${request.index}`, name: tool, arguments: args }] }, { finish: 'tool_calls' as const }, { done: true as const }] }
  }
}

/** Every frame of the session's log, replayed from the start on `client`. */
async function replay(client: TestClient, sessionId: string): Promise<Frame[]> {
  const from = client.frames.length
  client.send({ type: 'resume', session_id: sessionId, last_seq: 0 })
  await client.next(is('resumed'))
  return client.frames.slice(from).filter((frame) => frame.seq !== undefined)
}

function checkLogged(t: Test, log: Frame[]) {
  const seqs = log.map((frame) => frame.seq!)
  t.same(seqs, seqs.map((_, i) => i + 1), 'the log has no gap and no event twice')
  for (const content of ['thinking', 'tool_call', 'tool_result']) t.equal(log.filter(is(content)).length, 1, `one ${content}`)
  t.equal(log.filter((frame) => frame.type === 'complete').length, 1, 'one complete')
}

t.test('drained while waiting for an approval: parked, not cancelled; approved on the other instance, it goes on there once', async (t) => {
  const p = await pair(t, { TOOLS_REQUIRING_APPROVAL: ['calculate'], SHUTDOWN_GRACE_MS: 30_000 })
  if (!p) return
  p.upstream.script(calls('calculate', '{"expression":"6*7"}'))
  const token = signToken(p.user('alice'))
  const onA = await connect(t, p.a.wsUrl, bearer(token))
  onA.send({ type: 'chat', session_id: 'w', content: 'compute' })
  const required = await onA.next(is('approval_required'))
  const callId = required.metadata?.call_id

  // The drain does not wait out its 30 s grace for a run that only waits on a person.
  await p.a.app.drain()
  t.match(await onA.closed, { code: 1012 })
  t.notOk(onA.frames.some((frame) => frame.type === 'complete' || is('cancelled')(frame)), 'the run was not ended')

  const onB = await connect(t, p.b.wsUrl, bearer(token))
  onB.send({ type: 'resume', session_id: 'w', last_seq: required.seq! })
  const resumed = await onB.next(is('resumed'))
  t.match(resumed.metadata, { active_run: required.metadata?.run_id, pending: [{ call_id: callId, kind: 'approval', tool: 'calculate' }] }, 'still waiting, on no instance')
  onB.send({ type: 'tool_approval', session_id: 'w', call_id: callId, approved: true })
  const complete = await onB.nextOfType('complete')
  t.match(complete, { content: /it is \{"expression":"6\*7","result":42\}/, metadata: { finish_reason: 'stop', run_id: required.metadata?.run_id } })
  t.match(onB.frames.find(is('approval_resolved')), { metadata: { approved: true } })
  onB.send({ type: 'tool_approval', session_id: 'w', call_id: callId, approved: true })
  t.match(await onB.next((frame) => frame.type === 'error'), { metadata: { code: 'not_pending' } }, 'answered once')
  t.equal(p.upstream.requests.length, 2, 'one model request before the wait, one after')
  checkLogged(t, await replay(onB, 'w'))
})

t.test('a client tool of a parked run answered on the other instance; two answers racing there: one wins', async (t) => {
  const p = await pair(t, { SHUTDOWN_GRACE_MS: 30_000 })
  if (!p) return
  p.upstream.script(calls('where', '{}'))
  const token = signToken(p.user('alice'))
  const onA = await connect(t, p.a.wsUrl, bearer(token))
  onA.send({ type: 'chat', session_id: 'c', content: 'where am I?', client_tools: [{ name: 'where', parameters: { type: 'object' } }] })
  const call = await onA.next((frame) => is('tool_call')(frame) && frame.metadata?.executor === 'client')
  await sleep(50)
  await p.a.app.drain()

  const first = await connect(t, p.b.wsUrl, bearer(token))
  const second = await connect(t, p.b.wsUrl, bearer(token))
  for (const client of [first, second]) {
    client.send({ type: 'resume', session_id: 'c', last_seq: call.seq! })
    await client.next(is('resumed'))
  }
  first.send({ type: 'tool_output', session_id: 'c', call_id: call.metadata?.call_id, output: 'Lisbon' })
  second.send({ type: 'tool_output', session_id: 'c', call_id: call.metadata?.call_id, output: 'Porto' })
  const complete = await first.nextOfType('complete')
  const refused = [...first.frames, ...second.frames].filter((frame) => frame.type === 'error' && frame.metadata?.code === 'not_pending')
  t.equal(refused.length, 1, 'exactly one answer lost')
  t.match(complete.content, /it is "(Lisbon|Porto)"/)
  checkLogged(t, await replay(first, 'c'))
})

t.test("a parked run's deadline is kept by the other instance's sweeper: the model is told", async (t) => {
  const p = await pair(t, { TOOLS_REQUIRING_APPROVAL: ['calculate'], APPROVAL_TIMEOUT_MS: 1500, RUN_LEASE_MS: 2000 })
  if (!p) return
  p.upstream.script(calls('calculate', '{"expression":"1+1"}'))
  const token = signToken(p.user('alice'))
  const onA = await connect(t, p.a.wsUrl, bearer(token))
  onA.send({ type: 'chat', session_id: 'd', content: 'compute' })
  const required = await onA.next(is('approval_required'))
  await p.a.app.drain()
  const onB = await connect(t, p.b.wsUrl, bearer(token))
  onB.send({ type: 'resume', session_id: 'd', last_seq: required.seq! })
  t.match(await onB.next(is('approval_resolved')), { metadata: { approved: false, reason: 'nobody answered in time' } })
  t.match(await onB.next(is('tool_result')), { metadata: { is_error: true, result: /not run: nobody approved it within 1.5 s/ } })
  t.match(await onB.nextOfType('complete'), { content: /not run: nobody approved it/, metadata: { finish_reason: 'stop' } })
})

t.test('cancel and DELETE of a parked run end it cleanly on the instance that asks', async (t) => {
  const p = await pair(t, { TOOLS_REQUIRING_APPROVAL: ['calculate'] })
  if (!p) return
  p.upstream.script(calls('calculate', '{"expression":"1+1"}'))
  const token = signToken(p.user('alice'))
  const onA = await connect(t, p.a.wsUrl, bearer(token))
  onA.send({ type: 'chat', session_id: 'k', content: 'compute' })
  await onA.next(is('approval_required'))
  onA.send({ type: 'chat', session_id: 'del', content: 'compute' })
  const second = await onA.next((frame) => is('approval_required')(frame) && frame.session_id === 'del')
  await p.a.app.drain()

  const onB = await connect(t, p.b.wsUrl, bearer(token))
  onB.send({ type: 'resume', session_id: 'k', last_seq: 0 })
  await onB.next(is('resumed'))
  onB.send({ type: 'cancel', session_id: 'k' })
  t.match(await onB.nextOfType('complete'), { session_id: 'k', metadata: { finish_reason: 'cancelled', reason: 'cancel' } })

  onB.send({ type: 'resume', session_id: 'del', last_seq: second.seq! })
  await onB.next((frame) => is('resumed')(frame) && frame.session_id === 'del')
  t.equal(await deleteSession(p.b.baseUrl, 'del', token), 204)
  t.match(await onB.next((frame) => frame.type === 'complete' && frame.session_id === 'del'), { metadata: { finish_reason: 'cancelled', reason: 'deleted' } })
  t.match(await onB.next((frame) => frame.type === 'error' && frame.session_id === 'del'), { metadata: { code: 'not_found' } })
  t.equal(p.upstream.requests.length, 2, 'neither went back to the model')
})

for (const [how, parkRun] of [
  ['the store fails', async () => Promise.reject(new Error('store down'))],
  ['the store refuses', async () => false],
] as const) {
  t.test(`a drain that cannot let a waiting run go (${how}) cancels it after the grace, as any run`, async (t) => {
    const p = await pair(t, { TOOLS_REQUIRING_APPROVAL: ['calculate'], SHUTDOWN_GRACE_MS: 100 })
    if (!p) return
    p.upstream.script(calls('calculate', '{"expression":"1+1"}'))
    const onA = await connect(t, p.a.wsUrl, bearer(signToken(p.user('alice'))))
    onA.send({ type: 'chat', session_id: 'stuck', content: 'compute' })
    await onA.next(is('approval_required'))
    p.a.app.backend.sessions.parkRun = parkRun
    await p.a.app.drain()
    t.match(await onA.closed, { code: 1012 })
    t.match(onA.frames.at(-1), { type: 'complete', metadata: { finish_reason: 'cancelled', reason: 'shutdown' } })
  })
}
