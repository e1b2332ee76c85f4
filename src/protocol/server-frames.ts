import { Type, type Static } from '@sinclair/typebox'
import { ErrorCode } from './codes.ts'

const strict = { additionalProperties: false } as const
const Seq = Type.Integer({ minimum: 1, description: 'Strictly increasing by one per session, across runs' })
const SessionIdOrEmpty = Type.String({ description: 'The session, or "" when none applies' })
const RunId = Type.String({ minLength: 1 })

export const FinishReason = Type.Union([
  Type.Literal('stop'),
  Type.Literal('length'),
  Type.Literal('cancelled'),
  Type.Literal('error'),
  Type.Literal('interrupted'),
  // 1.1: the model's provider filtered the answer (OpenAI, Azure OpenAI).
  Type.Literal('content_filter'),
])

export const Usage = Type.Object(
  { prompt_tokens: Type.Integer({ minimum: 0 }), completion_tokens: Type.Integer({ minimum: 0 }) },
  strict,
)

export const StatusThinking = Type.Object(
  {
    type: Type.Literal('status'),
    session_id: SessionIdOrEmpty,
    seq: Seq,
    content: Type.Literal('thinking'),
    metadata: Type.Object({ run_id: RunId, request_id: Type.Optional(Type.String()) }, strict),
  },
  { ...strict, $id: 'StatusThinking', description: 'A run was accepted' },
)

export const StatusToolCall = Type.Object(
  {
    type: Type.Literal('status'),
    session_id: SessionIdOrEmpty,
    seq: Seq,
    content: Type.Literal('tool_call'),
    metadata: Type.Object(
      {
        run_id: RunId,
        tool: Type.String(),
        call_id: Type.String(),
        arguments: Type.Unknown(),
        executor: Type.Optional(Type.Union([Type.Literal('server'), Type.Literal('client')], { description: '(1.1) client: a tool of chat.client_tools, answered with tool_output' })),
      },
      strict,
    ),
  },
  { ...strict, $id: 'StatusToolCall', description: 'The model called a tool' },
)

/** (1.1) A tool call waiting on the client (protocol.md §7), as `status:resumed` and REST list it. */
export const PendingCall = Type.Object(
  {
    call_id: Type.String(),
    tool: Type.String(),
    arguments: Type.Unknown(),
    kind: Type.Union([Type.Literal('approval'), Type.Literal('client_tool')]),
    expires_at: Type.String({ format: 'date-time' }),
  },
  strict,
)
export type PendingCall = Static<typeof PendingCall>

export const StatusApprovalRequired = Type.Object(
  {
    type: Type.Literal('status'),
    session_id: SessionIdOrEmpty,
    seq: Seq,
    content: Type.Literal('approval_required'),
    metadata: Type.Object(
      { run_id: RunId, tool: Type.String(), call_id: Type.String(), arguments: Type.Unknown(), expires_at: Type.String({ format: 'date-time' }) },
      strict,
    ),
  },
  { ...strict, $id: 'StatusApprovalRequired', description: '(1.1) The tool runs only once a person approves: answer with tool_approval' },
)

export const StatusApprovalResolved = Type.Object(
  {
    type: Type.Literal('status'),
    session_id: SessionIdOrEmpty,
    seq: Seq,
    content: Type.Literal('approval_resolved'),
    metadata: Type.Object(
      { run_id: RunId, call_id: Type.String(), approved: Type.Boolean(), reason: Type.Optional(Type.String()) },
      strict,
    ),
  },
  { ...strict, $id: 'StatusApprovalResolved', description: '(1.1) An approval was answered (or expired); the tool_result follows' },
)

export const StatusToolResult = Type.Object(
  {
    type: Type.Literal('status'),
    session_id: SessionIdOrEmpty,
    seq: Seq,
    content: Type.Literal('tool_result'),
    metadata: Type.Object(
      { run_id: RunId, tool: Type.String(), call_id: Type.String(), result: Type.Unknown(), is_error: Type.Boolean() },
      strict,
    ),
  },
  { ...strict, $id: 'StatusToolResult', description: 'A tool call finished' },
)

export const StatusToolProgress = Type.Object(
  {
    type: Type.Literal('status'),
    session_id: SessionIdOrEmpty,
    seq: Seq,
    content: Type.Literal('tool_progress'),
    metadata: Type.Object(
      {
        run_id: RunId,
        tool: Type.String(),
        call_id: Type.String(),
        progress: Type.Number(),
        total: Type.Optional(Type.Number()),
        message: Type.Optional(Type.String()),
      },
      strict,
    ),
  },
  { ...strict, $id: 'StatusToolProgress', description: "A long tool's progress, e.g. from an MCP server (1.1)" },
)

export const StatusCancelled = Type.Object(
  {
    type: Type.Literal('status'),
    session_id: SessionIdOrEmpty,
    seq: Seq,
    content: Type.Literal('cancelled'),
    metadata: Type.Object({ run_id: RunId }, strict),
  },
  { ...strict, $id: 'StatusCancelled', description: 'The run was cancelled; its complete follows' },
)

