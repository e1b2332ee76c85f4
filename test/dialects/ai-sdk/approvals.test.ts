// Tool approvals in the AI SDK dialect (ai-sdk.md, protocol.md §7) with the real `ai` package:
// status:approval_required ends the SDK's turn with a tool-approval-request; the SDK's Chat
// answers with addToolApprovalResponse (sendAutomaticallyWhen) and the same run goes on in the
// same message; denied calls are tool-output-denied; a resume replays the request; an answer
// nobody waits for any more is an error chunk, and the stream still follows the run.
import t from 'tap'
import { Type } from '@sinclair/typebox'
import { lastAssistantMessageIsCompleteWithApprovalResponses, type UIMessage } from 'ai'
import { defineTool } from '../../../src/agent/tools/index.ts'
import { signToken } from '../../helpers/app.ts'
import { textSteps, type RecordedRequest } from '../../helpers/fake-upstream.ts'
import { startWithUpstream, transcript } from '../../runs/helpers.ts'
import { waitFor } from '../../ws/util.ts'
import { chunkTypes, NodeChat, readAll, send, textOf, toolParts, transportFor, userMessage } from './helpers.ts'

let runs = 0
const transfer = defineTool({
  name: 'transfer',
  description: 'moves money',
  parameters: Type.Object({ amount: Type.Number() }),
  needsApproval: true,
  run: ({ amount }) => {
    runs++
    return { moved: amount }
  },
})

/** What a slow answer adds after the result: long enough to be caught streaming. */
const PADDING = Array.from({ length: 30 }, (_, i) => ` w${i}`)

/** The model calls `transfer` once, then answers with what its result said (slowly: padded, 20 ms a word). */
function callsTransfer(slow = false) {
  return (request: RecordedRequest) => {
    const last = request.body.messages.at(-1)
    if (last.role === 'tool') return { steps: slow ? textSteps([`result: ${last.content}`, ...PADDING], { delayMs: 20 }) : textSteps(`result: ${last.content}`) }
    return { steps: [{ toolCalls: [{ index: 0, id: `call_${request.index}`, name: 'transfer', arguments: '{"amount":500}' }] }, { finish: 'tool_calls' as const }, { done: true as const }] }
  }
}

/** The client's message with the approval of `callId` answered, as addToolApprovalResponse leaves it. */
function answered(message: UIMessage, callId: string, approved: boolean, reason?: string): UIMessage {
  const parts = message.parts.map((part) =>
    part.type === 'dynamic-tool' && part.toolCallId === callId && part.state === 'approval-requested'
      ? { ...part, state: 'approval-responded' as const, approval: { id: callId, approved, ...(reason ? { reason } : {}) } }
      : part,
  )
  return { ...message, parts } as UIMessage
}

async function session(baseUrl: string, id: string) {
  const response = await fetch(`${baseUrl}/v1/sessions/${id}`, { headers: { authorization: `Bearer ${signToken('alice')}` } })
  return (await response.json()) as { active_run: string | null; pending: Array<{ call_id: string; kind: string }>; messages: Array<{ role: string; content: string }> }
}

