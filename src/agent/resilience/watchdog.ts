import type { FastifyBaseLogger } from 'fastify'
import type { ModelChunk, ModelClient, ModelRequest } from '../models/types.ts'
import { UpstreamError } from '../upstream-error.ts'

export interface WatchdogOptions {
  /** From the call to its first content chunk (everything inside, retries included). */
  firstTokenTimeoutMs: number
  /** Between content chunks after the first (usage chunks do not count); time the caller spends on a batch is not counted. */
  idleTimeoutMs: number
  /** From the first call made with a run's signal, across all the run's calls. */
  runTimeoutMs: number
}

/**
 * Content is what the model says or thinks (a reasoning model may think for minutes before
 * its first word); usage, finish and SSE keep-alive comments do not feed the dog.
 */
function hasContent(batch: ModelChunk[]): boolean {
  return batch.some((chunk) => chunk.type === 'text' || chunk.type === 'reasoning' || chunk.type === 'tool_call')
}

/**
 * First-token, idle and whole-run timers around a model. The inner model gets a child signal
 * that also aborts on a timeout, so the upstream request is closed; the caller gets
 * UpstreamError('timeout') at once, without waiting for the inner model to notice.
 */
export function withWatchdog(model: ModelClient, options: WatchdogOptions, log: FastifyBaseLogger): ModelClient {
  // Runs are told apart by their signal: one AbortController per run, passed to every call.
  const runDeadlines = new WeakMap<AbortSignal, number>()
  return {
    name: model.name,
    stream(request: ModelRequest): AsyncIterable<ModelChunk[]> {
      return new WatchedStream(model, request, options, log, runDeadlines)
    },
  }
}

type Limit = 'first_token' | 'idle' | 'run'

/**
 * One call under the dog, as a hand-written iterator (one promise per batch, no generator
 * turns). Its one timer is moved lazily: a batch only moves the deadline, and the timer, when
 * it fires early, sets itself again for what is left; so a fast stream sets no timer per batch.
 * One next() at a time, as `for await` asks.
 */
class WatchedStream implements AsyncIterableIterator<ModelChunk[]> {
  readonly #model: ModelClient
  readonly #request: ModelRequest
  readonly #options: WatchdogOptions
  readonly #log: FastifyBaseLogger
  readonly #runDeadlines: WeakMap<AbortSignal, number>
  readonly #watchdog = new AbortController()
  #iterator: AsyncIterator<ModelChunk[]> | undefined
  #started = 0
  #runDeadline = 0
  /** Finished, failed or stopped by the caller: next() answers done. */
  #over = false
  #fired: UpstreamError | undefined
  /** Rejects the wait under way; cleared when it settles. */
  #interrupt: ((reason: UpstreamError) => void) | undefined
  /** When the dog fires, unless content (or the caller's time on a batch) moves it. */
  #deadline = 0
  #limit: Limit = 'first_token'
  #timer: NodeJS.Timeout | undefined
  #timerAt = Infinity
  #contentSeen = false
  /** The batch the caller holds had content; when it took it. */
  #heldContent = false
  #heldAt = 0
  /** When the idle dog fires: moved by content only, and by the time the caller holds a batch. */
  #idleDeadline = 0

  constructor(model: ModelClient, request: ModelRequest, options: WatchdogOptions, log: FastifyBaseLogger, runDeadlines: WeakMap<AbortSignal, number>) {
    this.#model = model
    this.#request = request
    this.#options = options
    this.#log = log
    this.#runDeadlines = runDeadlines
  }

  [Symbol.asyncIterator](): this {
    return this
  }

