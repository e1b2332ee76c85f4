// Our TypeBox schemas of the SDK's request frames refuse what the SDK's own validator refuses
// (safeValidateWebSocketChatTransportRequest), and the translator's chunks pass the SDK's
// UIMessageChunk schema as its transport checks them.
import t from 'tap'
import { safeValidateWebSocketChatTransportRequest } from 'ai'
import { parseRequest } from '../../../src/dialects/ai-sdk/frames.ts'
import { RunTranslator, type RunFrame } from '../../../src/dialects/ai-sdk/run-translator.ts'

const user = { id: 'u', role: 'user', parts: [{ type: 'text', text: 'hi' }] }
const send = { type: 'send', requestId: 'r', id: 'c', trigger: 'submit-message', messageId: undefined, messages: [user], headers: {}, body: {}, metadata: undefined }
const resume = { type: 'resume', requestId: 'r', id: 'c', headers: {}, body: {} }

const cases: Array<[string, unknown]> = [
  ['send', send],
  ['send with a messageId and metadata', { ...send, messageId: 'm', metadata: { any: 1 } }],
  ['regenerate', { ...send, trigger: 'regenerate-message' }],
  ['assistant message with no parts', { ...send, messages: [user, { id: 'a', role: 'assistant', parts: [] }] }],
  ['other part kinds', { ...send, messages: [{ id: 'u', role: 'user', parts: [{ type: 'text', text: 'x' }, { type: 'file', mediaType: 'image/png', url: 'data:,' }] }] }],
  ['resume', resume],
  ['resume with lastSequence', { ...resume, lastSequence: 3 }],
  ['abort', { type: 'abort', requestId: 'r' }],
  ['not an object', [1]],
  ['no type', { requestId: 'r' }],
  ['unknown type', { ...send, type: 'sned' }],
  ['abort without requestId', { type: 'abort' }],
  ['numeric requestId', { ...send, requestId: 1 }],
  ['headers not strings', { ...send, headers: { a: 1 } }],
  ['body an array', { ...send, body: [] }],
  ['body missing', { ...resume, body: undefined }],
  ['negative lastSequence', { ...resume, lastSequence: -1 }],
  ['fractional lastSequence', { ...resume, lastSequence: 1.5 }],
  ['unknown trigger', { ...send, trigger: 'resume-stream' }],
  ['numeric messageId', { ...send, messageId: 4 }],
  ['no messages', { ...send, messages: [] }],
  ['user message without parts', { ...send, messages: [{ id: 'u', role: 'user', parts: [] }] }],
  ['unknown role', { ...send, messages: [{ ...user, role: 'tool' }] }],
  ['text part without text', { ...send, messages: [{ id: 'u', role: 'user', parts: [{ type: 'text' }] }] }],
  ['message without id', { ...send, messages: [{ role: 'user', parts: user.parts }] }],
]

t.test('the same verdict as the SDK validator', async (t) => {
  for (const [name, value] of cases) {
    const theirs = await safeValidateWebSocketChatTransportRequest({ value: JSON.parse(JSON.stringify(value)) })
    t.equal(parseRequest(JSON.stringify(value)) !== undefined, theirs.success, name)
  }
  t.equal(parseRequest('{not json'), undefined, 'not JSON')
})

const run = 'run-1'
const status = (content: string, metadata: Record<string, unknown> = {}) => ({ type: 'status', session_id: 's', content, metadata: { run_id: run, ...metadata } })
const complete = (finish_reason: string, extra: Record<string, unknown> = {}) => ({ type: 'complete', session_id: 's', content: '', metadata: { run_id: run, finish_reason, ...extra } })

function chunksOf(frames: unknown[]): Array<Record<string, unknown>> {
  const translator = new RunTranslator()
  return frames.flatMap((frame, i) => translator.translate({ ...(frame as object), seq: i + 1 } as RunFrame).chunks) as Array<Record<string, unknown>>
}

t.test('finish reasons; cancelled is one abort; queued and progress say nothing', async (t) => {
  for (const [ours, theirs] of [['stop', 'stop'], ['length', 'length'], ['content_filter', 'content-filter'], ['error', 'error'], ['interrupted', 'error']] as const) {
    t.match(chunksOf([status('thinking'), complete(ours)]).at(-1), { type: 'finish', finishReason: theirs }, ours)
  }
  t.same(chunksOf([status('thinking'), complete('stop')]).at(-1), { type: 'finish', finishReason: 'stop' }, 'no usage: no metadata')
  const token = { type: 'token', session_id: 's', content: 'x', metadata: { run_id: run } }
  t.same(
    chunksOf([status('queued', { position: 1 }), status('thinking'), token, status('tool_progress', { tool: 't', call_id: 'c', progress: 1 }), status('cancelled'), complete('cancelled', { reason: 'cancel' })]).map((c) => c.type),
    ['start', 'start-step', 'text-start', 'text-delta', 'text-end', 'abort', 'finish-step'],
    'abort once, at status:cancelled; then no finish',
  )
  t.same(chunksOf([status('thinking'), complete('cancelled', { reason: 'deleted' })]).slice(-2), [{ type: 'finish-step' }, { type: 'abort', reason: 'deleted' }], 'no status:cancelled: the abort says why')
  t.same(chunksOf([status('thinking'), complete('cancelled')]).at(-1), { type: 'abort', reason: 'cancelled' })
  const reasoning = { type: 'reasoning', session_id: 's', content: 'r', metadata: { run_id: run } }
  t.same(
    chunksOf([status('thinking'), token, reasoning, token]).map((c) => c.type),
    ['start', 'start-step', 'text-start', 'text-delta', 'text-end', 'reasoning-start', 'reasoning-delta', 'reasoning-end', 'text-start', 'text-delta'],
    'text and reasoning blocks close each other',
  )
  const result = status('tool_result', { tool: 't', call_id: 'c', result: 'plain text failure', is_error: true })
  t.match(chunksOf([result]), [{ type: 'tool-output-error', errorText: 'plain text failure' }], 'a string error is the text itself')
  const structured = status('tool_result', { tool: 't', call_id: 'c', result: { error: 'no' }, is_error: true })
  t.match(chunksOf([structured]), [{ type: 'tool-output-error', errorText: '{"error":"no"}' }], 'any other, as JSON')
})