t.test('approval_required ends the turn with tool-approval-request; the next send answers it and the run goes on', async (t) => {
  runs = 0
  const { baseUrl, wsUrl } = await startWithUpstream(t, callsTransfer(), {}, { tools: [transfer] })
  const transport = transportFor(wsUrl)
  t.teardown(() => transport.close())
  const question = userMessage('pay rent')
  const asked = await readAll(await send(transport, 'pay', [question]))
  t.same(asked.chunks.map((chunk) => chunk.type), ['start', 'start-step', 'tool-input-available', 'tool-approval-request', 'finish-step', 'finish'])
  t.match(asked.chunks[3], { approvalId: 'call_0', toolCallId: 'call_0' })
  t.match(asked.chunks.at(-1), { finishReason: 'tool-calls' })
  t.match(toolParts(asked.message), [{ type: 'dynamic-tool', toolName: 'transfer', state: 'approval-requested', approval: { id: 'call_0' }, input: { amount: 500 } }])
  t.equal(runs, 0, 'not run before it is approved')
  const waiting = await session(baseUrl, 'pay')
  t.ok(waiting.active_run, 'the run waits, past the end of the SDK turn')
  t.match(waiting.pending, [{ call_id: 'call_0', kind: 'approval' }])

  const yes = answered(asked.message!, 'call_0', true)
  const went = await readAll(await send(transport, 'pay', [question, yes]), yes)
  t.same(went.errors, [])
  t.same(
    chunkTypes(went.chunks),
    ['start', 'tool-approval-response', 'tool-output-available', 'start-step', 'text-start', 'text-delta', 'text-end', 'finish-step', 'finish'],
    'the rest of the run, where the turn ended',
  )
  t.match(toolParts(went.message), [{ state: 'output-available', output: { moved: 500 }, approval: { id: 'call_0', approved: true } }])
  t.equal(textOf(went.message), 'result: {"moved":500}')
  t.equal(runs, 1)
  const done = await session(baseUrl, 'pay')
  t.equal(done.active_run, null)
  t.match(done.messages, [{ role: 'user', content: 'pay rent' }, { role: 'assistant', content: 'result: {"moved":500}' }], 'the same history as /ws/agent shows')
})

t.test("the SDK's Chat: addToolApprovalResponse with sendAutomaticallyWhen goes on in the same message; denied is output-denied and the model is told", async (t) => {
  runs = 0
  const { up, wsUrl } = await startWithUpstream(t, callsTransfer(), {}, { tools: [transfer] })
  const transport = transportFor(wsUrl)
  t.teardown(() => transport.close())
  const chat = new NodeChat({ id: 'chat-pay', transport, sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses })
  await chat.sendMessage({ text: 'pay rent' })
  t.match(toolParts(chat.lastMessage), [{ state: 'approval-requested', approval: { id: 'call_0' } }])
  t.equal(chat.status, 'ready', 'the turn is over while the run waits')
  await chat.addToolApprovalResponse({ id: 'call_0', approved: true })
  await chat.idle()
  t.equal(chat.error, undefined)
  t.same(chat.messages.map((message) => message.role), ['user', 'assistant'], 'one assistant message for the whole run')
  t.same(chat.lastMessage?.parts.map((part) => part.type), ['step-start', 'dynamic-tool', 'step-start', 'text'])
  t.match(toolParts(chat.lastMessage), [{ state: 'output-available', output: { moved: 500 } }])
  t.equal(textOf(chat.lastMessage), 'result: {"moved":500}')
  t.equal(runs, 1, 'run exactly once')

  await chat.sendMessage({ text: 'and the gas bill' })
  const denied = toolParts(chat.lastMessage)[0] as { approval: { id: string } }
  await chat.addToolApprovalResponse({ id: denied.approval.id, approved: false, reason: 'not now' })
  await chat.idle()
  t.match(toolParts(chat.lastMessage), [{ state: 'output-denied', approval: { approved: false, reason: 'not now' } }])
  t.equal(runs, 1, 'a denied call does not run')
  t.match(transcript(up.requests.at(-1)!).at(-1), /not run: the user denied it: not now/, 'the model is told')
  t.match(textOf(chat.lastMessage), /the user denied it: not now/)
})