  next(): Promise<IteratorResult<ModelChunk[]>> {
    if (this.#over) return Promise.resolve({ done: true, value: undefined })
    const iterator = this.#iterator ?? this.#start()
    if (this.#heldAt > 0) {
      const now = Date.now()
      if (this.#heldContent) this.#idleDeadline = now + this.#options.idleTimeoutMs
      else this.#idleDeadline += now - this.#heldAt
      this.#heldAt = 0
      if (this.#contentSeen) this.#arm(this.#idleDeadline, 'idle')
      else this.#arm(this.#started + this.#options.firstTokenTimeoutMs, 'first_token')
    }
    // A fresh promise per wait: one long-lived "expired" promise raced against every batch
    // left a reaction on it per batch, holding every batch (and its text) until the run ended.
    return new Promise<IteratorResult<ModelChunk[]>>((resolve, reject) => {
      this.#interrupt = reject
      iterator.next().then(
        (next) => {
          this.#interrupt = undefined
          if (this.#fired) return
          if (next.done) this.#end()
          else {
            const content = hasContent(next.value)
            this.#contentSeen ||= content
            this.#heldContent = content
            this.#heldAt = Date.now()
          }
          resolve(next)
        },
        (err: unknown) => {
          this.#interrupt = undefined
          // A timeout is the story, whatever the inner model threw while being aborted (a run
          // cancelled at the same moment is still told apart by its own signal, upstream of here).
          if (this.#fired) return
          this.#end()
          reject(err)
        },
      )
    })
  }

  /** The caller stopped early: close the inner stream, never wait on it. */
  async return(): Promise<IteratorResult<ModelChunk[]>> {
    if (!this.#over) {
      this.#end()
      this.#close(this.#request.signal.reason)
    }
    return { done: true, value: undefined }
  }

  #start(): AsyncIterator<ModelChunk[]> {
    const { signal } = this.#request
    this.#started = Date.now()
    let runDeadline = this.#runDeadlines.get(signal)
    if (runDeadline === undefined) this.#runDeadlines.set(signal, (runDeadline = this.#started + this.#options.runTimeoutMs))
    this.#runDeadline = runDeadline
    this.#iterator = this.#model.stream({ ...this.#request, signal: AbortSignal.any([signal, this.#watchdog.signal]) })[Symbol.asyncIterator]()
    this.#arm(this.#started + this.#options.firstTokenTimeoutMs, 'first_token')
    return this.#iterator
  }

  #arm(deadline: number, phase: 'first_token' | 'idle'): void {
    this.#limit = this.#runDeadline <= deadline ? 'run' : phase
    this.#deadline = Math.min(deadline, this.#runDeadline)
    // Deadlines only move later once content flows; a timer set for later than the new one is moved.
    if (this.#timerAt > this.#deadline) this.#setTimer()
  }

  #setTimer(): void {
    clearTimeout(this.#timer)
    this.#timerAt = this.#deadline
    this.#timer = setTimeout(this.#check, Math.max(0, this.#deadline - Date.now()))
  }

  readonly #check = (): void => {
    this.#timer = undefined
    this.#timerAt = Infinity
    // The caller holds a batch: its next() arms the dog again.
    if (this.#heldAt > 0) return
    if (Date.now() < this.#deadline) return this.#setTimer()
    const limits: Record<Limit, string> = {
      first_token: `no content within UPSTREAM_FIRST_TOKEN_TIMEOUT_MS (${this.#options.firstTokenTimeoutMs} ms)`,
      idle: `silent for UPSTREAM_IDLE_TIMEOUT_MS (${this.#options.idleTimeoutMs} ms)`,
      run: `the run exceeded UPSTREAM_TIMEOUT_MS (${this.#options.runTimeoutMs} ms)`,
    }
    const fired = new UpstreamError('timeout', `the model timed out: ${limits[this.#limit]}`)
    this.#fired = fired
    this.#log.warn({ limit: this.#limit, elapsedMs: Date.now() - this.#started }, 'upstream watchdog fired: aborting the request')
    this.#end()
    this.#close(fired)
    this.#interrupt?.(fired)
  }

  #end(): void {
    this.#over = true
    clearTimeout(this.#timer)
    this.#timer = undefined
  }

  #close(reason: unknown): void {
    this.#watchdog.abort(reason)
    this.#iterator?.return?.().catch(() => {})
  }
}
