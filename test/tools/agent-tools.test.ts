import t, { type Test } from 'tap'
import { Type } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer, type Frame, type TestClient } from '../helpers/ws-client.ts'
import { createFakeUpstream, textSteps, type FakeUpstream, type Script, type Step } from '../helpers/fake-upstream.ts'
import { defineTool } from '../../src/agent/tools/index.ts'
import { HistoryMessage } from '../../src/store/types.ts'
import { ServerFrame } from '../../src/protocol/index.ts'

const validServerFrame = TypeCompiler.Compile(ServerFrame)
const validHistoryMessage = TypeCompiler.Compile(HistoryMessage)

function toolCallSteps(calls: Array<{ id: string; name: string; arguments: string }>): Step[] {
  return [
    // Streamed the way OpenAI does: id and name first, the arguments in fragments.
    ...calls.map((call, index) => ({ toolCalls: [{ index, id: call.id, name: call.name, arguments: '' }] })),
    ...calls.flatMap((call, index) => {
      const half = Math.ceil(call.arguments.length / 2)
      return [
        { toolCalls: [{ index, arguments: call.arguments.slice(0, half) }] },
        { toolCalls: [{ index, arguments: call.arguments.slice(half) }] },
      ]
    }),
    { finish: 'tool_calls' },
    { done: true },
  ]
}

/** Scripts the upstream by request index: the nth request gets the nth script (the last repeats). */
function scripted(up: FakeUpstream, scripts: Script[]): void {
  up.script((request) => scripts[Math.min(request.index, scripts.length - 1)] as Script)
}

const echo = defineTool({
  name: 'echo',
  description: 'Echoes its text',
  parameters: Type.Object({ text: Type.String() }, { additionalProperties: false }),
  run: ({ text }) => ({ echoed: text }),
})

const broken = defineTool({
  name: 'broken',
  description: 'Always fails',
  parameters: Type.Object({}),
  run: () => {
    throw new Error('the tool broke')
  },
})

async function setup(t: Test, config: Record<string, unknown> = {}, tools = [echo, broken]) {
  const up = await createFakeUpstream()
  t.teardown(() => up.close())
  const { wsUrl } = await startApp(
    t,
    { modelProvider: 'openai', OPENAI_BASE_URL: up.baseURL, OPENAI_API_KEY: 'test', ...config },
    { tools },
  )
  const client = await connect(t, wsUrl, bearer(signToken('alice')))
  return { up, client }
}
/** The frames' types; consecutive tokens as one (deltas ready together come as one token, protocol.md §6). */
function typesOf(frames: Frame[]): string[] {
  return frames.map((frame) => (frame.type === 'status' ? `status:${frame.content}` : frame.type)).filter((type, i, all) => type !== 'token' || all[i - 1] !== 'token')
}

function assertValidFrames(t: Test, frames: Frame[]): void {
  for (const frame of frames) t.ok(validServerFrame.Check(frame), `valid ${frame.type} frame`)
  t.same(
    frames.map((frame) => frame.seq),
    frames.map((_, index) => (frames[0]?.seq ?? 0) + index),
    'seq contiguous',
  )
}

async function run(client: TestClient, content: string, sessionId?: string): Promise<Frame[]> {
  client.send({ type: 'chat', content, ...(sessionId ? { session_id: sessionId } : {}) })
  return client.untilComplete()
}

t.test('one round: tool_call and tool_result events, then the answer', async (t) => {
  const { up, client } = await setup(t)
  scripted(up, [
    { steps: toolCallSteps([{ id: 'call_1', name: 'echo', arguments: '{"text":"hi"}' }]) },
    { steps: textSteps('It said hi.') },
  ])
  const frames = await run(client, 'echo hi')
  t.same(typesOf(frames), ['status:thinking', 'status:tool_call', 'status:tool_result', 'token', 'complete'])
  assertValidFrames(t, frames)
  t.match(frames[1]?.metadata, { tool: 'echo', call_id: 'call_1', arguments: { text: 'hi' } })
  t.match(frames[2]?.metadata, { tool: 'echo', call_id: 'call_1', result: { echoed: 'hi' }, is_error: false })
  t.equal(frames.at(-1)?.content, 'It said hi.')
  t.equal(frames.at(-1)?.metadata?.finish_reason, 'stop')

  t.equal(up.requests.length, 2)
  const first = up.requests[0]!.body
  t.same(first.tools.map((tool: any) => tool.function.name), ['get_current_time', 'calculate', 'echo', 'broken'], 'built-ins, then the added tools')
  t.same(first.tools.find((tool: any) => tool.function.name === 'echo').function.parameters.required, ['text'])
  const second = up.requests[1]!.body.messages
  t.match(second.at(-2), { role: 'assistant', tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'echo', arguments: '{"text":"hi"}' } }] })
  t.match(second.at(-1), { role: 'tool', tool_call_id: 'call_1' })
  t.same(JSON.parse(second.at(-1).content), { echoed: 'hi' })
})

