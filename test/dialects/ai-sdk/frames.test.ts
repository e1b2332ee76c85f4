// Our TypeBox schemas of the SDK's request frames refuse what the SDK's own validator refuses
// (safeValidateWebSocketChatTransportRequest), tool parts included, and the translator's
// chunks pass the SDK's UIMessageChunk schema as its transport checks them; its turn ends
// while a run waits on the client.
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
  ...toolCases(),
]

/** Tool parts by state, as the SDK's Chat sends them back, and malformed ones. */
function toolCases(): Array<[string, unknown]> {
  const dynamic = { type: 'dynamic-tool', toolName: 't', toolCallId: 'c', input: {}, providerExecuted: true }
  const typed = { type: 'tool-get_location', toolCallId: 'c', input: {} }
  const withParts = (...parts: unknown[]) => ({ ...send, messages: [user, { id: 'a', role: 'assistant', parts: [{ type: 'step-start' }, ...parts] }] })
  return [
    ['approval asked', withParts({ ...dynamic, state: 'approval-requested', approval: { id: 'c' } })],
    ['approval answered', withParts({ ...dynamic, state: 'approval-responded', approval: { id: 'c', approved: false, reason: 'no' } })],
    ['approved and run', withParts({ ...dynamic, state: 'output-available', output: { ok: 1 }, approval: { id: 'c', approved: true } })],
    ['denied', withParts({ ...dynamic, state: 'output-denied', approval: { id: 'c', approved: false } })],
    ['client tool called', withParts({ ...typed, state: 'input-available' })],
    ['client tool streaming', withParts({ ...typed, state: 'input-streaming' })],
    ['client tool answered', withParts({ ...typed, state: 'output-available', output: 'Lisbon' })],
    ['client tool failed', withParts({ ...typed, state: 'output-error', errorText: 'GPS off' })],
    ['unknown tool state', withParts({ ...typed, state: 'done' })],
    ['approval answered without its answer', withParts({ ...dynamic, state: 'approval-responded', approval: { id: 'c' } })],
    ['approval answered without approval', withParts({ ...dynamic, state: 'approval-responded' })],
    ['denied but approved', withParts({ ...dynamic, state: 'output-denied', approval: { id: 'c', approved: true } })],
    ['error without its text', withParts({ ...typed, state: 'output-error' })],
    ['dynamic tool without a name', withParts({ ...dynamic, toolName: undefined, state: 'input-available' })],
    ['tool part without a call id', withParts({ ...typed, toolCallId: 7, state: 'input-available' })],
  ]
}

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

const call = (content: string, metadata: Record<string, unknown> = {}) => status(content, { tool: 't', call_id: 'c', arguments: {}, ...metadata })

t.test('waiting on the client: the turn ends once every open call of the round waits; replays only for calls still pending', async (t) => {
  const required = call('approval_required', { expires_at: 'x' })
  t.same(
    chunksOf([status('thinking'), call('tool_call'), call('tool_call', { call_id: 'd' }), required]).map((c) => c.type),
    ['start', 'start-step', 'tool-input-available', 'tool-input-available', 'tool-approval-request'],
    'another call of the round still runs: the turn goes on',
  )
  const translator = new RunTranslator()
  const ends = [status('thinking'), call('tool_call', { call_id: 'd' }), call('tool_call'), required, call('tool_result', { call_id: 'd', result: 1, is_error: false })].map(
    (frame, i) => translator.translate({ ...frame, seq: i + 1 } as RunFrame).end,
  )
  t.same(ends, [undefined, undefined, undefined, undefined, 'turn'], 'its result comes: now the turn ends')
  t.ok(translator.waitsOn(['c']))
  t.notOk(translator.waitsOn([]), 'no call named')
  t.notOk(translator.waitsOn(['d']), 'that one is done')

  const client = call('tool_call', { executor: 'client' })
  const replay = (pending: string[], frames: unknown[]) => {
    const replayed = new RunTranslator({ stillPending: new Set(pending) })
    return frames.map((frame, i) => replayed.translate({ ...(frame as object), seq: i + 1 } as RunFrame))
  }
  t.match(replay(['c'], [status('thinking'), client]).at(-1), { chunks: [{ type: 'tool-input-available', toolName: 't' }, { type: 'finish-step' }, { type: 'finish', finishReason: 'tool-calls' }], end: 'turn' })
  t.notMatch(replay(['c'], [client])[0]?.chunks[0], { providerExecuted: true }, 'still waiting: the client runs it')
  const answered = replay([], [client, call('tool_result', { result: 'no', is_error: true })])
  t.same(answered[0], { chunks: [{ type: 'tool-input-available', toolCallId: 'c', toolName: 't', input: {}, providerExecuted: true }] }, 'answered since: not run again, no turn end')
  t.same(answered[1]?.chunks, [{ type: 'tool-output-error', toolCallId: 'c', errorText: 'no' }], "the client tool's typed part")

  t.same(
    chunksOf([status('thinking'), client, status('cancelled'), complete('cancelled')]).map((c) => c.type),
    ['start', 'start-step', 'tool-input-available', 'finish-step', 'finish', 'abort'],
    'cancelled while waiting: no second turn end',
  )
  t.same(chunksOf([call('approval_resolved', { approved: false })]), [], 'a request this stream never saw: no response chunk')
  t.same(
    chunksOf([status('thinking'), call('tool_call'), call('tool_result', { result: 1, is_error: false }), complete('stop')]).map((c) => c.type).slice(-4),
    ['finish-step', 'start-step', 'finish-step', 'finish'],
    'a model round after tools is a step, even an empty one',
  )
  const resumed = new RunTranslator()
  resumed.resumeWith(new Map([['gone', 'approval']]))
  t.same(resumed.translate({ ...status('thinking'), seq: 1 } as RunFrame).end, undefined, 'answers of calls it never saw change nothing')
})
