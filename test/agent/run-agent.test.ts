import t from 'tap'
import { Type } from '@sinclair/typebox'
import { runAgent, createProgress, producedMessages, type AgentEvent, type AgentRunInput } from '../../src/agent/run-agent.ts'
import { createToolRegistry } from '../../src/agent/tools/registry.ts'
import type { Tool } from '../../src/agent/tools/types.ts'
import type { ModelChunk, ModelClient, ModelRequest } from '../../src/agent/models/types.ts'
import type { HistoryMessage } from '../../src/store/types.ts'
import { UpstreamError } from '../../src/agent/upstream-error.ts'

/** A model that answers round N with `rounds[N]` and records what it was asked. */
function scripted(rounds: ModelChunk[][], hooks: { onChunk?: (round: number, index: number) => void } = {}) {
  const requests: HistoryMessage[][] = []
  const model: ModelClient = {
    name: 'scripted',
    async *stream(request: ModelRequest) {
      const round = requests.length
      requests.push(structuredClone(request.messages))
      for (const [index, chunk] of (rounds[round] ?? []).entries()) {
        await Promise.resolve()
        hooks.onChunk?.(round, index)
        yield [chunk]
      }
    },
  }
  return { model, requests }
}

const echo: Tool = {
  name: 'echo',
  description: 'echoes its text',
  parameters: Type.Object({ text: Type.String() }),
  run: async (args) => ({ echoed: (args as { text: string }).text }),
}

function slowTool(started: () => void): Tool {
  return {
    name: 'slow',
    description: 'never finishes on its own',
    parameters: Type.Object({}),
    run: (_args, ctx) =>
      new Promise((_resolve, reject) => {
        started()
        ctx.signal.addEventListener('abort', () => reject(new Error('aborted')))
      }),
  }
}

function input(model: ModelClient, overrides: Partial<AgentRunInput> = {}) {
  const events: AgentEvent[] = []
  const run: AgentRunInput = {
    model,
    tools: createToolRegistry([echo]),
    messages: [{ role: 'system', content: 'sys' }, { role: 'user', content: 'hi' }],
    signal: new AbortController().signal,
    maxToolRounds: 5,
    sessionId: 's1',
    userId: 'alice',
    emit: async (event) => void events.push(event),
    ...overrides,
  }
  return { run, events }
}

const text = (value: string): ModelChunk => ({ type: 'text', text: value })
const usage = (prompt: number, completion: number): ModelChunk => ({ type: 'usage', usage: { prompt_tokens: prompt, completion_tokens: completion } })

t.test('text only: tokens relayed, history and usage recorded', async (t) => {
  const { model } = scripted([[text('Hel'), text('lo'), { type: 'finish', reason: 'stop' }, usage(3, 2)]])
  const { run, events } = input(model)
  const progress = createProgress()
  t.same(await runAgent(run, progress), { finishReason: 'stop' })
  t.same(events, [{ type: 'token', text: 'Hel' }, { type: 'token', text: 'lo' }])
  t.same(progress, { content: 'Hello', messages: [{ role: 'assistant', content: 'Hello' }], usage: { prompt_tokens: 3, completion_tokens: 2 }, pendingText: '', reasoning: '' })
  t.same(producedMessages(progress), [{ role: 'assistant', content: 'Hello' }])
})

t.test('finish length is reported; an empty answer leaves no history', async (t) => {
  const long = scripted([[text('cut'), { type: 'finish', reason: 'length' }]])
  t.same(await runAgent(input(long.model).run, createProgress()), { finishReason: 'length' })
  const empty = scripted([[{ type: 'finish', reason: 'stop' }]])
  const progress = createProgress()
  t.same(await runAgent(input(empty.model).run, progress), { finishReason: 'stop' })
  t.same(progress.messages, [])
  t.equal(progress.usage, undefined)
})