t.test('parallel calls run concurrently and each gets its result', async (t) => {
  let started = 0
  let release!: () => void
  const bothStarted = new Promise<void>((resolve) => (release = resolve))
  const latch = defineTool({
    name: 'latch',
    description: 'Finishes only once every latch call has started',
    parameters: Type.Object({ n: Type.Integer() }),
    run: async ({ n }) => {
      if (++started === 2) release()
      await bothStarted
      return n * 10
    },
  })
  const { up, client } = await setup(t, {}, [latch])
  scripted(up, [
    {
      steps: toolCallSteps([
        { id: 'call_a', name: 'latch', arguments: '{"n":1}' },
        { id: 'call_b', name: 'latch', arguments: '{"n":2}' },
      ]),
    },
    { steps: textSteps('Done.') },
  ])
  const frames = await run(client, 'run both')
  const results = frames.filter((frame) => frame.content === 'tool_result')
  t.same(
    results.map((frame) => [frame.metadata?.call_id, frame.metadata?.result]).sort(),
    [
      ['call_a', 10],
      ['call_b', 20],
    ],
  )
  t.equal(frames.filter((frame) => frame.content === 'tool_call').length, 2)
  const messages = up.requests[1]!.body.messages
  t.same(messages.filter((m: any) => m.role === 'tool').map((m: any) => m.tool_call_id).sort(), ['call_a', 'call_b'])
})

t.test('two rounds, then the answer; history is accepted by the next request', async (t) => {
  const { up, client } = await setup(t)
  scripted(up, [
    { steps: toolCallSteps([{ id: 'call_1', name: 'echo', arguments: '{"text":"one"}' }]) },
    { steps: [{ text: 'Thinking more. ' }, ...toolCallSteps([{ id: 'call_2', name: 'echo', arguments: '{"text":"two"}' }])] },
    { steps: textSteps('Both done.') },
  ])
  const frames = await run(client, 'twice')
  t.same(
    typesOf(frames),
    ['status:thinking', 'status:tool_call', 'status:tool_result', 'token', 'status:tool_call', 'status:tool_result', 'token', 'complete'],
  )
  t.equal(frames.at(-1)?.content, 'Thinking more. Both done.')
  const sessionId = frames[0]!.session_id
  scripted(up, [{ steps: textSteps('Next turn.') }])
  await run(client, 'and now?', sessionId)
  const history = up.requests.at(-1)!.body.messages as unknown[]
  for (const message of history) t.ok(validHistoryMessage.Check(message), 'OpenAI-format message')
  t.same(
    history.map((m: any) => m.role),
    ['system', 'user', 'assistant', 'tool', 'assistant', 'tool', 'assistant', 'user'],
  )
  t.match(history[4], { role: 'assistant', content: 'Thinking more. ', tool_calls: [{ id: 'call_2' }] })
})

t.test('invalid arguments and a throwing tool go back to the model as tool errors', async (t) => {
  const { up, client } = await setup(t)
  scripted(up, [
    {
      steps: toolCallSteps([
        { id: 'call_bad', name: 'echo', arguments: '{"text":42}' },
        { id: 'call_broken', name: 'broken', arguments: '{}' },
        { id: 'call_unknown', name: 'nope', arguments: '{}' },
      ]),
    },
    { steps: textSteps('Sorry.') },
  ])
  const frames = await run(client, 'break things')
  const results = Object.fromEntries(frames.filter((f) => f.content === 'tool_result').map((f) => [f.metadata?.call_id, f.metadata]))
  t.match(results.call_bad, { is_error: true, result: /text/ })
  t.match(results.call_broken, { is_error: true, result: /the tool broke/ })
  t.match(results.call_unknown, { is_error: true, result: /unknown tool/ })
  t.equal(frames.at(-1)?.metadata?.finish_reason, 'stop')
  const toolMessages = up.requests[1]!.body.messages.filter((m: any) => m.role === 'tool')
  t.equal(toolMessages.length, 3)
  for (const message of toolMessages) t.match(message.content, /^Error: /)
})

