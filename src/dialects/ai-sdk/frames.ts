import { Type, type Static, type TProperties } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'

/**
 * The request frames of the AI SDK's `WebSocketChatTransport` (package `ai` >= 7), as its own
 * validator `safeValidateWebSocketChatTransportRequest` accepts them (ai-sdk.md of the spec): the
 * frame fields exactly; UI messages by their shape (id, role, parts), text parts and tool parts
 * fully, since the last message's text and its answered tool calls are read: earlier messages
 * are never trusted.
 */
export const SUBPROTOCOL_AI_SDK = 'ai-sdk.v1'
export const AI_SDK_PATH = '/ws/ai-sdk'
/** The SDK closes 1008 on a frame it cannot read; so do we (ai-sdk.md, Handshake). */
export const INVALID_FRAME_REASON = 'invalid frame'

const StringRecord = Type.Record(Type.String(), Type.String())
const AnyObject = Type.Object({})

/** A part, discriminated on `type`: text and tool parts are checked below, of the others we read nothing. */
const Part = Type.Object({ type: Type.String(), text: Type.Optional(Type.Unknown()) })

const ApprovalAsked = Type.Object({ id: Type.String() })
const ApprovalAnswered = Type.Object({ id: Type.String(), approved: Type.Boolean(), reason: Type.Optional(Type.String()) })
const ApprovalGranted = Type.Object({ id: Type.String(), approved: Type.Literal(true), reason: Type.Optional(Type.String()) })
const ApprovalDenied = Type.Object({ id: Type.String(), approved: Type.Literal(false), reason: Type.Optional(Type.String()) })

function toolPart<State extends string, Fields extends TProperties>(state: State, fields: Fields) {
  return Type.Object({
    type: Type.String({ pattern: '^(tool-|dynamic-tool$)' }),
    toolCallId: Type.String(),
    toolName: Type.Optional(Type.String()),
    providerExecuted: Type.Optional(Type.Boolean()),
    state: Type.Literal(state),
    ...fields,
  })
}

/**
 * A tool part (`tool-<name>`, or `dynamic-tool` with its `toolName`) by its state, with the
 * fields the SDK's validator requires of that state among those we read: how a call was
 * answered (`approval`, `output`, `errorText`).
 */
export const ToolPart = Type.Union([
  toolPart('input-streaming', {}),
  toolPart('input-available', {}),
  toolPart('approval-requested', { approval: ApprovalAsked }),
  toolPart('approval-responded', { approval: ApprovalAnswered }),
  toolPart('output-available', { output: Type.Optional(Type.Unknown()), approval: Type.Optional(ApprovalGranted) }),
  toolPart('output-error', { errorText: Type.String(), approval: Type.Optional(ApprovalGranted) }),
  toolPart('output-denied', { approval: ApprovalDenied }),
])
export type ToolPart = Static<typeof ToolPart>
const toolPartCheck = TypeCompiler.Compile(ToolPart)

export const isToolPart = (part: { type: string }): boolean => part.type === 'dynamic-tool' || part.type.startsWith('tool-')

export const UiMessage = Type.Object({
  id: Type.String(),
  role: Type.Union([Type.Literal('system'), Type.Literal('user'), Type.Literal('assistant')]),
  metadata: Type.Optional(Type.Unknown()),
  parts: Type.Array(Part),
})

export const SendRequest = Type.Object({
  type: Type.Literal('send'),
  requestId: Type.String(),
  id: Type.String(),
  trigger: Type.Union([Type.Literal('submit-message'), Type.Literal('regenerate-message')]),
  messageId: Type.Optional(Type.String()),
  messages: Type.Array(UiMessage, { minItems: 1 }),
  headers: StringRecord,
  body: AnyObject,
  metadata: Type.Optional(Type.Unknown()),
})

export const ResumeRequest = Type.Object({
  type: Type.Literal('resume'),
  requestId: Type.String(),
  id: Type.String(),
  lastSequence: Type.Optional(Type.Integer({ minimum: 0 })),
  headers: StringRecord,
  body: AnyObject,
  metadata: Type.Optional(Type.Unknown()),
})

export const AbortRequest = Type.Object({ type: Type.Literal('abort'), requestId: Type.String() })

export const AiSdkRequest = Type.Union([SendRequest, ResumeRequest, AbortRequest])

export type UiMessage = Static<typeof UiMessage>
export type SendRequest = Static<typeof SendRequest>
export type ResumeRequest = Static<typeof ResumeRequest>
export type AbortRequest = Static<typeof AbortRequest>
export type AiSdkRequest = Static<typeof AiSdkRequest>

const requestCheck = TypeCompiler.Compile(AiSdkRequest)

/** The frame, or undefined when the SDK's validator would refuse it too. */
export function parseRequest(text: string): AiSdkRequest | undefined {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return undefined
  }
  if (!requestCheck.Check(value)) return undefined
  if (value.type === 'abort') return value
  // As the SDK: a user or system message has a part; a text part has its text.
  if (value.type === 'send' && !value.messages.every(wellFormed)) return undefined
  return value
}

function wellFormed(message: UiMessage): boolean {
  if (message.role !== 'assistant' && message.parts.length === 0) return false
  return message.parts.every((part) => {
    if (part.type === 'text') return typeof part.text === 'string'
    if (!isToolPart(part)) return true
    return toolPartCheck.Check(part) && (part.type !== 'dynamic-tool' || typeof part.toolName === 'string')
  })
}

/** The text of a message: its text parts, in order. */
export function textOf(message: UiMessage): string {
  return message.parts.map((part) => (part.type === 'text' ? (part.text as string) : '')).join('')
}

/**
 * A UI message stream chunk as the SDK's `uiMessageChunkSchema` reads it: only the kinds
 * this gateway sends.
 */
export type UiChunk =
  /** No messageId when a request goes on with the client's own assistant message (answers). */
  | { type: 'start'; messageId?: string }
  | { type: 'start-step' }
  | { type: 'finish-step' }
  | { type: 'text-start' | 'text-end' | 'reasoning-start' | 'reasoning-end'; id: string }
  | { type: 'text-delta' | 'reasoning-delta'; id: string; delta: string }
  | { type: 'tool-input-available'; toolCallId: string; toolName: string; input: unknown; dynamic?: true; providerExecuted?: true }
  | { type: 'tool-approval-request'; approvalId: string; toolCallId: string }
  | { type: 'tool-approval-response'; approvalId: string; approved: boolean; reason?: string }
  | { type: 'tool-output-available'; toolCallId: string; output: unknown; dynamic?: true; providerExecuted?: true }
  | { type: 'tool-output-error'; toolCallId: string; errorText: string; dynamic?: true; providerExecuted?: true }
  | { type: 'tool-output-denied'; toolCallId: string }
  | { type: 'error'; errorText: string }
  | { type: 'abort'; reason: string }
  | { type: 'finish'; finishReason: UiFinishReason; messageMetadata?: { usage: { prompt_tokens: number; completion_tokens: number } } }

export type UiFinishReason = 'stop' | 'length' | 'content-filter' | 'error' | 'tool-calls'

/** What the server sends: `WebSocketChatTransportResponse`. */
export type AiSdkResponse =
  | { type: 'start'; requestId: string }
  | { type: 'chunk'; requestId: string; sequence: number; chunk: UiChunk }
  | { type: 'end'; requestId: string }
  | { type: 'error'; requestId: string; errorText: string }
  | { type: 'no-active'; requestId: string }
