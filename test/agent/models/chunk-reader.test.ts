import t from 'tap'
import type { ChatCompletionChunk } from 'openai/resources/chat/completions'
import { createChunkReader, MAX_TOOL_CALLS_PER_ANSWER } from '../../../src/agent/models/chunk-reader.ts'
import { UpstreamError } from '../../../src/agent/upstream-error.ts'

/** A chunk as a server may send it, loose fields included. */
const chunk = (body: Record<string, unknown>) => body as unknown as ChatCompletionChunk
const delta = (value: Record<string, unknown>, finish: string | null = null) => chunk({ choices: [{ index: 0, delta: value, finish_reason: finish }] })

t.test('tool calls: by index, else by id, else the call before; dense slots', async (t) => {
  const reader = createChunkReader()
  t.same(reader.read(delta({ tool_calls: [{ index: 7, id: 'a', function: { name: 'f', arguments: '{' } }] })), [
    { type: 'tool_call', index: 0, id: 'a', name: 'f', arguments: '{' },
  ])
  t.same(reader.read(delta({ tool_calls: [{ function: { arguments: '}' } }] })), [{ type: 'tool_call', index: 0, arguments: '}' }], 'no index, no id: the call before')
  t.same(reader.read(delta({ tool_calls: [{ id: 'b', function: { name: 'g' } }] })), [{ type: 'tool_call', index: 1, id: 'b', name: 'g' }], 'by id')
  t.same(reader.read(delta({ tool_calls: [{ id: 'b' }] })), [{ type: 'tool_call', index: 1, id: 'b' }], 'the same id, the same slot')
  const fresh = createChunkReader()
  t.same(fresh.read(delta({ tool_calls: [{ function: { arguments: 'x' } }] })), [{ type: 'tool_call', index: 0, arguments: 'x' }], 'the very first fragment bare: slot 0')
})

t.test(`more than ${MAX_TOOL_CALLS_PER_ANSWER} tool calls in one answer is malformed`, async (t) => {
  const reader = createChunkReader()
  const calls = Array.from({ length: MAX_TOOL_CALLS_PER_ANSWER }, (_, index) => ({ index, id: `c${index}`, function: { name: 'f' } }))
  t.equal(reader.read(delta({ tool_calls: calls })).length, MAX_TOOL_CALLS_PER_ANSWER)
  t.throws(() => reader.read(delta({ tool_calls: [{ index: MAX_TOOL_CALLS_PER_ANSWER, id: 'one-too-many' }] })), new UpstreamError('malformed', `the model sent more than ${MAX_TOOL_CALLS_PER_ANSWER} tool calls in one answer`))
})

t.test('finish reasons: known ones kept, dialects mapped, failures thrown, others stop', async (t) => {
  const finish = (reason: string) => createChunkReader().read(delta({}, reason))
  t.same(finish('function_call'), [{ type: 'finish', reason: 'tool_calls' }])
  t.same(finish('model_length'), [{ type: 'finish', reason: 'length' }])
  t.same(finish('content_filter'), [{ type: 'finish', reason: 'content_filter' }])
  t.same(finish('eos_token'), [{ type: 'finish', reason: 'stop' }], 'unknown: the answer still ended')
  t.same(finish('constructor'), [{ type: 'finish', reason: 'stop' }], 'no prototype lookups')
  for (const reason of ['error', 'insufficient_system_resource']) {
    t.throws(() => finish(reason), new UpstreamError('server', `the model server broke off the answer (finish_reason ${reason})`))
  }
})

t.test('usage: top-level or x_groq, and only when both counts are numbers', async (t) => {
  const reader = createChunkReader()
  t.same(reader.read(chunk({ choices: [], usage: { prompt_tokens: 1, completion_tokens: 2 } })), [{ type: 'usage', usage: { prompt_tokens: 1, completion_tokens: 2 } }])
  t.same(reader.read(chunk({ choices: [], x_groq: { usage: { prompt_tokens: 3, completion_tokens: 4 } } })), [{ type: 'usage', usage: { prompt_tokens: 3, completion_tokens: 4 } }])
  t.same(reader.read(chunk({ choices: [], usage: { prompt_tokens: 3 } })), [], 'incomplete usage is dropped')
  t.same(reader.read(chunk({ usage: null })), [], 'no choices at all')
})

t.test('reasoning: either field, one of them when both; text halves wait for their pair', async (t) => {
  const reader = createChunkReader()
  t.same(reader.read(delta({ reasoning_content: 'a', reasoning: 'a' })), [{ type: 'reasoning', text: 'a' }])
  t.same(reader.read(delta({ reasoning: 'b', reasoning_content: null })), [{ type: 'reasoning', text: 'b' }])
  t.same(reader.read(delta({ reasoning: 42 })), [], 'not text')
  t.same(reader.read(delta({ reasoning: '\ud83e' })), [], 'half a character is held')
  t.same(reader.read(delta({ reasoning: '\udd14', content: 'x\ud83d' })), [{ type: 'reasoning', text: '\u{1f914}' }, { type: 'text', text: 'x' }])
  t.same(reader.read(delta({ content: '\ude00' })), [{ type: 'text', text: '\u{1f600}' }])
  t.same(reader.read(delta({ content: '\ude00y' })), [{ type: 'text', text: '\ufffdy' }], 'a low half alone')
  t.same(reader.read(delta({ reasoning: '\ud83e', content: '\ud83d' })), [])
  t.same(reader.end(), [{ type: 'reasoning', text: '\ufffd' }, { type: 'text', text: '\ufffd' }], 'halves never paired')
  t.same(reader.end(), [], 'nothing held any more')
})
