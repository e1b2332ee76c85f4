import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyBaseLogger } from 'fastify'
import type { ModelChunk, ModelClient, ModelRequest } from '../models/types.ts'
import { UpstreamError, type UpstreamFailure } from '../upstream-error.ts'

export interface RetryOptions {
  /** Attempts after the first; 0 never retries. */
  maxRetries: number
  /** Backoff ceiling of the first retry; doubles per retry (full jitter below it). */
  baseDelayMs: number
  /** Cap on any wait: a longer backoff is cut to it; a longer `retry-after` is not waited for. */
  maxDelayMs: number
  /**
   * Time from the call's start a wait may not reach (the first-token budget): a failure whose
   * wait would end later is thrown at once, with its `retry-after`, instead of a timeout later.
   */
  budgetMs?: number
  /** Uniform in [0, 1); injectable so tests can pin the jitter. */
  random?: () => number
  /** Told each retry (metrics). */
  onRetry?: ((failure: UpstreamFailure) => void) | undefined
}

/**
 * How long to wait before retry number `retry` (0-based), or undefined to give up. The
 * upstream's own `retry-after` wins over backoff; one longer than the cap is not waited
 * for: the run fails and the client gets it as `retry_after_ms`.
 * @see https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/
 */
export function retryDelayMs(error: UpstreamError, retry: number, options: RetryOptions): number | undefined {
  // An open circuit asks for quiet, not another attempt.
  if (!error.retryable || error.failure === 'circuit_open' || retry >= options.maxRetries) return undefined
  if (error.retryAfterMs !== undefined) return error.retryAfterMs <= options.maxDelayMs ? error.retryAfterMs : undefined
  const ceiling = Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** retry)
  return Math.floor((options.random ?? Math.random)() * ceiling)
}

/**
 * One retry layer, before the first chunk only: once anything reached the caller, a failure
 * ends the run instead, so an answer is never duplicated. Waits are cut short by the signal.
 */
export function withRetry(model: ModelClient, options: RetryOptions, log: FastifyBaseLogger): ModelClient {
  return { name: model.name, stream: (request) => new RetryingStream(model, request, options, log) }
}

/**
 * A hand-written iterator, not an async generator: past the first chunk it hands the inner
 * stream's own next() through, with no promise or turn of its own per batch. One next() at a
 * time, as `for await` asks.
 */
class RetryingStream implements AsyncIterableIterator<ModelChunk[]> {
  readonly #model: ModelClient
  readonly #request: ModelRequest
  readonly #options: RetryOptions
  readonly #log: FastifyBaseLogger
  #inner: AsyncIterator<ModelChunk[]> | undefined
  /** Something reached the caller (or the stream ended): no retry from here on. */
  #committed = false

  constructor(model: ModelClient, request: ModelRequest, options: RetryOptions, log: FastifyBaseLogger) {
    this.#model = model
    this.#request = request
    this.#options = options
    this.#log = log
  }

  [Symbol.asyncIterator](): this {
    return this
  }

  next(): Promise<IteratorResult<ModelChunk[]>> {
    return this.#committed ? (this.#inner as AsyncIterator<ModelChunk[]>).next() : this.#first()
  }

  async return(): Promise<IteratorResult<ModelChunk[]>> {
    this.#committed = true
    await this.#inner?.return?.()
    return { done: true, value: undefined }
  }

  async #first(): Promise<IteratorResult<ModelChunk[]>> {
    const { signal } = this.#request
    const options = this.#options
    const started = Date.now()
    for (let retry = 0; ; retry++) {
      this.#inner = this.#model.stream(this.#request)[Symbol.asyncIterator]()
      try {
        const first = await this.#inner.next()
        this.#committed = true
        return first
      } catch (err) {
        if (signal.aborted || !(err instanceof UpstreamError)) throw err
        const delayMs = retryDelayMs(err, retry, options)
        if (delayMs === undefined) throw err
        if (options.budgetMs !== undefined && Date.now() - started + delayMs >= options.budgetMs) throw err
        this.#log.warn({ failure: err.failure, status: err.status, retry: retry + 1, delayMs }, 'upstream failed before the first chunk: retrying')
        options.onRetry?.(err.failure)
        await sleep(delayMs, undefined, { signal }).catch(() => {
          throw signal.reason
        })
      }
    }
  }
}
