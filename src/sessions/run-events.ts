import type { AgentEvent, AgentProgress } from '../agent/run-agent.ts'
import { UpstreamError } from '../agent/upstream-error.ts'
import { ErrorCode, errorFrame, type CompleteFrame, type FinishReason, type UnsequencedRunEvent } from '../protocol/index.ts'
import type { SessionRef } from '../store/types.ts'

/** The frame an agent event is logged as. */
export function runEvent(sessionId: string, runId: string, event: AgentEvent): UnsequencedRunEvent {
  switch (event.type) {
    case 'token':
      return { type: 'token', session_id: sessionId, content: event.text, metadata: { run_id: runId } }
    case 'reasoning':
      return { type: 'reasoning', session_id: sessionId, content: event.text, metadata: { run_id: runId } }
    case 'tool_call':
      return {
        type: 'status',
        session_id: sessionId,
        content: 'tool_call',
        metadata: { run_id: runId, tool: event.tool, call_id: event.callId, arguments: event.arguments, ...(event.executor === 'client' ? { executor: 'client' as const } : {}) },
      }
    case 'tool_result':
      return {
        type: 'status',
        session_id: sessionId,
        content: 'tool_result',
        metadata: { run_id: runId, tool: event.tool, call_id: event.callId, result: event.result, is_error: event.isError },
      }
    case 'tool_progress':
      return {
        type: 'status',
        session_id: sessionId,
        content: 'tool_progress',
        metadata: {
          run_id: runId,
          tool: event.tool,
          call_id: event.callId,
          progress: event.progress,
          ...(event.total === undefined ? {} : { total: event.total }),
          ...(event.message === undefined ? {} : { message: event.message }),
        },
      }
  }
}

export function thinkingFrame(ref: SessionRef, runId: string, requestId: string | undefined): UnsequencedRunEvent {
  return { type: 'status', session_id: ref.id, content: 'thinking', metadata: { run_id: runId, ...(requestId === undefined ? {} : { request_id: requestId }) } }
}

export function cancelledFrame(ref: SessionRef, runId: string): UnsequencedRunEvent {
  return { type: 'status', session_id: ref.id, content: 'cancelled', metadata: { run_id: runId } }
}

/** The `error` a failed run logs before its `complete`: human text, no stack, no secret. */
export function failureFrame(ref: SessionRef, runId: string, requestId: string | undefined, err: unknown): UnsequencedRunEvent {
  const failure = err instanceof UpstreamError ? err : undefined
  return errorFrame(failure?.code ?? ErrorCode.internal, ref.id, failure?.message ?? 'internal error', {
    retryable: failure?.retryable ?? true,
    runId,
    ...(failure?.retryAfterMs === undefined ? {} : { retryAfterMs: failure.retryAfterMs }),
    ...(requestId === undefined ? {} : { requestId }),
  })
}

export interface Finish {
  finishReason: FinishReason
  reason?: string | undefined
}

export function completeFrame(ref: SessionRef, runId: string, requestId: string | undefined, progress: AgentProgress, finish: Finish): Omit<CompleteFrame, 'seq'> {
  return {
    type: 'complete',
    session_id: ref.id,
    content: progress.content,
    metadata: {
      run_id: runId,
      finish_reason: finish.finishReason,
      ...(progress.usage ? { usage: progress.usage } : {}),
      ...(requestId === undefined ? {} : { request_id: requestId }),
      ...(finish.reason === undefined ? {} : { reason: finish.reason }),
    },
  }
}
