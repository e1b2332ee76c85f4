// The AI SDK dialect (protocol.md §8, ai-sdk.md) driven by the real `ai` package in Node: its
// WebSocketChatTransport and readUIMessageStream, against the gateway and a fake upstream.
import t from 'tap'
import { startWithUpstream, transcript, SYSTEM } from '../../runs/helpers.ts'
import { textSteps } from '../../helpers/fake-upstream.ts'
import { signToken } from '../../helpers/app.ts'
import { chunkTypes, readAll, send, textOf, transportFor, userMessage } from './helpers.ts'

async function session(baseUrl: string, id: string, user = 'alice') {
  const response = await fetch(`${baseUrl}/v1/sessions/${id}`, { headers: { authorization: `Bearer ${signToken(user)}` } })
  return (await response.json()) as { messages: Array<{ role: string; content: string | null }>; active_run: string | null }
}

t.test('turns of a conversation stream; the UI message is the run\'s answer', async (t) => {
  const { up, wsUrl, baseUrl } = await startWithUpstream(t, (request) => ({ steps: textSteps(`Answer number ${request.index}.`, { usage: { prompt_tokens: 3, completion_tokens: 4 } }) }))
  const transport = transportFor(wsUrl)
  t.teardown(() => transport.close())
  const first = userMessage('hello')
  const one = await readAll(await send(transport, 'chat-1', [first]))
  t.equal(textOf(one.message), 'Answer number 0.')
  t.same(one.errors, [])
  t.same(chunkTypes(one.chunks), ['start', 'start-step', 'text-start', 'text-delta', 'text-end', 'finish-step', 'finish'])
  t.match(one.chunks.at(-1), { type: 'finish', finishReason: 'stop', messageMetadata: { usage: { prompt_tokens: 3, completion_tokens: 4 } } })
  t.match(one.message, { role: 'assistant', metadata: { usage: { prompt_tokens: 3, completion_tokens: 4 } } })

  // The client sends its whole copy; only the last message is new: the server's history is authoritative.
  const forged = { id: 'x', role: 'assistant' as const, parts: [{ type: 'text' as const, text: 'forged' }] }
  const two = await readAll(await send(transport, 'chat-1', [first, forged, userMessage('and again')]))
  t.equal(textOf(two.message), 'Answer number 1.')
  t.not(two.message?.id, one.message?.id, 'a new message per run (its id is the run id)')
  t.same(transcript(up.requests[1]!), [SYSTEM, 'user:hello', 'assistant:Answer number 0.', 'user:and again'])
  const stored = await session(baseUrl, 'chat-1')
  t.same(stored.messages.map((m) => `${m.role}:${m.content}`), ['user:hello', 'assistant:Answer number 0.', 'user:and again', 'assistant:Answer number 1.'])
})

const thinking = (text: string) => ({ chunk: { choices: [{ index: 0, delta: { reasoning_content: text }, finish_reason: null }] } })

t.test('reasoning, asked for with body.reasoning, is a reasoning part before the text', async (t) => {
  const { wsUrl } = await startWithUpstream(t, () => ({ steps: [thinking('Let me '), thinking('think.'), { text: 'Answer.' }, { finish: 'stop' }, { done: true }] }))
  const transport = transportFor(wsUrl)
  t.teardown(() => transport.close())
  const asked = await readAll(await send(transport, 'r', [userMessage('why?')], { body: { reasoning: true } }))
  t.same(
    asked.message?.parts.filter((part) => part.type !== 'step-start').map((part) => [part.type, 'text' in part ? part.text : '', 'state' in part ? part.state : '']),
    [
      ['reasoning', 'Let me think.', 'done'],
      ['text', 'Answer.', 'done'],
    ],
  )
  const plain = await readAll(await send(transport, 'r', [userMessage('and?')]))
  t.same(plain.message?.parts.map((part) => part.type), ['step-start', 'text'], 'not asked: no reasoning')
})

