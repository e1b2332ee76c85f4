/** Error codes of the contract (protocol.md §3). One place, so handlers never invent one. */
export const ErrorCode = {
  invalidMessage: 'invalid_message',
  forbidden: 'forbidden',
  notFound: 'not_found',
  busy: 'busy',
  noActiveRun: 'no_active_run',
  rateLimited: 'rate_limited',
  upstreamError: 'upstream_error',
  upstreamTimeout: 'upstream_timeout',
  payloadTooLarge: 'payload_too_large',
  historyGone: 'history_gone',
  /** (1.1) The user holds MAX_SESSIONS_PER_USER sessions. */
  tooManySessions: 'too_many_sessions',
  /** (1.1) An answer for a tool call that is not waiting. */
  notPending: 'not_pending',
  internal: 'internal',
} as const
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode]

/** Close codes of the contract (protocol.md §5), with the reasons it names. */
export const CloseCode = {
  normal: 1000,
  goingAway: 1001,
  policyViolation: 1008,
  messageTooBig: 1009,
  internalError: 1011,
  serviceRestart: 1012,
  unauthorized: 4001,
  forbiddenOrigin: 4003,
  tooManyConnections: 4029,
} as const
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode]

export const CloseReason = {
  missingToken: 'missing token',
  invalidToken: 'invalid token',
  tokenExpired: 'token expired',
  forbiddenOrigin: 'forbidden origin',
  serviceRestart: 'service restart',
  tooManyConnections: 'too many connections',
  slowClient: 'slow client',
  tooManyInvalidFrames: 'too many invalid frames',
  heartbeatTimeout: 'heartbeat timeout',
  storeUnavailable: 'store unavailable',
  /** (1.1) More than MAX_BUFFERED_BYTES unsent (protocol.md §6). */
  bufferLimit: 'too much unsent data',
  /** (1.1) More than MAX_PENDING_FRAMES received frames waiting to be served. */
  tooManyPendingFrames: 'too many pending frames',
  /** (1.1) The store lost the session's state (e.g. Redis restarted empty). */
  sessionLost: 'session state lost',
} as const
export type AuthFailure = typeof CloseReason.missingToken | typeof CloseReason.invalidToken | typeof CloseReason.tokenExpired

/** The WebSocket subprotocol the server selects; `bearer.<jwt>` carries the token beside it. */
export const SUBPROTOCOL = 'agent.v1'
export const BEARER_PROTOCOL_PREFIX = 'bearer.'
