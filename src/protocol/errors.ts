import { ErrorCode } from './codes.ts'
import type { ErrorFrame } from './server-frames.ts'

interface ErrorSpec {
  message: string
  retryable: boolean
}

/** Default text and retryability of each code: one registry, so answers stay consistent. */
const specs: Record<ErrorCode, ErrorSpec> = {
  invalid_message: { message: 'invalid message', retryable: false },
  forbidden: { message: 'forbidden', retryable: false },
  not_found: { message: 'unknown session', retryable: false },
  busy: { message: 'the session already has an active run: cancel it first or wait for complete', retryable: true },
  no_active_run: { message: 'the session has no active run', retryable: false },
  rate_limited: { message: 'too many messages: slow down', retryable: true },
  upstream_error: { message: 'the model failed', retryable: true },
  upstream_timeout: { message: 'the model timed out', retryable: true },
  payload_too_large: { message: 'content is too long', retryable: false },
  too_many_sessions: { message: 'too many sessions: delete one first', retryable: false },
  not_pending: { message: 'that tool call is not waiting for an answer', retryable: false },
  history_gone: { message: 'those events are no longer held: reload the session', retryable: false },
  internal: { message: 'internal error', retryable: true },
}

export interface ProtocolErrorOptions {
  retryable?: boolean
  retryAfterMs?: number
  requestId?: string
  runId?: string
  sessionId?: string
}

/** A frame that cannot be served: thrown by handlers, answered as an `error` frame. */
export class ProtocolError extends Error {
  override name = 'ProtocolError'
  readonly code: ErrorCode
  readonly options: ProtocolErrorOptions

  constructor(code: ErrorCode, message?: string, options: ProtocolErrorOptions = {}) {
    super(message ?? specs[code].message)
    this.code = code
    this.options = options
  }
}

export function errorFrame(code: ErrorCode, sessionId: string, message?: string, options: ProtocolErrorOptions = {}): ErrorFrame {
  const metadata: ErrorFrame['metadata'] = { code, retryable: options.retryable ?? specs[code].retryable }
  if (options.retryAfterMs !== undefined) metadata.retry_after_ms = Math.ceil(options.retryAfterMs)
  if (options.requestId !== undefined) metadata.request_id = options.requestId
  if (options.runId !== undefined) metadata.run_id = options.runId
  return { type: 'error', session_id: sessionId, content: message ?? specs[code].message, metadata }
}

export function protocolErrorFrame(error: ProtocolError, fallbackSessionId: string): ErrorFrame {
  return errorFrame(error.code, error.options.sessionId ?? fallbackSessionId, error.message, error.options)
}

export { ErrorCode }