t.test('a tool round: calls assembled from fragments, run, results fed back, usage summed', async (t) => {
  const { model, requests } = scripted([
    [
      text('Let me check. '),
      { type: 'tool_call', index: 0, id: 'call_a', name: 'echo' },
      // The name is set once: a server that repeats it on every fragment does not make "echoecho".
      { type: 'tool_call', index: 0, id: 'call_a', name: 'echo', arguments: '{"text":' },
      { type: 'tool_call', index: 1, id: 'call_b', name: 'missing', arguments: 'not json' },
      { type: 'tool_call', index: 0, arguments: '"hi"}' },
      { type: 'finish', reason: 'tool_calls' },
      usage(10, 5),
    ],
    [text('Done.'), { type: 'finish', reason: 'stop' }, usage(20, 2)],
  ])
  const { run, events } = input(model)
  const progress = createProgress()
  t.same(await runAgent(run, progress), { finishReason: 'stop' })
  t.same(events.slice(0, 3), [
    { type: 'token', text: 'Let me check. ' },
    { type: 'tool_call', tool: 'echo', callId: 'call_a', arguments: { text: 'hi' }, executor: 'server' },
    { type: 'tool_call', tool: 'missing', callId: 'call_b', arguments: 'not json', executor: 'server' },
  ])
  // Tools run in parallel: results are reported as they finish.
  t.same(
    events.slice(3, 5).sort((a, b) => ('callId' in a && 'callId' in b ? a.callId.localeCompare(b.callId) : 0)),
    [
      { type: 'tool_result', tool: 'echo', callId: 'call_a', result: { echoed: 'hi' }, isError: false },
      { type: 'tool_result', tool: 'missing', callId: 'call_b', result: 'unknown tool: missing; available tools: echo', isError: true },
    ],
  )
  t.same(events.slice(5), [{ type: 'token', text: 'Done.' }])
  const toolCalls = [
    { id: 'call_a', type: 'function', function: { name: 'echo', arguments: '{"text":"hi"}' } },
    { id: 'call_b', type: 'function', function: { name: 'missing', arguments: 'not json' } },
  ]
  const produced = [
    { role: 'assistant', content: 'Let me check. ', tool_calls: toolCalls },
    { role: 'tool', tool_call_id: 'call_a', content: '{"echoed":"hi"}' },
    { role: 'tool', tool_call_id: 'call_b', content: 'Error: unknown tool: missing; available tools: echo' },
    { role: 'assistant', content: 'Done.' },
  ]
  t.same(progress.messages, produced)
  t.equal(progress.content, 'Let me check. Done.')
  t.same(progress.usage, { prompt_tokens: 30, completion_tokens: 7 })
  t.same(requests[1], [...run.messages, ...produced.slice(0, 3)], 'round two sees the calls and their results')
})

t.test('reasoning: relayed as reasoning events, kept apart from the answer and from history', async (t) => {
  const { model, requests } = scripted([
    [{ type: 'reasoning', text: 'Think' }, { type: 'tool_call', index: 0, id: 'c1', name: 'echo', arguments: '{"text":"x"}' }, { type: 'finish', reason: 'tool_calls' }],
    [{ type: 'reasoning', text: ' again' }, text('Hi'), { type: 'finish', reason: 'stop' }],
  ])
  const { run, events } = input(model)
  const progress = createProgress()
  t.same(await runAgent(run, progress), { finishReason: 'stop' })
  t.same(
    events.filter((event) => event.type === 'reasoning' || event.type === 'token'),
    [{ type: 'reasoning', text: 'Think' }, { type: 'reasoning', text: ' again' }, { type: 'token', text: 'Hi' }],
  )
  t.equal(progress.reasoning, 'Think again')
  t.equal(progress.content, 'Hi')
  t.notMatch(JSON.stringify(requests[1]), /Think/, 'reasoning is not sent back to the model')
  t.notMatch(JSON.stringify(progress.messages), /Think/, 'nor kept in history')
})

t.test('content_filter is passed through', async (t) => {
  const { model } = scripted([[text('Part'), { type: 'finish', reason: 'content_filter' }]])
  t.same(await runAgent(input(model).run, createProgress()), { finishReason: 'content_filter' })
})

t.test('usage: the last report of a request stands (running totals), requests add up', async (t) => {
  const { model } = scripted([
    [{ type: 'tool_call', index: 0, id: 'c1', name: 'echo', arguments: '{"text":"x"}' }, usage(4, 1), usage(4, 2), { type: 'finish', reason: 'tool_calls' }],
    [text('a'), usage(9, 1), text('b'), usage(9, 2), { type: 'finish', reason: 'stop' }],
  ])
  const progress = createProgress()
  await runAgent(input(model).run, progress)
  t.same(progress.usage, { prompt_tokens: 13, completion_tokens: 4 })
})

