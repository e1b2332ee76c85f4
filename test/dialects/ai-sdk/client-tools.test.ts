// Client tools in the AI SDK dialect (ai-sdk.md, protocol.md §7) with the real `ai` package:
// declared in body.client_tools, a call is the client's own typed tool part that its Chat runs
// (onToolCall), answered with addToolOutput and sent by sendAutomaticallyWhen; the run goes on
// in the same message. A reload while the call waits runs it after the resume; a replay of an
// answered call does not run it again. regenerate honours body.reasoning and body.client_tools.
import t from 'tap'
import { lastAssistantMessageIsCompleteWithToolCalls, type UIMessage } from 'ai'
import { textSteps, type RecordedRequest } from '../../helpers/fake-upstream.ts'
import { startWithUpstream, transcript } from '../../runs/helpers.ts'
import { waitFor } from '../../ws/util.ts'
import { NodeChat, readAll, send, textOf, toolParts, transportFor, userMessage } from './helpers.ts'

const clientTools = [{ name: 'get_location', description: 'where the user is', parameters: { type: 'object', properties: {} } }]
const PADDING = Array.from({ length: 30 }, (_, i) => ` w${i}`)

/** The model calls get_location once, then answers with what it said (slowly: padded, 20 ms a word). */
function asksLocation(slow = false) {
  return (request: RecordedRequest) => {
    const last = request.body.messages.at(-1)
    if (last.role === 'tool') return { steps: slow ? textSteps([`you are at ${last.content}`, ...PADDING], { delayMs: 20 }) : textSteps(`you are at ${last.content}`) }
    return { steps: [{ toolCalls: [{ index: 0, id: `call_${request.index}`, name: 'get_location', arguments: '{}' }] }, { finish: 'tool_calls' as const }, { done: true as const }] }
  }
}

const offered = (request: RecordedRequest | undefined) => (request?.body.tools ?? []).map((tool: { function: { name: string } }) => tool.function.name) as string[]

/** A Chat that runs get_location itself, as an app's onToolCall would, answering `output`. */
function locatingChat(id: string, wsUrl: string, output: (callId: string) => Parameters<NodeChat['addToolOutput']>[0]) {
  const transport = transportFor(wsUrl, 'alice', { client_tools: clientTools })
  const calls: string[] = []
  const chat: NodeChat = new NodeChat({
    id,
    transport,
    sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithToolCalls,
    onToolCall: ({ toolCall }) => {
      calls.push(toolCall.toolCallId)
      // Not awaited, as the SDK asks (the chat's job queue is busy with this very chunk).
      void chat.addToolOutput(output(toolCall.toolCallId))
    },
  })
  return { chat, calls, transport }
}

t.test('a client tool: a typed tool part the client runs; addToolOutput with sendAutomaticallyWhen goes on in the same message', async (t) => {
  const { up, wsUrl } = await startWithUpstream(t, asksLocation())
  const { chat, calls, transport } = locatingChat('where', wsUrl, (toolCallId) => ({ tool: 'get_location', toolCallId, output: { city: 'Lisbon' } }))
  t.teardown(() => transport.close())
  await chat.sendMessage({ text: 'where am I?' })
  await chat.idle()
  t.equal(chat.error, undefined)
  t.same(calls, ['call_0'], 'run by the client, once')
  t.ok(offered(up.requests[0]).includes('get_location'), 'offered to the model')
  t.same(chat.messages.map((message) => message.role), ['user', 'assistant'])
  t.same(chat.lastMessage?.parts.map((part) => part.type), ['step-start', 'tool-get_location', 'step-start', 'text'])
  const [part] = toolParts(chat.lastMessage)
  t.match(part, { state: 'output-available', output: { city: 'Lisbon' }, input: {} }, "the client's own output stays")
  t.notOk(part?.providerExecuted)
  t.match(transcript(up.requests[1]!).at(-1), /Lisbon/, 'the model got the output (as JSON)')
  t.match(textOf(chat.lastMessage), /^you are at .*Lisbon/)

  // At the chunk level: the call ends the SDK's turn; the answer's own output is not echoed back.
  const raw = transportFor(wsUrl, 'alice', { client_tools: clientTools })
  t.teardown(() => raw.close())
  const question = userMessage('and now?')
  const called = await readAll(await send(raw, 'raw', [question]))
  t.same(called.chunks.map((chunk) => chunk.type), ['start', 'start-step', 'tool-input-available', 'finish-step', 'finish'])
  t.same(called.chunks[2], { type: 'tool-input-available', toolCallId: 'call_2', toolName: 'get_location', input: {} }, 'no dynamic, not provider-executed')
  // As addToolOutput leaves the part.
  const parts = called.message!.parts.map((part) => (part.type === 'tool-get_location' ? { ...part, state: 'output-available', output: 'Porto' } : part))
  const answered = { ...called.message!, parts } as UIMessage
  const went = await readAll(await send(raw, 'raw', [question, answered]), answered)
  t.same(went.chunks.slice(0, 3).map((chunk) => chunk.type), ['start', 'start-step', 'text-start'], 'the model round after the call')
  t.notOk(went.chunks.some((chunk) => chunk.type.startsWith('tool-')), 'no tool chunk: the client has its output')
  t.match(toolParts(went.message), [{ state: 'output-available', output: 'Porto' }])
  t.equal(textOf(went.message), 'you are at "Porto"', 'a string output goes as it is')
})

