import t from 'tap'
import { getEventListeners } from 'node:events'
import { createMockModel } from '../../../src/agent/models/mock-model.ts'
import type { ModelChunk, ModelRequest, OpenAITool } from '../../../src/agent/models/types.ts'
import type { HistoryMessage } from '../../../src/store/types.ts'

const tool = (name: string): OpenAITool => ({ type: 'function', function: { name, description: name, parameters: {} } })
const bothTools = [tool('calculate'), tool('get_current_time')]

function request(messages: HistoryMessage[], tools: OpenAITool[] = bothTools, signal = new AbortController().signal): ModelRequest {
  return { messages, tools, signal }
}

async function collect(stream: AsyncIterable<ModelChunk[]>): Promise<ModelChunk[]> {
  const chunks: ModelChunk[] = []
  for await (const batch of stream) chunks.push(...batch)
  return chunks
}

const textOf = (chunks: ModelChunk[]) => chunks.map((c) => (c.type === 'text' ? c.text : '')).join('')

t.test('deterministic text: the same prompt streams the same words, then usage and stop', async (t) => {
  const model = createMockModel({ tokenDelayMs: 0 })
  t.equal(model.name, 'mock')
  const messages: HistoryMessage[] = [{ role: 'system', content: 'Be kind.' }, { role: 'user', content: 'hello there' }]
  const one = await collect(model.stream(request(messages)))
  const two = await collect(model.stream(request(messages)))
  t.same(one, two, 'deterministic')
  const text = textOf(one)
  t.equal(text, 'You said: "hello there". I am the offline mock model; set OPENAI_API_KEY to talk to a real one.')
  const words = one.filter((c) => c.type === 'text')
  t.ok(words.length > 5, 'streamed word by word')
  t.same(one.slice(-2), [
    { type: 'usage', usage: { prompt_tokens: 4, completion_tokens: words.length } },
    { type: 'finish', reason: 'stop' },
  ])
  t.not(textOf(await collect(model.stream(request([{ role: 'user', content: 'other' }])))), text, 'depends on the prompt')
})

t.test('tool-call triggers', async (t) => {
  const model = createMockModel({ tokenDelayMs: 0 })
  const calc = await collect(model.stream(request([{ role: 'user', content: 'Please calculate (2 + 3) * 4 for me' }])))
  t.match(calc, [{ type: 'tool_call', index: 0, id: /^call_mock_\d+$/, name: 'calculate', arguments: JSON.stringify({ expression: '(2 + 3) * 4' }) }, { type: 'finish', reason: 'tool_calls' }])
  t.equal(calc.length, 2)
  const whatIs = await collect(model.stream(request([{ role: 'user', content: "what's 6*7?" }])))
  t.match(whatIs[0], { type: 'tool_call', name: 'calculate', arguments: '{"expression":"6*7"}' })
  const time = await collect(model.stream(request([{ role: 'user', content: 'What TIME is it in Paris?' }])))
  t.match(time, [{ type: 'tool_call', name: 'get_current_time', arguments: '{"timezone":"UTC"}' }, { type: 'finish', reason: 'tool_calls' }])
  t.not((calc[0] as { id: string }).id, (time[0] as { id: string }).id, 'call ids are unique')

  const noTools = await collect(model.stream(request([{ role: 'user', content: 'what is 1+1' }], [])))
  t.match(textOf(noTools), /^You said: "what is 1\+1"/, 'without the tool it answers in text')
  const onlyCalc = await collect(model.stream(request([{ role: 'user', content: 'what time is it' }], [tool('calculate')])))
  t.equal(onlyCalc[0]?.type, 'text')
  const noDigits = await collect(model.stream(request([{ role: 'user', content: 'what is love' }])))
  t.equal(noDigits[0]?.type, 'text', 'no arithmetic without a number')
  const sometime = await collect(model.stream(request([{ role: 'user', content: 'sometimes' }])))
  t.equal(sometime[0]?.type, 'text', '"time" must be a word')
  for (const prompt of ['take your time', 'I had a great time', 'time flies']) {
    const said = await collect(model.stream(request([{ role: 'user', content: prompt }])))
    t.equal(said[0]?.type, 'text', `"${prompt}" asks nothing of the clock`)
  }
  for (const prompt of ["what's the time", 'the current time please', 'local time in Tokyo?', 'the time in Paris', 'time now?']) {
    const asked = await collect(model.stream(request([{ role: 'user', content: prompt }])))
    t.equal(asked[0]?.type, 'tool_call', `"${prompt}" asks the clock`)
  }
})

