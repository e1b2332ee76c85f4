import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible'
import type { Cluster, Redis } from 'ioredis'
import { ErrorCode, ProtocolError } from '../protocol/index.ts'

export interface FrameRateLimitOptions {
  /** Frames one user may send per window, across all their connections. */
  points: number
  windowMs: number
  /** Shares the budget between instances, under `keyPrefix`; in memory (per instance) without it. */
  redis?: { client: Redis | Cluster; keyPrefix: string }
}

export interface FrameRateLimiter {
  /** Counts one frame of the user; throws `rate_limited` (with `retry_after_ms`) when over budget. */
  consume(userId: string): Promise<void>
}

/**
 * The per-user frame budget (`RATE_LIMIT_MESSAGES` per `RATE_LIMIT_WINDOW_MS`, fixed window).
 * With Redis the window is kept in whole seconds (the store's resolution, rounded up) and an
 * in-memory limiter stands in while Redis fails, so an outage never blocks every frame.
 * @see https://github.com/animir/node-rate-limiter-flexible/wiki/Redis
 */
export function createFrameRateLimiter(options: FrameRateLimitOptions): FrameRateLimiter {
  const { points, windowMs, redis } = options
  const inMemory = new RateLimiterMemory({ points, duration: windowMs / 1000 })
  const limiter: RateLimiterAbstract = redis
    ? new RateLimiterRedis({
        storeClient: redis.client,
        points,
        duration: Math.max(1, Math.ceil(windowMs / 1000)),
        keyPrefix: redis.keyPrefix,
        insuranceLimiter: inMemory,
      })
    : inMemory

  return {
    async consume(userId) {
      try {
        await limiter.consume(userId)
      } catch (rejection) {
        // Store errors never get here (the in-memory insurance limiter answers instead).
        /* c8 ignore next */
        if (!(rejection instanceof RateLimiterRes)) throw rejection
        throw new ProtocolError(ErrorCode.rateLimited, undefined, { retryable: true, retryAfterMs: Math.max(1, rejection.msBeforeNext) })
      }
    },
  }
}
