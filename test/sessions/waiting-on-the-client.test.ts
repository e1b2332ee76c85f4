// Waiting on the client (protocol.md §7, 1.1): approvals and client tools, on the memory and the
// Redis backend; answers from another instance and racing answers in the Redis part.
import t, { type Test } from 'tap'
import { Type } from '@sinclair/typebox'
import { defineTool } from '../../src/agent/tools/index.ts'
import { signToken } from '../helpers/app.ts'
import type { RecordedRequest } from '../helpers/fake-upstream.ts'
import { textSteps } from '../helpers/fake-upstream.ts'
import { useRedis } from '../helpers/redis.ts'
import type { Frame } from '../helpers/ws-client.ts'
import { startWithUpstream, transcript } from '../runs/helpers.ts'

let runs = 0
const transfer = defineTool({
  name: 'transfer',
  description: 'moves money',
  parameters: Type.Object({ amount: Type.Number() }),
  needsApproval: (args) => args.amount > 100,
  run: ({ amount }) => {
    runs++
    return { moved: amount }
  },
})

/** The model calls `tool` once, then answers with what the tool result said. */
function callsTool(tool: string, args: string) {
  return (request: RecordedRequest) => {
    const last = request.body.messages.at(-1)
    if (last.role === 'tool') return { steps: textSteps(`result: ${last.content}`) }
    return { steps: [{ toolCalls: [{ index: 0, id: `call_${request.index}`, name: tool, arguments: args }] }, { finish: 'tool_calls' as const }, { done: true as const }] }
  }
}

const is = (content: string) => (frame: Frame) => frame.type === 'status' && frame.content === content

async function backends(t: Test, body: (t: Test, extra: Record<string, unknown>) => Promise<void>) {
  await t.test('memory', (t) => body(t, {}))
  await t.test('redis', async (t) => {
    const redis = await useRedis(t)
    if (redis) await body(t, { REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix })
  })
}

t.test('an approval: announced, shown to a resume and REST, answered once, then the tool runs', (t) =>
  backends(t, async (t, extra) => {
    runs = 0
    const { client, baseUrl } = await startWithUpstream(t, callsTool('transfer', '{"amount":500}'), extra, { tools: [transfer] })
    const alice = await client()
    alice.send({ type: 'chat', session_id: 'a', content: 'pay rent' })
    t.match(await alice.next(is('tool_call')), { metadata: { tool: 'transfer', arguments: { amount: 500 } } })
    const required = await alice.next(is('approval_required'))
    t.match(required.metadata, { tool: 'transfer', call_id: 'call_0', arguments: { amount: 500 }, expires_at: String })
    t.equal(runs, 0, 'not run before it is approved')

    const other = await client()
    other.send({ type: 'resume', session_id: 'a', last_seq: 0 })
    const resumed = await other.next(is('resumed'))
    t.same(resumed.metadata?.pending, [{ call_id: 'call_0', tool: 'transfer', arguments: { amount: 500 }, kind: 'approval', expires_at: required.metadata?.expires_at }])
    t.ok(other.frames.some(is('approval_required')), 'the replay shows it too')
    const rest = await (await fetch(`${baseUrl}/v1/sessions/a`, { headers: { authorization: `Bearer ${signToken('alice')}` } })).json()
    t.same(rest.pending, resumed.metadata?.pending)

    // Two answers race (two connections): one claims the call, the other is not_pending.
    other.send({ type: 'tool_approval', session_id: 'a', call_id: 'call_0', approved: true })
    alice.send({ type: 'tool_approval', session_id: 'a', call_id: 'call_0', approved: false })
    t.match(await alice.nextOfType('complete'), { content: 'result: {"moved":500}', metadata: { finish_reason: 'stop' } })
    const refusal = alice.frames.find((frame) => frame.type === 'error')
    t.match(refusal, { metadata: { code: 'not_pending' } }, 'the second answer: not_pending')
    const resolved = alice.frames.find(is('approval_resolved'))
    t.same(resolved?.metadata, { run_id: required.metadata?.run_id, call_id: 'call_0', approved: true }, 'the first answer won')
    const result = alice.frames.find(is('tool_result'))
    t.match(result, { metadata: { result: { moved: 500 }, is_error: false } })
    t.ok(result!.seq! > resolved!.seq!, 'approval_resolved is logged before the result')
    t.equal(runs, 1, 'run exactly once')

    alice.send({ type: 'tool_approval', session_id: 'a', call_id: 'call_0', approved: true })
    t.match(await alice.next((frame) => frame.type === 'error' && frame.metadata?.code === 'not_pending'), { session_id: 'a' })
    alice.send({ type: 'tool_approval', session_id: 'nope', call_id: 'x', approved: true })
    t.match(await alice.next((frame) => frame.type === 'error' && frame.session_id === 'nope'), { metadata: { code: 'not_found' } })
  }),
)

