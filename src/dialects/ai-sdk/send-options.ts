import { Type } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { ClientTool, ErrorCode, OnBusy, ProtocolError, SessionId } from '../../protocol/index.ts'
import type { ToolAnswer } from '../../store/types.ts'
import { isToolPart, textOf, type SendRequest, type ToolPart, type UiMessage } from './frames.ts'

/** As `tool_approval.reason` (protocol.md §2). */
const MAX_REASON_CHARS = 500

const sessionIdCheck = TypeCompiler.Compile(SessionId)
const onBusyCheck = TypeCompiler.Compile(OnBusy)
/** As `chat.client_tools` (protocol.md §2); the session service checks the rest. */
const clientToolsCheck = TypeCompiler.Compile(Type.Array(ClientTool, { maxItems: 32 }))

/** A tool call the client's assistant message answers. */
export interface Answer {
  callId: string
  answer: ToolAnswer
}

interface RunOptions {
  onBusy: OnBusy | undefined
  reasoning: boolean
  clientTools: ClientTool[] | undefined
}

/** What a `send` asks: a new user message, the last one answered again, or answers to waiting calls. */
export type SendAsk = ({ kind: 'chat'; content: string } & RunOptions) | ({ kind: 'regenerate' } & RunOptions) | { kind: 'answers'; answers: Answer[] }

/**
 * What a `send` asks, checked (ai-sdk.md, Client → server): the chat id is a session id; a
 * user's last message is the new user message (its text: earlier messages are the client's copy
 * of our history, never trusted); an assistant's last message carries answered tool calls.
 * `body.on_busy`, `body.reasoning` and `body.client_tools` as the fields of `chat`.
 */
export function readSend(request: SendRequest, maxContentChars: number): SendAsk {
  if (!sessionIdCheck.Check(request.id)) throw invalid('the chat id must be 1..128 characters of [A-Za-z0-9_-]')
  const body = request.body as { on_busy?: unknown; reasoning?: unknown; client_tools?: unknown }
  if (body.on_busy !== undefined && !onBusyCheck.Check(body.on_busy)) throw invalid('body.on_busy must be reject, interrupt or enqueue')
  if (body.client_tools !== undefined && !clientToolsCheck.Check(body.client_tools)) {
    throw invalid('body.client_tools must be a list of at most 32 tools, each {name, description?, parameters}')
  }
  const run: RunOptions = { onBusy: body.on_busy, reasoning: body.reasoning === true, clientTools: body.client_tools }
  if (request.trigger === 'regenerate-message') return { kind: 'regenerate', ...run }
  const last = request.messages.at(-1) as UiMessage
  const answers = last.role === 'assistant' ? answersOf(last, maxContentChars) : []
  if (answers.length > 0) return { kind: 'answers', answers }
  if (last.role !== 'user') throw invalid("the last message must be the user's, or the assistant's with tool calls answered (addToolApprovalResponse, addToolOutput)")
  const content = textOf(last)
  if (content === '') throw invalid('the last message has no text')
  if (codePoints(content, maxContentChars) > maxContentChars) throw new ProtocolError(ErrorCode.payloadTooLarge, `content is longer than ${maxContentChars} characters`)
  return { kind: 'chat', content, ...run }
}

/**
 * The answers an assistant message carries: approvals answered (`addToolApprovalResponse`:
 * state `approval-responded`) and client tools' outputs (`addToolOutput`: an output on a part
 * that is not provider-executed). Calls answered by an earlier `send` are among them too: the
 * connection keeps those still waiting.
 */
function answersOf(message: UiMessage, maxContentChars: number): Answer[] {
  const answers: Answer[] = []
  for (const part of message.parts) {
    if (!isToolPart(part)) continue
    const tool = part as ToolPart
    if (tool.state === 'approval-responded') {
      const { approved, reason } = tool.approval
      if (reason !== undefined && reason.length > MAX_REASON_CHARS) throw invalid(`an approval's reason is longer than ${MAX_REASON_CHARS} characters`)
      answers.push({ callId: tool.toolCallId, answer: { kind: 'approval', approved, ...(reason === undefined ? {} : { reason }) } })
    } else if ((tool.state === 'output-available' || tool.state === 'output-error') && tool.providerExecuted !== true) {
      // tool_output carries text: any other output goes as its JSON.
      const output = tool.state === 'output-error' ? tool.errorText : typeof tool.output === 'string' ? tool.output : JSON.stringify(tool.output ?? null)
      if (codePoints(output, maxContentChars) > maxContentChars) throw new ProtocolError(ErrorCode.payloadTooLarge, `a tool output is longer than ${maxContentChars} characters`)
      answers.push({ callId: tool.toolCallId, answer: { kind: 'client_tool', output, isError: tool.state === 'output-error' } })
    }
  }
  return answers
}

function invalid(message: string): ProtocolError {
  return new ProtocolError(ErrorCode.invalidMessage, message)
}

function codePoints(text: string, atMost: number): number {
  if (text.length <= atMost) return text.length
  let count = 0
  for (const _ of text) if (++count > atMost) break
  return count
}
