// What a `send` asks, read from the SDK's frame: a user message, or the answers an assistant
// message carries (approvals answered, client tools' outputs), each checked as /ws/agent's frames.
import t from 'tap'
import { readSend } from '../../../src/dialects/ai-sdk/send-options.ts'
import type { SendRequest } from '../../../src/dialects/ai-sdk/frames.ts'

const frame = (parts: unknown[], role = 'assistant'): SendRequest =>
  ({ type: 'send', requestId: 'r', id: 's', trigger: 'submit-message', messages: [{ id: 'a', role, parts }], headers: {}, body: {} }) as SendRequest
const typed = (state: string, fields: Record<string, unknown> = {}) => ({ type: 'tool-get_location', toolCallId: 'c', input: {}, state, ...fields })
const refusal = (request: SendRequest, max = 100) => {
  try {
    readSend(request, max)
    return 'accepted'
  } catch (err) {
    return `${(err as { code: string }).code}: ${(err as Error).message}`
  }
}

t.test('answers: approvals with their reason, client outputs as text; answered server tools are no answers', async (t) => {
  const approval = { type: 'dynamic-tool', toolName: 't', toolCallId: 'a', input: {}, providerExecuted: true, state: 'approval-responded', approval: { id: 'a', approved: false, reason: 'no' } }
  const ran = { type: 'dynamic-tool', toolName: 't', toolCallId: 'b', input: {}, providerExecuted: true, state: 'output-available', output: 1 }
  t.same(readSend(frame([{ type: 'step-start' }, approval, ran, typed('output-available', { output: { city: 'Lisbon' } }), typed('output-error', { toolCallId: 'd', errorText: 'GPS off' }), typed('output-available', { toolCallId: 'e' })]), 100), {
    kind: 'answers',
    answers: [
      { callId: 'a', answer: { kind: 'approval', approved: false, reason: 'no' } },
      { callId: 'c', answer: { kind: 'client_tool', output: '{"city":"Lisbon"}', isError: false } },
      { callId: 'd', answer: { kind: 'client_tool', output: 'GPS off', isError: true } },
      { callId: 'e', answer: { kind: 'client_tool', output: 'null', isError: false } },
    ],
  })
  t.same(readSend(frame([{ ...approval, approval: { id: 'a', approved: true } }]), 100), { kind: 'answers', answers: [{ callId: 'a', answer: { kind: 'approval', approved: true } }] }, 'no reason: none sent')
})

t.test('refusals: too long, nothing answered, not a user message', async (t) => {
  const reason = { type: 'dynamic-tool', toolName: 't', toolCallId: 'a', input: {}, state: 'approval-responded', approval: { id: 'a', approved: false, reason: 'x'.repeat(501) } }
  t.match(refusal(frame([reason])), /^invalid_message: an approval's reason is longer than 500/)
  t.match(refusal(frame([typed('output-available', { output: 'é'.repeat(11) })]), 10), /^payload_too_large: a tool output is longer than 10/)
  t.equal(refusal(frame([typed('output-available', { output: 'é'.repeat(10) })]), 10), 'accepted', 'counted in characters')
  t.match(refusal(frame([typed('input-available')])), /^invalid_message: the last message must be the user's, or the assistant's with tool calls answered/)
  t.match(refusal(frame([{ type: 'text', text: 'be brief' }], 'system')), /last message must be the user's/)
  t.match(refusal({ ...frame([]), body: { client_tools: [{ name: 'x' }] } }), /^invalid_message: body.client_tools/)
})