t.test('the round cap ends the run with finish_reason length and a reason', async (t) => {
  const { up, client } = await setup(t, { MAX_TOOL_ROUNDS: 2 })
  up.script((request) => ({ steps: toolCallSteps([{ id: `call_${request.index}`, name: 'echo', arguments: '{"text":"again"}' }]) }))
  const frames = await run(client, 'loop forever')
  const complete = frames.at(-1)!
  t.equal(complete.metadata?.finish_reason, 'length')
  t.match(complete.metadata?.reason, /MAX_TOOL_ROUNDS/)
  t.equal(up.requests.length, 3, 'initial request plus one per allowed round')
  t.equal(frames.filter((f) => f.content === 'tool_result').length, 2)
  // The history left behind must still be acceptable upstream: every tool call answered.
  scripted(up, [{ steps: textSteps('ok') }])
  await run(client, 'next', complete.session_id)
  const messages = up.requests.at(-1)!.body.messages
  const calls = messages.flatMap((m: any) => m.tool_calls ?? []).map((c: any) => c.id)
  const answered = messages.filter((m: any) => m.role === 'tool').map((m: any) => m.tool_call_id)
  t.same(answered.sort(), calls.sort())
})

t.test('cancel during a slow tool: its signal fires, the run ends at once, nothing after complete', async (t) => {
  let toolSignal: AbortSignal | undefined
  let toolStarted!: () => void
  const started = new Promise<void>((resolve) => (toolStarted = resolve))
  const slow = defineTool({
    name: 'slow',
    description: 'Takes a minute unless cancelled',
    parameters: Type.Object({}),
    run: (_args, { signal }) => {
      toolSignal = signal
      toolStarted()
      return new Promise((resolve, reject) => {
        const timer = setTimeout(resolve, 60_000, 'late')
        signal.addEventListener('abort', () => {
          clearTimeout(timer)
          reject(signal.reason)
        })
      })
    },
  })
  const { up, client } = await setup(t, {}, [slow])
  scripted(up, [{ steps: toolCallSteps([{ id: 'call_slow', name: 'slow', arguments: '{}' }]) }, { steps: textSteps('never') }])
  client.send({ type: 'chat', content: 'be slow' })
  const thinking = await client.next((f) => f.content === 'thinking')
  await started
  client.send({ type: 'cancel', session_id: thinking.session_id })
  const frames = await client.untilComplete()
  t.ok(toolSignal?.aborted, "the tool's signal fired")
  t.same(typesOf(frames).slice(-2), ['status:cancelled', 'complete'])
  t.equal(frames.at(-1)?.metadata?.finish_reason, 'cancelled')
  t.equal(up.requests.length, 1, 'the model is not asked again')
  client.send({ type: 'ping' })
  await client.nextOfType('pong')
  const afterComplete = client.frames.slice(client.frames.findIndex((f) => f.type === 'complete') + 1)
  t.same(typesOf(afterComplete), ['pong'], 'no run events after complete')
})

t.test('the offline mock model drives the whole tool loop', async (t) => {
  const { wsUrl } = await startApp(t, { MOCK_TOKEN_DELAY_MS: 0 })
  const client = await connect(t, wsUrl, bearer(signToken('bob')))
  const time = await run(client, 'what time is it?')
  t.same(typesOf(time).slice(0, 3), ['status:thinking', 'status:tool_call', 'status:tool_result'])
  t.match(time[1]?.metadata, { tool: 'get_current_time', arguments: { timezone: 'UTC' } })
  t.match(time[2]?.metadata, { is_error: false, result: { timezone: 'UTC' } })
  const sum = await run(client, 'calculate 2 + 3 * 4')
  t.match(sum[2]?.metadata, { tool: 'calculate', result: { result: 14 } })
  t.match(sum.at(-1)?.content, /14/)
})