export const StatusQueued = Type.Object(
  {
    type: Type.Literal('status'),
    session_id: SessionIdOrEmpty,
    seq: Seq,
    content: Type.Literal('queued'),
    metadata: Type.Object(
      {
        run_id: RunId,
        position: Type.Integer({ minimum: 1, description: 'Place in line behind the active run: 1 runs next' }),
        request_id: Type.Optional(Type.String()),
      },
      strict,
    ),
  },
  { ...strict, $id: 'StatusQueued', description: "(1.1) A chat with on_busy enqueue waits for the runs before it; its own thinking comes when it starts" },
)

export const StatusResumed = Type.Object(
  {
    type: Type.Literal('status'),
    session_id: SessionIdOrEmpty,
    content: Type.Literal('resumed'),
    metadata: Type.Object(
      {
        last_seq: Type.Integer({ minimum: 0 }),
        active_run: Type.Union([RunId, Type.Null()]),
        pending: Type.Optional(Type.Array(PendingCall, { description: '(1.1) Tool calls waiting on the client' })),
      },
      strict,
    ),
  },
  { ...strict, $id: 'StatusResumed', description: 'Answer to resume, sent after the replay' },
)

export const TokenFrameSchema = Type.Object(
  {
    type: Type.Literal('token'),
    session_id: SessionIdOrEmpty,
    seq: Seq,
    content: Type.String(),
    metadata: Type.Object({ run_id: RunId }, strict),
  },
  { ...strict, $id: 'TokenFrame', description: 'A text delta from the model' },
)

export const ReasoningFrameSchema = Type.Object(
  {
    type: Type.Literal('reasoning'),
    session_id: SessionIdOrEmpty,
    seq: Seq,
    content: Type.String(),
    metadata: Type.Object({ run_id: RunId }, strict),
  },
  { ...strict, $id: 'ReasoningFrame', description: '(1.1) A reasoning delta from the model, sent when the chat asked with reasoning: true' },
)

export const CompleteFrameSchema = Type.Object(
  {
    type: Type.Literal('complete'),
    session_id: SessionIdOrEmpty,
    seq: Seq,
    content: Type.String({ description: 'The whole assistant text of the run' }),
    metadata: Type.Object(
      {
        run_id: RunId,
        finish_reason: FinishReason,
        usage: Type.Optional(Usage),
        request_id: Type.Optional(Type.String()),
        reason: Type.Optional(Type.String({ description: 'Why the run stopped early, when it did' })),
      },
      strict,
    ),
  },
  { ...strict, $id: 'CompleteFrame', description: 'The run ended' },
)

export const ErrorCodeSchema = Type.Union(Object.values(ErrorCode).map((code) => Type.Literal(code)))

export const ErrorFrameSchema = Type.Object(
  {
    type: Type.Literal('error'),
    session_id: SessionIdOrEmpty,
    seq: Type.Optional(Seq),
    content: Type.String(),
    metadata: Type.Object(
      {
        code: ErrorCodeSchema,
        retryable: Type.Boolean(),
        retry_after_ms: Type.Optional(Type.Integer({ minimum: 0 })),
        request_id: Type.Optional(Type.String()),
        run_id: Type.Optional(RunId),
      },
      strict,
    ),
  },
  { ...strict, $id: 'ErrorFrame', description: 'A frame could not be served, or a run failed' },
)

export const PongFrameSchema = Type.Object(
  { type: Type.Literal('pong'), session_id: SessionIdOrEmpty },
  { ...strict, $id: 'PongFrame', description: 'Answer to ping' },
)

export const serverFrameSchemas = {
  StatusThinking,
  StatusToolCall,
  StatusToolResult,
  StatusToolProgress,
  StatusApprovalRequired,
  StatusApprovalResolved,
  StatusCancelled,
  StatusQueued,
  StatusResumed,
  TokenFrame: TokenFrameSchema,
  ReasoningFrame: ReasoningFrameSchema,
  CompleteFrame: CompleteFrameSchema,
  ErrorFrame: ErrorFrameSchema,
  PongFrame: PongFrameSchema,
} as const

export const ServerFrame = Type.Union(Object.values(serverFrameSchemas), { $id: 'ServerFrame' })

export type FinishReason = Static<typeof FinishReason>
export type Usage = Static<typeof Usage>
export type StatusThinking = Static<typeof StatusThinking>
export type StatusToolCall = Static<typeof StatusToolCall>
export type StatusToolResult = Static<typeof StatusToolResult>
export type StatusToolProgress = Static<typeof StatusToolProgress>
export type StatusCancelled = Static<typeof StatusCancelled>
export type StatusResumed = Static<typeof StatusResumed>
export type StatusQueued = Static<typeof StatusQueued>
export type TokenFrame = Static<typeof TokenFrameSchema>
export type ReasoningFrame = Static<typeof ReasoningFrameSchema>
export type CompleteFrame = Static<typeof CompleteFrameSchema>
export type ErrorFrame = Static<typeof ErrorFrameSchema>
export type PongFrame = Static<typeof PongFrameSchema>
export type ServerFrame = Static<typeof ServerFrame>

/** Frames that belong to a run and so get a seq from the session's event log. */
export type RunEvent = Extract<ServerFrame, { seq: number }> | (ErrorFrame & { seq: number })
/** A run event before the event log has given it a seq. */
export type UnsequencedRunEvent = RunEvent extends infer F ? (F extends unknown ? Omit<F, 'seq'> : never) : never
