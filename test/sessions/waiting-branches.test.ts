// Edges of waiting on the client: rules that cannot read their arguments, answers of the wrong
// kind, a follower without the tool's handler, a handler that returns nothing, deny without a reason.
import t from 'tap'
import { Type } from '@sinclair/typebox'
import { createToolRegistry } from '../../src/agent/tools/registry.ts'
import { defineTool } from '../../src/agent/tools/types.ts'
import { AgentClient } from '../../src/client/index.ts'
import { createMemoryBackend } from '../../src/store/memory/index.ts'
import { signToken } from '../helpers/app.ts'
import type { RecordedRequest } from '../helpers/fake-upstream.ts'
import { textSteps } from '../helpers/fake-upstream.ts'
import type { Frame } from '../helpers/ws-client.ts'
import { startWithUpstream } from '../runs/helpers.ts'

const is = (content: string) => (frame: Frame) => frame.type === 'status' && frame.content === content

function calls(tool: string, args: string) {
  return (request: RecordedRequest) => {
    const last = request.body.messages.at(-1)
    if (last.role === 'tool') return { steps: textSteps(`got ${last.content}`) }
    return { steps: [{ toolCalls: [{ index: 0, id: `call_${request.index}`, name: tool, arguments: args }] }, { finish: 'tool_calls' as const }, { done: true as const }] }
  }
}

t.test('needsApproval rules: a function that cannot read its arguments asks nothing', async (t) => {
  const tools = createToolRegistry([
    defineTool({ name: 'always', description: '', parameters: Type.Object({}), needsApproval: true, run: () => 1 }),
    defineTool({ name: 'never', description: '', parameters: Type.Object({}), needsApproval: false, run: () => 1 }),
    defineTool({ name: 'big', description: '', parameters: Type.Object({ n: Type.Number() }), needsApproval: ({ n }) => n > 10, run: () => 1 }),
  ])
  t.equal(tools.needsApproval('always', ''), true)
  t.equal(tools.needsApproval('never', '{}'), false)
  t.equal(tools.needsApproval('big', '{"n":11}'), true)
  t.equal(tools.needsApproval('big', ''), false)
  t.equal(tools.needsApproval('big', '{not json'), false, 'arguments that do not parse never run anyway')
  t.equal(tools.needsApproval('unknown', '{}'), false)
})

t.test('an approval of arguments that are not JSON shows them as sent; an answer of the wrong kind is not_pending', async (t) => {
  const { client } = await startWithUpstream(t, calls('calculate', 'not json'), { TOOLS_REQUIRING_APPROVAL: ['calculate'] })
  const alice = await client()
  alice.send({ type: 'chat', session_id: 'w', content: 'go' })
  const required = await alice.next(is('approval_required'))
  t.equal(required.metadata?.arguments, 'not json')
  alice.send({ type: 'tool_output', session_id: 'w', call_id: required.metadata?.call_id, output: 'x' })
  t.match(await alice.next((frame) => frame.type === 'error'), { content: /not waiting for a tool output/, metadata: { code: 'not_pending' } })
  alice.send({ type: 'tool_approval', session_id: 'w', call_id: required.metadata?.call_id, approved: false })
  t.match(await alice.next(is('approval_resolved')), { metadata: { approved: false } })
  t.notOk('reason' in (alice.frames.find(is('approval_resolved'))?.metadata ?? {}), 'no reason given, none logged')
  await alice.nextOfType('complete')
})

t.test('stores list no waiting calls for a session that is gone', async (t) => {
  const backend = createMemoryBackend({ ttlSeconds: 60, maxEvents: 10 })
  t.teardown(() => backend.close())
  t.same(await backend.sessions.listPending({ owner: 'a', id: 'gone', gen: '1' }), [])
})

t.test('the SDK: a follower without the handler leaves the call alone; a handler returning nothing sends null; deny without a reason', async (t) => {
  const { up, wsUrl } = await startWithUpstream(t, calls('where', '{}'))
  const options = { url: wsUrl, token: () => signToken('alice'), sessionId: 'sdk', heartbeatMs: 0 }
  const owner = new AgentClient({ ...options, tools: { where: { parameters: { type: 'object' }, run: async () => undefined } } })
  t.teardown(() => owner.close())
  t.match(await owner.chat('where?').text(), /got "null"/, 'undefined is sent as null')
  t.notOk(up.requests[0]!.body.tools.find((tool: { function: { name: string; description?: string } }) => tool.function.name === 'where').function.description, 'no description given, none sent')

  up.script(calls('calculate', '{"expression":"1+1"}'))
  const { wsUrl: approvalsUrl } = await startWithUpstream(t, calls('calculate', '{"expression":"1+1"}'), { TOOLS_REQUIRING_APPROVAL: ['calculate'] })
  const denier = new AgentClient({ ...options, url: approvalsUrl })
  t.teardown(() => denier.close())
  const run = denier.chat('add')
  for await (const event of run) if (event.type === 'status' && event.content === 'approval_required') run.deny(event.metadata.call_id)
  t.match(await run.text(), /not run: the user denied it/)

  // Another client of the same session, without the tool: it sees the call and leaves it.
  up.script(calls('where', '{}'))
  const starter = new AgentClient({ ...options, sessionId: 'sdk2', tools: { where: { parameters: { type: 'object' }, run: () => new Promise((resolve) => setTimeout(() => resolve('here'), 100)) } } })
  t.teardown(() => starter.close())
  const started = starter.chat('where now?')
  for await (const event of started) if (event.type === 'status' && event.content === 'thinking') break
  const follower = new AgentClient({ ...options, sessionId: 'sdk2' })
  t.teardown(() => follower.close())
  const followed = follower.follow(started.runId!)
  t.match(await followed.text(), /got "here"/, 'answered by the client that has the tool, once')
})
