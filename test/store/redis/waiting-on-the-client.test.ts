// Approvals across instances (protocol.md §7, 1.1): answered on the instance that does not run
// the call, and two answers racing on two instances: the tool runs once, one answer wins.
import t from 'tap'
import { signToken } from '../../helpers/app.ts'
import type { RecordedRequest } from '../../helpers/fake-upstream.ts'
import { textSteps } from '../../helpers/fake-upstream.ts'
import { bearer, connect, type Frame } from '../../helpers/ws-client.ts'
import { pair } from './pair.ts'

const is = (content: string) => (frame: Frame) => frame.type === 'status' && frame.content === content

function callsCalculate(request: RecordedRequest) {
  const last = request.body.messages.at(-1)
  if (last.role === 'tool') return { steps: textSteps(`it is ${last.content}`) }
  return { steps: [{ toolCalls: [{ index: 0, id: `call_${request.index}`, name: 'calculate', arguments: '{"expression":"6*7"}' }] }, { finish: 'tool_calls' as const }, { done: true as const }] }
}

t.test('an approval answered on another instance, and two answers racing on two instances', async (t) => {
  const p = await pair(t, { TOOLS_REQUIRING_APPROVAL: ['calculate'] })
  if (!p) return
  p.upstream.script(callsCalculate)
  const token = signToken(p.user('alice'))
  const onA = await connect(t, p.a.wsUrl, bearer(token))
  const onB = await connect(t, p.b.wsUrl, bearer(token))

  onA.send({ type: 'chat', session_id: 'x', content: 'compute' })
  const first = await onA.next(is('approval_required'))
  onB.send({ type: 'tool_approval', session_id: 'x', call_id: first.metadata?.call_id, approved: true })
  t.match(await onA.nextOfType('complete'), { content: /"result":42/ }, "B's answer continued A's run")

  onA.send({ type: 'chat', session_id: 'x', content: 'again' })
  const second = await onA.next(is('approval_required'))
  onB.send({ type: 'resume', session_id: 'x', last_seq: second.seq! - 1 })
  await onB.next(is('resumed'))
  onA.send({ type: 'tool_approval', session_id: 'x', call_id: second.metadata?.call_id, approved: true })
  onB.send({ type: 'tool_approval', session_id: 'x', call_id: second.metadata?.call_id, approved: false, reason: 'no' })
  const complete = await onA.next((frame) => frame.type === 'complete' && frame.seq! > second.seq!)
  const refusals = [...onA.frames, ...onB.frames].filter((frame) => frame.type === 'error' && frame.metadata?.code === 'not_pending')
  t.equal(refusals.length, 1, 'exactly one answer lost the race')
  const resolved = onA.frames.filter((frame) => is('approval_resolved')(frame) && frame.seq! > second.seq!)
  t.equal(resolved.length, 1, 'resolved once')
  const results = onA.frames.filter((frame) => is('tool_result')(frame) && frame.seq! > second.seq!)
  t.equal(results.length, 1, 'one result')
  t.match(complete.content, resolved[0]!.metadata?.approved ? /"result":42/ : /not run: the user denied it: no/, 'the winner decided')
})