t.test("addToolOutput with output-error: the model is told; the part keeps the client's error", async (t) => {
  const { up, wsUrl } = await startWithUpstream(t, asksLocation())
  const { chat, transport } = locatingChat('gps', wsUrl, (toolCallId) => ({ tool: 'get_location', toolCallId, state: 'output-error', errorText: 'GPS off' }))
  t.teardown(() => transport.close())
  await chat.sendMessage({ text: 'where am I?' })
  await chat.idle()
  t.match(toolParts(chat.lastMessage), [{ state: 'output-error', errorText: 'GPS off' }])
  t.match(transcript(up.requests[1]!).at(-1), /^tool:Error: GPS off/)
})

t.test('a reload while the call waits: the resumed Chat runs it and goes on; a later replay does not run it again', async (t) => {
  const { wsUrl } = await startWithUpstream(t, asksLocation(true))
  const first = transportFor(wsUrl, 'alice', { client_tools: clientTools })
  const called = await readAll(await send(first, 'reloaded', [userMessage('where am I?')]))
  t.match(toolParts(called.message), [{ state: 'input-available' }])
  first.close()

  const { chat, calls, transport } = locatingChat('reloaded', wsUrl, (toolCallId) => ({ tool: 'get_location', toolCallId, output: 'Faro' }))
  t.teardown(() => transport.close())
  // Resumed, run, answered and gone on: resumeStream() resolves at the end of all that.
  const resumed = chat.resumeStream()
  await waitFor(() => textOf(chat.lastMessage) !== '', 5000, 'the answer streaming')
  t.same(calls, ['call_0'], 'the replayed call, still waiting, is run by the resumed page')

  // Another page resumes while the answer streams: that call is done, it must not run again.
  const other = locatingChat('reloaded', wsUrl, (toolCallId) => ({ tool: 'get_location', toolCallId, output: 'elsewhere' }))
  t.teardown(() => other.transport.close())
  await other.chat.resumeStream()
  await resumed
  t.same(other.calls, [], 'not run again')
  t.match(toolParts(other.chat.lastMessage), [{ type: 'tool-get_location', state: 'output-available', output: 'Faro', providerExecuted: true }])
  t.equal(textOf(other.chat.lastMessage), `you are at "Faro"${PADDING.join('')}`)
  t.equal(textOf(chat.lastMessage), `you are at "Faro"${PADDING.join('')}`)
})

t.test('body.client_tools is checked as chat.client_tools; regenerate honours it and body.reasoning', async (t) => {
  const thinking = (text: string) => ({ chunk: { choices: [{ index: 0, delta: { reasoning_content: text }, finish_reason: null }] } })
  const { up, wsUrl } = await startWithUpstream(t, () => ({ steps: [thinking('Hmm.'), { text: 'Answer.' }, { finish: 'stop' }, { done: true }] }))
  const failed = async (body: object) => (await readAll(await send(transportFor(wsUrl, 'alice', body), 'checked', [userMessage('hi')]))).errors
  t.match(await failed({ client_tools: 'get_location' }), [/body.client_tools/])
  t.match(await failed({ client_tools: [{ name: 'bad name!', parameters: { type: 'object' } }] }), [/body.client_tools/])
  t.match(await failed({ client_tools: [{ name: 'calculate', parameters: { type: 'object' } }] }), [/calculate is a server tool's name/])

  const transport = transportFor(wsUrl)
  t.teardown(() => transport.close())
  const question = userMessage('pick one')
  const first = await readAll(await send(transport, 'regen', [question]))
  t.same(first.message?.parts.map((part) => part.type), ['step-start', 'text'], 'no reasoning asked')
  t.same(offered(up.requests[0]).includes('get_location'), false)
  const again = await readAll(await send(transport, 'regen', [question], { trigger: 'regenerate-message', body: { reasoning: true, client_tools: clientTools } }))
  t.same(again.message?.parts.map((part) => part.type), ['step-start', 'reasoning', 'text'], 'reasoning, asked by the regenerate')
  t.ok(offered(up.requests[1]).includes('get_location'), 'client tools of the regenerate offered')
  const refused = await readAll(await send(transport, 'regen', [question], { trigger: 'regenerate-message', body: { client_tools: [{ name: 'calculate', parameters: { type: 'object' } }] } }))
  t.match(refused.errors, [/server tool's name/], 'checked for a regenerate too')
})
