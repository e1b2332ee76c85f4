import type { FastifyBaseLogger } from 'fastify'
import type { ModelChunk, ModelClient, ModelRequest } from '../models/types.ts'
import { UpstreamError } from '../upstream-error.ts'

export interface CircuitBreakerOptions {
  /** Consecutive failed calls that open the circuit; 0 never opens it. */
  threshold: number
  /** How long an open circuit fails calls fast before it lets one probe through. */
  cooldownMs: number
  now?: () => number
}

export type CircuitState = 'closed' | 'open' | 'half_open'

/** A call let through; the probe of a half-open circuit carries `probe: true`. */
export interface Admission {
  probe: boolean
}

/**
 * Failures that say the upstream is unhealthy. A 400/401/403 is an answer from a live server
 * (the fault is ours), so it counts as a success; a timeout counts as a failure.
 */
function isOutage(error: UpstreamError): boolean {
  return error.retryable && error.failure !== 'circuit_open'
}

/**
 * Closed → open after `threshold` consecutive failures; open fails fast for `cooldownMs`;
 * then half-open lets exactly one probe through: its success closes the circuit, its failure
 * opens it again. Cancelled calls count for nothing.
 */
export class CircuitBreaker {
  readonly #options: CircuitBreakerOptions
  readonly #log: FastifyBaseLogger
  readonly #now: () => number
  #state: CircuitState = 'closed'
  #failures = 0
  #openUntil = 0
  #probing = false

  constructor(options: CircuitBreakerOptions, log: FastifyBaseLogger) {
    this.#options = options
    this.#log = log
    this.#now = options.now ?? Date.now
  }

  get state(): CircuitState {
    return this.#state
  }

  /** Lets a call through, or throws UpstreamError('circuit_open') with how long to wait. */
  admit(): Admission {
    if (this.#state === 'closed') return { probe: false }
    const waitMs = this.#openUntil - this.#now()
    if (this.#state === 'open' && waitMs <= 0) {
      this.#state = 'half_open'
      this.#log.info('upstream circuit half-open: probing')
    }
    if (this.#state === 'half_open' && !this.#probing) {
      this.#probing = true
      return { probe: true }
    }
    // While a probe is out, callers wait about as long as a fresh cooldown would last.
    throw new UpstreamError('circuit_open', 'the model server keeps failing: not calling it for a while', {
      retryAfterMs: waitMs > 0 ? waitMs : this.#options.cooldownMs,
    })
  }

  /** The upstream answered: the circuit closes, the count starts over. */
  succeeded(admission: Admission): void {
    if (admission.probe) this.#probing = false
    this.#failures = 0
    if (this.#state === 'closed') return
    this.#state = 'closed'
    this.#log.info('upstream circuit closed: the model server answers again')
  }

  failed(admission: Admission, error: UpstreamError): void {
    if (admission.probe) this.#probing = false
    this.#failures++
    const tripped = this.#state === 'closed' && this.#options.threshold > 0 && this.#failures >= this.#options.threshold
    if (!admission.probe && !tripped) return
    this.#state = 'open'
    this.#openUntil = this.#now() + this.#options.cooldownMs
    this.#log.error(
      { failures: this.#failures, failure: error.failure, status: error.status, cooldownMs: this.#options.cooldownMs },
      'upstream circuit open: failing runs fast',
    )
  }

  /** The call ended without a verdict (cancelled, or stopped by its caller). */
  released(admission: Admission): void {
    if (admission.probe) this.#probing = false
  }
}

/**
 * The breaker around a model. A call succeeds when its stream ends normally and fails on an
 * upstream failure, even after some chunks; a half-open probe closes the circuit as soon as
 * its first chunk arrives, so other runs wait for the upstream to answer, not to finish.
 */
export function withCircuitBreaker(model: ModelClient, breaker: CircuitBreaker): ModelClient {
  return { name: model.name, stream: (request) => new GuardedStream(model, request, breaker) }
}

/**
 * One call through the breaker, as a hand-written iterator (one `then` per batch, no generator
 * turns); admitted at its first next(), as a generator's body would start. One next() at a
 * time, as `for await` asks.
 */
class GuardedStream implements AsyncIterableIterator<ModelChunk[]> {
  readonly #model: ModelClient
  readonly #request: ModelRequest
  readonly #breaker: CircuitBreaker
  #inner: AsyncIterator<ModelChunk[]> | undefined
  #admission: Admission = { probe: false }
  /** The breaker heard how the call went (a verdict, or the release of its admission). */
  #over = false

  constructor(model: ModelClient, request: ModelRequest, breaker: CircuitBreaker) {
    this.#model = model
    this.#request = request
    this.#breaker = breaker
  }

  [Symbol.asyncIterator](): this {
    return this
  }

  next(): Promise<IteratorResult<ModelChunk[]>> {
    if (this.#over) return Promise.resolve({ done: true, value: undefined })
    if (!this.#inner) {
      try {
        this.#admission = this.#breaker.admit()
      } catch (err) {
        this.#over = true
        return Promise.reject(err)
      }
      this.#inner = this.#model.stream(this.#request)[Symbol.asyncIterator]()
    }
    return this.#inner.next().then(this.#passed, this.#failed)
  }

  /** The caller stopped early: no verdict, but a probe's slot is freed. */
  async return(): Promise<IteratorResult<ModelChunk[]>> {
    await this.#inner?.return?.()
    this.#release()
    return { done: true, value: undefined }
  }

  readonly #passed = (next: IteratorResult<ModelChunk[]>): IteratorResult<ModelChunk[]> => {
    if (next.done) {
      this.#over = true
      this.#breaker.succeeded(this.#admission)
    } else if (this.#admission.probe) {
      this.#breaker.succeeded(this.#admission)
      this.#admission = { probe: false }
    }
    return next
  }

  readonly #failed = (err: unknown): never => {
    if (err instanceof UpstreamError && !this.#request.signal.aborted) {
      this.#over = true
      if (isOutage(err)) this.#breaker.failed(this.#admission, err)
      else this.#breaker.succeeded(this.#admission)
    } else {
      // Cancelled, or a bug: no verdict.
      this.#release()
    }
    throw err
  }

  #release(): void {
    if (this.#over) return
    this.#over = true
    this.#breaker.released(this.#admission)
  }
}
