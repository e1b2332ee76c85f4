import { Type, type Static } from '@sinclair/typebox'

export const SessionId = Type.String({
  minLength: 1,
  maxLength: 128,
  pattern: '^[A-Za-z0-9_-]+$',
  description: 'Session id: 1..128 characters of [A-Za-z0-9_-]',
})

const strict = { additionalProperties: false } as const

const RequestId = Type.String({ minLength: 1, maxLength: 128, description: 'Idempotency key, echoed as metadata.request_id' })

/** (1.1) What a chat does when the session already has an active run (protocol.md §2). */
export const OnBusy = Type.Union([Type.Literal('reject'), Type.Literal('interrupt'), Type.Literal('enqueue')], {
  description: 'reject (default): error busy; interrupt: cancel the active run, then run this one; enqueue: run after the runs before it',
})
export type OnBusy = Static<typeof OnBusy>

/** (1.1) A tool the client runs for this run (protocol.md §7); sizes checked by the session service. */
export const ClientTool = Type.Object(
  {
    name: Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$' }),
    description: Type.Optional(Type.String({ maxLength: 1024 })),
    parameters: Type.Record(Type.String(), Type.Unknown(), { description: 'A JSON Schema object, at most 8 KB serialized' }),
  },
  strict,
)
export type ClientTool = Static<typeof ClientTool>

export const ChatFrame = Type.Object(
  {
    type: Type.Literal('chat'),
    // The upper bound is MAX_CONTENT_CHARS, checked by the handler so that it answers payload_too_large.
    content: Type.String({ minLength: 1 }),
    session_id: Type.Optional(SessionId),
    id: Type.Optional(RequestId),
    on_busy: Type.Optional(OnBusy),
    edit: Type.Optional(Type.String({ minLength: 1, maxLength: 128, description: '(1.1) The id of an earlier user message: history is cut before it, content replaces it' })),
    client_tools: Type.Optional(Type.Array(ClientTool, { maxItems: 32, description: '(1.1) Tools the client executes, offered to the model for this run' })),
    reasoning: Type.Optional(Type.Boolean({ description: "(1.1) true to receive the model's reasoning deltas as reasoning frames" })),
  },
  { ...strict, $id: 'ChatFrame', description: 'Start an agent run in a session' },
)

export const ToolApprovalFrame = Type.Object(
  { type: Type.Literal('tool_approval'), session_id: SessionId, call_id: Type.String({ minLength: 1, maxLength: 256 }), approved: Type.Boolean(), reason: Type.Optional(Type.String({ maxLength: 500 })) },
  { ...strict, $id: 'ToolApprovalFrame', description: '(1.1) Answer a pending approval_required' },
)

export const ToolOutputFrame = Type.Object(
  // The upper bound of output is MAX_CONTENT_CHARS, checked by the handler (payload_too_large).
  { type: Type.Literal('tool_output'), session_id: SessionId, call_id: Type.String({ minLength: 1, maxLength: 256 }), output: Type.String(), is_error: Type.Optional(Type.Boolean()) },
  { ...strict, $id: 'ToolOutputFrame', description: '(1.1) The result of a client-side tool call' },
)

export const RegenerateFrame = Type.Object(
  { type: Type.Literal('regenerate'), session_id: SessionId, id: Type.Optional(RequestId), on_busy: Type.Optional(OnBusy) },
  { ...strict, $id: 'RegenerateFrame', description: "(1.1) Drop the session's last answer and answer its last user message again" },
)

export const CancelFrame = Type.Object(
  { type: Type.Literal('cancel'), session_id: Type.Optional(SessionId) },
  { ...strict, $id: 'CancelFrame', description: "Abort the session's running run" },
)

export const PingFrame = Type.Object(
  { type: Type.Literal('ping'), session_id: Type.Optional(SessionId) },
  { ...strict, $id: 'PingFrame', description: 'Application-level liveness, answered by pong' },
)

export const ResumeFrame = Type.Object(
  { type: Type.Literal('resume'), session_id: SessionId, last_seq: Type.Integer({ minimum: 0 }) },
  { ...strict, $id: 'ResumeFrame', description: 'Replay events with seq > last_seq, then stream live' },
)

export const AuthFrame = Type.Object(
  { type: Type.Literal('auth'), token: Type.String({ minLength: 1 }) },
  { ...strict, $id: 'AuthFrame', description: "Replace the connection's JWT (same sub)" },
)

export const clientFrameSchemas = {
  chat: ChatFrame,
  cancel: CancelFrame,
  ping: PingFrame,
  resume: ResumeFrame,
  auth: AuthFrame,
  regenerate: RegenerateFrame,
  tool_approval: ToolApprovalFrame,
  tool_output: ToolOutputFrame,
} as const

export const ClientFrame = Type.Union(Object.values(clientFrameSchemas), { $id: 'ClientFrame' })

export type ChatFrame = Static<typeof ChatFrame>
export type CancelFrame = Static<typeof CancelFrame>
export type PingFrame = Static<typeof PingFrame>
export type ResumeFrame = Static<typeof ResumeFrame>
export type AuthFrame = Static<typeof AuthFrame>
export type RegenerateFrame = Static<typeof RegenerateFrame>
export type ToolApprovalFrame = Static<typeof ToolApprovalFrame>
export type ToolOutputFrame = Static<typeof ToolOutputFrame>
export type ClientFrame = Static<typeof ClientFrame>
export type ClientFrameType = keyof typeof clientFrameSchemas