t.test('tool calls are taken in index order, whatever order they came in', async (t) => {
  const { model } = scripted([
    [
      { type: 'tool_call', index: 1, id: 'second', name: 'echo', arguments: '{"text":"2"}' },
      { type: 'tool_call', index: 0, id: 'first', name: 'echo', arguments: '{"text":"1"}' },
      { type: 'finish', reason: 'tool_calls' },
    ],
    [text('ok'), { type: 'finish', reason: 'stop' }],
  ])
  const { run, events } = input(model)
  await runAgent(run, createProgress())
  t.same(events.flatMap((event) => (event.type === 'tool_call' ? [event.callId] : [])), ['first', 'second'])
})

t.test('a tool call without text has null content; a tool returning undefined is null', async (t) => {
  const none: Tool = { name: 'none', description: 'returns nothing', parameters: Type.Object({}), run: async () => undefined }
  const { model } = scripted([
    [{ type: 'tool_call', index: 0, id: 'c1', name: 'none', arguments: '' }, { type: 'finish', reason: 'tool_calls' }],
    [text('ok'), { type: 'finish', reason: 'stop' }],
  ])
  const progress = createProgress()
  await runAgent(input(model, { tools: createToolRegistry([none]) }).run, progress)
  t.match(progress.messages[0], { role: 'assistant', content: null })
  t.same(progress.messages[1], { role: 'tool', tool_call_id: 'c1', content: 'null' })
})

t.test('MAX_TOOL_ROUNDS: the round cap ends the run with length and a reason', async (t) => {
  const call: ModelChunk[] = [text('thinking'), { type: 'tool_call', index: 0, id: 'c', name: 'echo', arguments: '{"text":"x"}' }, { type: 'finish', reason: 'tool_calls' }]
  const capped = scripted([call, call, call])
  const progress = createProgress()
  t.same(await runAgent(input(capped.model, { maxToolRounds: 1 }).run, progress), {
    finishReason: 'length',
    reason: 'stopped after 1 tool rounds (MAX_TOOL_ROUNDS)',
  })
  t.equal(capped.requests.length, 2)
  t.same(progress.messages.at(-1), { role: 'assistant', content: 'thinking' }, 'the text of the capped round is kept')

  const silent = scripted([[{ type: 'tool_call', index: 0, id: 'c', name: 'echo', arguments: '{}' }]])
  const quiet = createProgress()
  t.same((await runAgent(input(silent.model, { maxToolRounds: 0 }).run, quiet)).finishReason, 'length')
  t.same(quiet.messages, [], 'no text, no message')
})

t.test('a tool call without an id or a name is a malformed upstream answer', async (t) => {
  for (const fragment of [{ name: 'echo' }, { id: 'c1' }]) {
    const { model } = scripted([[{ type: 'tool_call', index: 0, ...fragment }, { type: 'finish', reason: 'tool_calls' }]])
    const error = await runAgent(input(model).run, createProgress()).catch((err: unknown) => err)
    t.ok(error instanceof UpstreamError)
    t.equal((error as UpstreamError).failure, 'malformed')
  }
})

t.test('cancelled mid-stream: throws the signal reason; the partial text is kept', async (t) => {
  const controller = new AbortController()
  const reason = new Error('cancel')
  const { model } = scripted([[text('one '), text('two '), text('three')]], {
    onChunk: (_round, index) => index === 2 && controller.abort(reason),
  })
  const progress = createProgress()
  const { run, events } = input(model, { signal: controller.signal })
  await t.rejects(runAgent(run, progress), reason)
  t.same(events, [{ type: 'token', text: 'one ' }, { type: 'token', text: 'two ' }], 'nothing emitted after the abort')
  t.equal(progress.pendingText, 'one two ')
  t.same(producedMessages(progress), [{ role: 'assistant', content: 'one two ' }])
})

t.test('a run relaying reads back to back gives the loop back, and a cancel that came meanwhile stops it', async (t) => {
  const controller = new AbortController()
  const reason = new Error('cancel while relaying')
  // A turn of its own: no stretch of relaying left over from the tests before.
  await new Promise(setImmediate)
  let loopRan = false
  setImmediate(() => {
    loopRan = true
    controller.abort(reason)
  })
  const busy: ModelClient = {
    name: 'busy',
    async *stream() {
      // Reads that are always ready, each costing a millisecond: only the relay budget lets the loop in.
      for (;;) {
        const until = performance.now() + 1
        while (performance.now() < until);
        yield [text('x')]
      }
    },
  }
  const { run, events } = input(busy, { signal: controller.signal })
  await t.rejects(runAgent(run, createProgress()), reason)
  t.ok(loopRan, 'the immediate ran while the run relayed')
  t.ok(events.length >= 1, `${events.length} tokens relayed before the cancel was seen`)
})

