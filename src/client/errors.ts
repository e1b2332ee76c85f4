import type { ErrorCode } from '../protocol/index.ts'

/**
 * Why a run or the client could not go on: a server error code from the protocol, or one of
 * the client's own when the connection itself ended the story.
 */
export type AgentErrorCode =
  | ErrorCode
  /** close() was called, or the server closed 1000. */
  | 'closed'
  /** The token was refused (4001) and the provider had no other one. */
  | 'unauthorized'
  /** 4003: this page's origin is not allowed; never retried. */
  | 'forbidden_origin'
  /** 1008 or 1009: the server will not take this client back as it is. */
  | 'policy_violation'
  /** Reconnecting gave up after `maxReconnectAttempts`, or the socket could not be created. */
  | 'unreachable'
  /** The iterator was not read and more than `maxBufferedEvents` events piled up. */
  | 'overflow'

export interface AgentErrorDetails {
  retryable?: boolean
  closeCode?: number
}

export class AgentError extends Error {
  override name = 'AgentError'
  readonly code: AgentErrorCode
  readonly retryable: boolean
  /** The WebSocket close code that caused it, when one did. */
  readonly closeCode: number | undefined

  constructor(code: AgentErrorCode, message: string, details: AgentErrorDetails = {}) {
    super(message)
    this.code = code
    this.retryable = details.retryable ?? false
    this.closeCode = details.closeCode
  }
}
