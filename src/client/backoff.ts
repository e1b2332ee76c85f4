export interface BackoffPolicy {
  /** Ceiling of the first retry's delay. */
  baseMs: number
  /** No delay is ever longer than this. */
  maxMs: number
}

export const DEFAULT_BACKOFF: BackoffPolicy = { baseMs: 500, maxMs: 15_000 }

/**
 * Exponential backoff with full jitter: a uniform draw in [0, min(maxMs, baseMs · 2^attempt)).
 * Jitter spreads the reconnects of many clients dropped together (a restart) over the window.
 * @see https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/
 */
export function backoffDelay(attempt: number, policy: BackoffPolicy = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.max(0, attempt))
  const draw = Math.min(Math.max(random(), 0), 1)
  return Math.floor(draw * ceiling)
}