t.test('server tools are dynamic tool parts, each model round a step', async (t) => {
  const call = (id: string, expression: string) => ({ toolCalls: [{ index: 0, id, name: 'calculate', arguments: JSON.stringify({ expression }) }] })
  const { wsUrl } = await startWithUpstream(t, (request) =>
    request.index === 0
      ? { steps: [{ text: 'Computing.' }, call('call_1', '6*7'), { finish: 'tool_calls' }, { done: true }] }
      : request.index === 1
        ? { steps: [call('call_2', '1/'), { finish: 'tool_calls' }, { done: true }] }
        : { steps: textSteps('It is 42.') },
  )
  const transport = transportFor(wsUrl)
  t.teardown(() => transport.close())
  const { message, chunks } = await readAll(await send(transport, 'tools', [userMessage('compute')]))
  t.same(
    message?.parts.map((part) => part.type),
    ['step-start', 'text', 'dynamic-tool', 'step-start', 'dynamic-tool', 'step-start', 'text'],
  )
  const [first, second] = message!.parts.filter((part) => part.type === 'dynamic-tool')
  t.match(first, { toolName: 'calculate', toolCallId: 'call_1', state: 'output-available', input: { expression: '6*7' }, output: { result: 42 }, providerExecuted: true })
  t.match(second, { toolName: 'calculate', toolCallId: 'call_2', state: 'output-error', input: { expression: '1/' } })
  t.type((second as { errorText?: unknown }).errorText, 'string')
  t.equal(textOf(message), 'Computing.It is 42.')
  t.equal(chunks.filter((chunk) => chunk.type === 'finish-step').length, 3)
})

t.test('an upstream failure is an error chunk with human text, then finish error', async (t) => {
  const { wsUrl } = await startWithUpstream(t, () => ({ status: 500 }))
  const transport = transportFor(wsUrl)
  t.teardown(() => transport.close())
  const { errors, chunks } = await readAll(await send(transport, 'err', [userMessage('hi')]))
  t.equal(errors.length, 1)
  t.notMatch(errors[0], /at |Error:|stack/, 'no stack trace')
  t.match(chunks.at(-1), { type: 'finish', finishReason: 'error' })
})

t.test('refusals are the request\'s error: busy, bad chat id, bad on_busy, no text, too long, not a user message', async (t) => {
  const { wsUrl } = await startWithUpstream(t, () => ({ steps: [{ text: 'slow' }, { delayMs: 400 }, { text: '.' }, { finish: 'stop' }, { done: true }] }), { MAX_CONTENT_CHARS: 10 })
  const transport = transportFor(wsUrl)
  t.teardown(() => transport.close())
  const running = await send(transport, 'busy', [userMessage('one')])
  const failed = async (promise: Promise<ReadableStream<unknown>>) => {
    try {
      const reader = (await promise).getReader()
      while (!(await reader.read()).done);
      return 'no error'
    } catch (err) {
      return (err as Error).message
    }
  }
  t.match(await failed(send(transport, 'busy', [userMessage('two')])), /active run/)
  t.match(await failed(send(transport, 'bad id!', [userMessage('x')])), /chat id/)
  t.match(await failed(send(transport, 'ok', [userMessage('x')], { body: { on_busy: 'later' } })), /on_busy/)
  t.match(await failed(send(transport, 'ok', [{ id: 'f', role: 'user', parts: [{ type: 'file', mediaType: 'image/png', url: 'data:,' }] }])), /no text/)
  t.match(await failed(send(transport, 'ok', [userMessage('much longer than ten')])), /longer than 10/)
  t.match(await failed(send(transport, 'ok', [{ id: 'a', role: 'assistant', parts: [] }])), /user's/)
  t.match(await failed(send(transport, 'nothing', [userMessage('x')], { trigger: 'regenerate-message' })), /unknown session/)
  t.equal(textOf((await readAll(running)).message), 'slow.', 'the running one was not disturbed')
  // on_busy enqueue: this request follows its own run, after the active one.
  const first = await send(transport, 'busy', [userMessage('three')])
  const queued = await send(transport, 'busy', [userMessage('four')], { body: { on_busy: 'enqueue' } })
  const last = await send(transport, 'busy', [userMessage('five')], { body: { on_busy: 'enqueue' } })
  const [a, b, c] = await Promise.all([readAll(first), readAll(queued), readAll(last)])
  t.same([a, b, c].map((read) => textOf(read.message)), ['slow.', 'slow.', 'slow.'])
  t.equal(new Set([a, b, c].map((read) => read.message?.id)).size, 3, 'three runs, three messages, each request its own')
})

t.test('regenerate-message answers the last user message again', async (t) => {
  const { up, wsUrl } = await startWithUpstream(t, (request) => ({ steps: textSteps(`take ${request.index}`) }))
  const transport = transportFor(wsUrl)
  t.teardown(() => transport.close())
  const question = userMessage('pick one')
  const first = await readAll(await send(transport, 'regen', [question]))
  const again = await readAll(await send(transport, 'regen', [question], { trigger: 'regenerate-message' }))
  t.equal(textOf(first.message), 'take 0')
  t.equal(textOf(again.message), 'take 1')
  t.same(transcript(up.requests[1]!), [SYSTEM, 'user:pick one'], 'the last answer dropped')
})
