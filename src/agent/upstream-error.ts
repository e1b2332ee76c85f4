import { ErrorCode } from '../protocol/index.ts'

export type UpstreamFailure =
  | 'auth' // 401/403: configuration problem
  | 'bad_request' // 400/404/422
  | 'rate_limited' // 429
  | 'server' // 5xx
  | 'connection' // refused, reset, DNS
  | 'malformed' // a chunk that is not valid SSE JSON
  | 'truncated' // the body ended before the model finished
  | 'timeout' // first-token or idle watchdog
  | 'circuit_open'

const retryable: Record<UpstreamFailure, boolean> = {
  auth: false,
  bad_request: false,
  rate_limited: true,
  server: true,
  connection: true,
  malformed: true,
  truncated: true,
  timeout: true,
  circuit_open: true,
}

/** Every way the upstream can fail, classified once; the run turns it into the contract's error. */
export class UpstreamError extends Error {
  override name = 'UpstreamError'
  readonly failure: UpstreamFailure
  readonly status: number | undefined
  readonly retryAfterMs: number | undefined

  constructor(failure: UpstreamFailure, message: string, options: { status?: number; retryAfterMs?: number; cause?: unknown } = {}) {
    super(message, { cause: options.cause })
    this.failure = failure
    this.status = options.status
    this.retryAfterMs = options.retryAfterMs
  }

  get code(): typeof ErrorCode.upstreamError | typeof ErrorCode.upstreamTimeout {
    return this.failure === 'timeout' ? ErrorCode.upstreamTimeout : ErrorCode.upstreamError
  }

  get retryable(): boolean {
    return retryable[this.failure]
  }
}