t.test('denied and expired approvals do not run; the model is told why', (t) =>
  backends(t, async (t, extra) => {
    runs = 0
    const { up, client } = await startWithUpstream(t, callsTool('calculate', '{"expression":"1+1"}'), { ...extra, TOOLS_REQUIRING_APPROVAL: ['calculate'], APPROVAL_TIMEOUT_MS: 300 })
    const alice = await client()
    alice.send({ type: 'chat', session_id: 'd', content: 'add' })
    await alice.next(is('approval_required'))
    alice.send({ type: 'tool_approval', session_id: 'd', call_id: 'call_0', approved: false, reason: 'not now' })
    t.match(await alice.next(is('approval_resolved')), { metadata: { approved: false, reason: 'not now' } })
    t.match(await alice.next(is('tool_result')), { metadata: { is_error: true, result: 'not run: the user denied it: not now' } })
    await alice.nextOfType('complete')
    t.match(transcript(up.requests[1]!).at(-1), /not run: the user denied it: not now/)

    alice.send({ type: 'chat', session_id: 'd', content: 'add again' })
    await alice.next(is('approval_required'))
    t.match(await alice.next(is('approval_resolved'), 5000), { metadata: { approved: false, reason: 'nobody answered in time' } })
    t.match(await alice.next(is('tool_result')), { metadata: { is_error: true, result: /nobody approved it within 0.3 s/ } })
    await alice.nextOfType('complete')
  }),
)

t.test('client tools: declared by the chat, announced with executor client, answered by tool_output or timed out', (t) =>
  backends(t, async (t, extra) => {
    const { up, client } = await startWithUpstream(t, callsTool('get_location', '{}'), { ...extra, CLIENT_TOOL_TIMEOUT_MS: 300 })
    const alice = await client()
    const clientTools = [{ name: 'get_location', description: 'where the user is', parameters: { type: 'object', properties: {} } }]
    alice.send({ type: 'chat', session_id: 'c', content: 'where am I?', client_tools: clientTools })
    t.match(await alice.next(is('tool_call')), { metadata: { tool: 'get_location', executor: 'client' } })
    t.ok(up.requests[0]!.body.tools.some((tool: { function: { name: string } }) => tool.function.name === 'get_location'), 'offered to the model')
    alice.send({ type: 'tool_output', session_id: 'c', call_id: 'call_0', output: 'Lisbon' })
    t.match(await alice.next(is('tool_result')), { metadata: { result: 'Lisbon', is_error: false } })
    t.match(await alice.nextOfType('complete'), { content: 'result: "Lisbon"' })

    alice.send({ type: 'chat', session_id: 'c', content: 'again', client_tools: clientTools })
    await alice.next(is('tool_call'))
    t.match(await alice.next(is('tool_result'), 5000), { metadata: { is_error: true, result: /timed out/ } })
    await alice.nextOfType('complete')

    for (const [bad, why] of [
      [[{ name: 'calculate', parameters: { type: 'object' } }], /server tool/],
      [[{ name: 'x', parameters: { type: 'string' } }], /JSON Schema object/],
      [[{ name: 'x', parameters: { type: 'object' } }, { name: 'x', parameters: { type: 'object' } }], /twice/],
      [[{ name: 'x', parameters: { type: 'object', description: 'y'.repeat(9000) } }], /8 KB/],
    ] as const) {
      alice.send({ type: 'chat', session_id: 'c2', content: 'hi', client_tools: bad })
      const refused = await alice.next((frame) => frame.type === 'error' && frame.session_id === 'c2')
      t.match(refused, { content: why, metadata: { code: 'invalid_message' } })
    }
    alice.send({ type: 'tool_output', session_id: 'c', call_id: 'call_9', output: 'x'.repeat(20_000) })
    t.match(await alice.next((frame) => frame.type === 'error'), { metadata: { code: 'payload_too_large' } })
    alice.send({ type: 'ping' })
    await alice.next((frame) => frame.type === 'pong')
  }),
)

t.test('a run waiting on a person outlives the disconnect grace; cancel ends it cleanly', async (t) => {
  const { client } = await startWithUpstream(t, callsTool('transfer', '{"amount":500}'), { RESUME_GRACE_MS: 100 }, { tools: [transfer] })
  const alice = await client()
  alice.send({ type: 'chat', session_id: 'g', content: 'pay' })
  const required = await alice.next(is('approval_required'))
  alice.close()
  await new Promise((resolve) => setTimeout(resolve, 600))
  const back = await client()
  back.send({ type: 'resume', session_id: 'g', last_seq: required.seq! })
  const resumed = await back.next(is('resumed'))
  t.equal(resumed.metadata?.active_run, required.metadata?.run_id, 'still waiting after the grace')
  t.equal(resumed.metadata?.pending.length, 1)
  back.send({ type: 'cancel', session_id: 'g' })
  t.match(await back.nextOfType('complete'), { metadata: { finish_reason: 'cancelled' } })
  back.send({ type: 'tool_approval', session_id: 'g', call_id: 'call_0', approved: true })
  t.match(await back.next((frame) => frame.type === 'error'), { metadata: { code: 'not_pending' } }, 'nothing waits once the run ended')
})