t.test('after tool results it answers from them', async (t) => {
  const model = createMockModel({ tokenDelayMs: 0 })
  const chunks = await collect(
    model.stream(
      request([
        { role: 'user', content: 'what is 6*7' },
        { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'calculate', arguments: '{}' } }] },
        { role: 'tool', tool_call_id: 'c1', content: '{"expression":"6*7","result":42}' },
        { role: 'tool', tool_call_id: 'c2', content: '{"timezone":"UTC","local":"noon"}' },
        { role: 'tool', tool_call_id: 'c3', content: 'Error: unknown tool' },
        { role: 'tool', tool_call_id: 'c4', content: '"plain"' },
        { role: 'tool', tool_call_id: 'c5', content: 'not json' },
      ]),
    ),
  )
  t.equal(textOf(chunks), 'The result is 42; it is noon; the tool failed: unknown tool; the tool said "plain"; the tool said not json.')
  t.match(chunks.at(-1), { type: 'finish', reason: 'stop' })
})

t.test('empty history and null content are handled', async (t) => {
  const model = createMockModel({ tokenDelayMs: 0 })
  t.match(textOf(await collect(model.stream(request([])))), /^You said: ""/)
  const chunks = await collect(model.stream(request([{ role: 'assistant', content: null }, { role: 'user', content: 'x' }])))
  t.match(chunks.at(-2), { type: 'usage', usage: { prompt_tokens: 1 } })
})

t.test('paced by tokenDelayMs, and an abort ends it with the signal reason', async (t) => {
  const model = createMockModel({ tokenDelayMs: 30 })
  const controller = new AbortController()
  const reason = new Error('stop now')
  const got: ModelChunk[] = []
  const started = performance.now()
  const consumed = (async () => {
    for await (const batch of model.stream(request([{ role: 'user', content: 'one two three four five' }], [], controller.signal))) {
      got.push(...batch)
      if (got.length === 2) controller.abort(reason)
    }
  })()
  await t.rejects(consumed, reason)
  t.equal(got.length, 2, 'nothing after the abort')
  t.ok(performance.now() - started >= 50, 'paced')

  const already = new AbortController()
  already.abort(reason)
  await t.rejects(collect(model.stream(request([{ role: 'user', content: 'hi' }], [], already.signal))), reason, 'aborted before the first token')
})

t.test('a stream waits on one abort listener, removed when it ends, early or not', async (t) => {
  const model = createMockModel({ tokenDelayMs: 1 })
  const signal = new AbortController().signal
  const listeners: number[] = []
  for await (const _ of model.stream(request([{ role: 'user', content: 'one two three four five' }], [], signal))) listeners.push(getEventListeners(signal, 'abort').length)
  t.ok(listeners.length > 5 && listeners.every((count) => count === 1), `one listener at every token (${listeners.join(', ')})`)
  t.equal(getEventListeners(signal, 'abort').length, 0, 'none once the stream ended')
  for await (const _ of model.stream(request([{ role: 'user', content: 'one two three' }], [], signal))) break
  t.equal(getEventListeners(signal, 'abort').length, 0, 'none once the caller stopped early')
})

t.test('an abort during a wait ends the wait with the signal reason', async (t) => {
  const model = createMockModel({ tokenDelayMs: 60_000 })
  const controller = new AbortController()
  const reason = new Error('cancelled mid-wait')
  setTimeout(() => controller.abort(reason), 10)
  await t.rejects(collect(model.stream(request([{ role: 'user', content: 'hi' }], [], controller.signal))), reason)
  t.equal(getEventListeners(controller.signal, 'abort').length, 0)
})