t.test('a reload while the run waits: resume replays the request, the answer goes on; a resume later replays the answer through', async (t) => {
  runs = 0
  const { wsUrl } = await startWithUpstream(t, callsTransfer(true), {}, { tools: [transfer] })
  const first = transportFor(wsUrl)
  await readAll(await send(first, 'reload', [userMessage('pay rent')]))
  first.close()

  const second = transportFor(wsUrl)
  t.teardown(() => second.close())
  const chat = new NodeChat({ id: 'reload', transport: second, sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses })
  await chat.resumeStream()
  t.match(toolParts(chat.lastMessage), [{ state: 'approval-requested', approval: { id: 'call_0' } }], 'the request, replayed')
  t.equal(chat.status, 'ready')
  await chat.addToolApprovalResponse({ id: 'call_0', approved: true })

  // While the answer streams, another tab resumes: the approval is replayed through to its result.
  const third = transportFor(wsUrl)
  t.teardown(() => third.close())
  await waitFor(() => textOf(chat.lastMessage) !== '', 5000, 'the answer streaming')
  const replayed = await readAll((await third.reconnectToStream({ chatId: 'reload' }))!)
  await chat.idle()
  const types = replayed.chunks.map((chunk) => chunk.type)
  t.same(types.slice(0, 6), ['start', 'start-step', 'tool-input-available', 'tool-approval-request', 'tool-approval-response', 'tool-output-available'])
  t.notOk(replayed.chunks.some((chunk) => chunk.type === 'finish' && chunk.finishReason === 'tool-calls'), 'no turn end: that call is answered')
  t.match(toolParts(replayed.message), [{ state: 'output-available', approval: { approved: true } }])
  t.equal(textOf(replayed.message), `result: {"moved":500}${PADDING.join('')}`)
  t.equal(textOf(chat.lastMessage), `result: {"moved":500}${PADDING.join('')}`)
  t.equal(runs, 1)
})

t.test('an answer no call waits for: an error chunk, and the stream follows the run; once it is over, the request fails', async (t) => {
  runs = 0
  const { wsUrl } = await startWithUpstream(t, callsTransfer(true), {}, { tools: [transfer] })
  const a = transportFor(wsUrl)
  const b = transportFor(wsUrl)
  t.teardown(() => a.close())
  t.teardown(() => b.close())
  const question = userMessage('pay rent')
  const asked = await readAll(await send(a, 'race', [question]))
  const seen = await readAll((await b.reconnectToStream({ chatId: 'race' }))!)
  t.match(toolParts(seen.message), [{ state: 'approval-requested' }], 'both tabs show the request')

  const yes = answered(asked.message!, 'call_0', true)
  const winner = (await send(a, 'race', [question, yes])).getReader()
  while ((await winner.read()).value?.type !== 'tool-output-available');
  const lateAnswer = answered(seen.message!, 'call_0', true)
  const late = await readAll(await send(b, 'race', [lateAnswer]), lateAnswer)
  t.match(late.errors, [/not waiting any more/], 'human text')
  t.equal(textOf(late.message), `result: {"moved":500}${PADDING.join('')}`, 'and the rest of the run')
  t.match(toolParts(late.message), [{ state: 'output-available', output: { moved: 500 } }])
  t.equal(runs, 1)
  while (!(await winner.read()).done);

  t.match((await readAll(await send(b, 'race', [lateAnswer]))).errors, [/run is over/], 'no run any more: the request fails')
  t.match((await readAll(await send(b, 'nowhere', [lateAnswer]))).errors, [/unknown session/])
})

t.test('stop() while the answered run streams cancels that run', async (t) => {
  const { up, wsUrl } = await startWithUpstream(t, callsTransfer(true), {}, { tools: [transfer] })
  const transport = transportFor(wsUrl)
  t.teardown(() => transport.close())
  const question = userMessage('pay rent')
  const asked = await readAll(await send(transport, 'stop-it', [question]))
  const abort = new AbortController()
  const yes = answered(asked.message!, 'call_0', true)
  const reader = (await send(transport, 'stop-it', [question, yes], { abortSignal: abort.signal })).getReader()
  while ((await reader.read()).value?.type !== 'text-delta');
  abort.abort()
  const upstream = up.requests[1]!
  await upstream.closed
  t.ok(upstream.closedByClient, 'the model request of the answered run was closed')
})
