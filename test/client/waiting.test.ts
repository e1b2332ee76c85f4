// The SDK waiting on the client (1.1): approval events on the run, run.approve / run.deny, and
// client tool handlers answered automatically.
import t from 'tap'
import { AgentClient, type RunEvent } from '../../src/client/index.ts'
import { signToken } from '../helpers/app.ts'
import type { RecordedRequest } from '../helpers/fake-upstream.ts'
import { textSteps } from '../helpers/fake-upstream.ts'
import { startWithUpstream } from '../runs/helpers.ts'

function callsTool(tool: string, args: string) {
  return (request: RecordedRequest) => {
    const last = request.body.messages.at(-1)
    if (last.role === 'tool') return { steps: textSteps(`got ${last.content}`) }
    return { steps: [{ toolCalls: [{ index: 0, id: `call_${request.index}`, name: tool, arguments: args }] }, { finish: 'tool_calls' as const }, { done: true as const }] }
  }
}

t.test('run.approve() and run.deny() answer approval_required', async (t) => {
  const { wsUrl } = await startWithUpstream(t, callsTool('calculate', '{"expression":"2*3"}'), { TOOLS_REQUIRING_APPROVAL: ['calculate'] })
  const errors: string[] = []
  const agent = new AgentClient({ url: wsUrl, token: () => signToken('alice'), heartbeatMs: 0, onError: (error) => errors.push(error.code) })
  t.teardown(() => agent.close())
  for (const approve of [true, false]) {
    const run = agent.chat('compute')
    const events: RunEvent[] = []
    for await (const event of run) {
      events.push(event)
      if (event.type === 'status' && event.content === 'approval_required') {
        if (approve) run.approve(event.metadata.call_id)
        else run.deny(event.metadata.call_id, 'no thanks')
        // A second answer is refused, and reported, without failing the run.
        run.approve(event.metadata.call_id)
      }
    }
    const result = await run.result()
    t.equal(result.finishReason, 'stop')
    t.match(result.text, approve ? /"result":6/ : /denied it: no thanks/)
    t.ok(events.some((event) => event.type === 'status' && event.content === 'approval_resolved'))
  }
  t.same(errors, ['not_pending', 'not_pending'])
})

t.test('client tool handlers run here and answer with tool_output; a throw is an error result', async (t) => {
  const { up, wsUrl } = await startWithUpstream(t, callsTool('get_location', '{"precise":true}'))
  let calls = 0
  const agent = new AgentClient({
    url: wsUrl,
    token: () => signToken('alice'),
    heartbeatMs: 0,
    tools: {
      get_location: {
        description: 'where the user is',
        parameters: { type: 'object', properties: { precise: { type: 'boolean' } } },
        run: (args, { signal }) => {
          calls++
          t.same(args, { precise: true })
          t.notOk(signal.aborted)
          if (calls === 2) throw new Error('no GPS')
          return calls === 1 ? { city: 'Lisbon' } : 'Porto'
        },
      },
    },
  })
  t.teardown(() => agent.close())
  t.match(await agent.chat('where am I?').text(), /got "\{\\"city\\":\\"Lisbon\\"\}"/)
  t.ok(up.requests[0]!.body.tools.some((tool: { function: { name: string } }) => tool.function.name === 'get_location'), 'declared with the chat')
  t.match(await agent.chat('and now?').text(), /got Error: no GPS/)
  t.equal(calls, 2)
})