t.test('runs relaying at once share one budget per turn (each run counted only its own slice, so many runs held the loop for all their reads)', async (t) => {
  const RUNS = 10
  const READS = 4
  await new Promise(setImmediate)
  // Every run's next read becomes ready at once, as a hundred upstreams' reads in one turn.
  const gates = Array.from({ length: READS }, () => Promise.withResolvers<void>())
  const gated = (): ModelClient => ({
    name: 'gated',
    async *stream() {
      for (const gate of gates) {
        await gate.promise
        yield [text('x')]
      }
    },
  })
  let relayed = 0
  const runs = Array.from({ length: RUNS }, () => {
    const { run } = input(gated(), {
      // Half a millisecond to relay each read.
      emit: async () => {
        relayed++
        const until = performance.now() + 0.5
        while (performance.now() < until);
      },
    })
    return runAgent(run, createProgress())
  })
  const inOneStretch: number[] = []
  for (let read = 0; read < READS; read++) {
    await new Promise((resolve) => setTimeout(resolve, 10))
    await new Promise<void>((resolve) =>
      setTimeout(() => {
        const before = relayed
        // Runs after the timers phase, before anything deferred to the next turn.
        setImmediate(() => {
          inOneStretch.push(relayed - before)
          resolve()
        })
        gates[read]?.resolve()
      }, 0),
    )
  }
  await Promise.all(runs)
  t.equal(relayed, RUNS * READS, 'every read relayed')
  t.ok(Math.max(...inOneStretch) < RUNS, `at most ${Math.max(...inOneStretch)} of the ${RUNS} runs' ready reads relayed before the loop went on (${inOneStretch.join(', ')})`)
})

t.test('cancelled when the stream ends: the abort still wins', async (t) => {
  const controller = new AbortController()
  const { model } = scripted([[text('x')]], { onChunk: () => controller.abort(new Error('late')) })
  const model2: ModelClient = {
    name: 'quiet',
    async *stream(request) {
      for await (const batch of model.stream(request)) if (!request.signal.aborted) yield batch
    },
  }
  await t.rejects(runAgent(input(model2, { signal: controller.signal }).run, createProgress()), { message: 'late' })
})

t.test('cancelled during a tool: throws; every call of the round is answered in the history', async (t) => {
  const controller = new AbortController()
  const reason = new Error('cancel')
  const { model } = scripted([
    [
      { type: 'tool_call', index: 0, id: 'fast', name: 'echo', arguments: '{"text":"a"}' },
      { type: 'tool_call', index: 1, id: 'hang', name: 'slow', arguments: '{}' },
      { type: 'finish', reason: 'tool_calls' },
    ],
  ])
  const tools = createToolRegistry([echo, slowTool(() => setTimeout(() => controller.abort(reason), 10))])
  const progress = createProgress()
  const { run, events } = input(model, { tools, signal: controller.signal })
  await t.rejects(runAgent(run, progress), reason)
  t.same(events.map((e) => e.type), ['tool_call', 'tool_call', 'tool_result'], 'the fast tool reported, the hung one did not')
  t.same(producedMessages(progress), [
    progress.messages[0],
    { role: 'tool', tool_call_id: 'fast', content: 'Error: the run stopped before this tool finished' },
    { role: 'tool', tool_call_id: 'hang', content: 'Error: the run stopped before this tool finished' },
  ])
})

t.test('producedMessages answers only the calls left unanswered', async (t) => {
  const progress = createProgress()
  progress.messages.push(
    { role: 'assistant', content: null, tool_calls: [{ id: 'a', type: 'function', function: { name: 'x', arguments: '' } }, { id: 'b', type: 'function', function: { name: 'y', arguments: '' } }] },
    { role: 'tool', tool_call_id: 'a', content: '1' },
  )
  t.same(producedMessages(progress).slice(1), [
    { role: 'tool', tool_call_id: 'a', content: '1' },
    { role: 'tool', tool_call_id: 'b', content: 'Error: the run stopped before this tool finished' },
  ])
  t.same(producedMessages(createProgress()), [])
})
