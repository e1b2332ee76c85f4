import type { FastifyBaseLogger } from 'fastify'
import type { Config } from '../../config.ts'
import type { ModelClient } from '../models/types.ts'
import { CircuitBreaker, withCircuitBreaker, type CircuitBreakerOptions } from './circuit-breaker.ts'
import { withRetry, type RetryOptions } from './retry.ts'
import { withWatchdog, type WatchdogOptions } from './watchdog.ts'

export { CircuitBreaker, withCircuitBreaker, type CircuitState } from './circuit-breaker.ts'
export { retryDelayMs, withRetry } from './retry.ts'
export { withWatchdog } from './watchdog.ts'

export interface ResilienceOptions {
  retry: RetryOptions
  watchdog: WatchdogOptions
  breaker: CircuitBreakerOptions
}

/** Backoff of the first retry (full jitter below it), doubling per retry. */
const RETRY_BASE_DELAY_MS = 250
/** No wait (backoff or the upstream's `retry-after`) is longer; a longer `retry-after` fails the run. */
const RETRY_MAX_DELAY_MS = 10_000

export function resilienceOptions(config: Config): ResilienceOptions {
  return {
    retry: {
      maxRetries: config.UPSTREAM_MAX_RETRIES,
      baseDelayMs: RETRY_BASE_DELAY_MS,
      maxDelayMs: RETRY_MAX_DELAY_MS,
      budgetMs: config.UPSTREAM_FIRST_TOKEN_TIMEOUT_MS,
    },
    watchdog: {
      firstTokenTimeoutMs: config.UPSTREAM_FIRST_TOKEN_TIMEOUT_MS,
      idleTimeoutMs: config.UPSTREAM_IDLE_TIMEOUT_MS,
      runTimeoutMs: config.UPSTREAM_TIMEOUT_MS,
    },
    breaker: { threshold: config.CIRCUIT_BREAKER_THRESHOLD, cooldownMs: config.CIRCUIT_BREAKER_COOLDOWN_MS },
  }
}

/**
 * Any model, made safe to stream from: breaker → watchdog → retry → model. The breaker sees one
 * verdict per call (retries included) and fails fast while open; the watchdog's first-token
 * budget covers the retries, so a stalled upstream is never asked twice; retries happen
 * before the first chunk only.
 */
export function withResilience(model: ModelClient, options: ResilienceOptions, log: FastifyBaseLogger): ModelClient {
  const upstreamLog = log.child({ model: model.name })
  const retried = withRetry(model, options.retry, upstreamLog)
  const watched = withWatchdog(retried, options.watchdog, upstreamLog)
  return withCircuitBreaker(watched, new CircuitBreaker(options.breaker, upstreamLog))
}
