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
    async *stream(request: ModelRequest): AsyncIterable<ModelChunk[]> {
      const started = Date.now()
      let runDeadline = runDeadlines.get(request.signal)
      if (runDeadline === undefined) runDeadlines.set(request.signal, (runDeadline = started + options.runTimeoutMs))
      const watchdog = new AbortController()
      let fired: UpstreamError | undefined
      /** Rejects the latest wait for the inner model's next batch (a no-op once it settled). */
      let interrupt: ((reason: UpstreamError) => void) | undefined
      let timer: NodeJS.Timeout | undefined
      const limits = {
        first_token: `no content within UPSTREAM_FIRST_TOKEN_TIMEOUT_MS (${options.firstTokenTimeoutMs} ms)`,
        idle: `silent for UPSTREAM_IDLE_TIMEOUT_MS (${options.idleTimeoutMs} ms)`,
        run: `the run exceeded UPSTREAM_TIMEOUT_MS (${options.runTimeoutMs} ms)`,
      }
      const arm = (deadline: number, phase: 'first_token' | 'idle') => {
        const limit = runDeadline <= deadline ? 'run' : phase
        timer = setTimeout(
          () => {
            fired = new UpstreamError('timeout', `the model timed out: ${limits[limit]}`)
            log.warn({ limit, elapsedMs: Date.now() - started }, 'upstream watchdog fired: aborting the request')
            watchdog.abort(fired)
            interrupt?.(fired)
          },
          Math.max(0, Math.min(deadline, runDeadline) - Date.now()),
        )
      }
      const iterator = model.stream({ ...request, signal: AbortSignal.any([request.signal, watchdog.signal]) })[Symbol.asyncIterator]()
      // The next batch, or the dog: a fresh promise per wait. A Promise.race against one
      // long-lived "expired" promise left a reaction on it per batch, holding every batch (and
      // its text) until the run ended.
      const nextOrFired = () =>
        new Promise<IteratorResult<ModelChunk[]>>((resolve, reject) => {
          interrupt = reject
          iterator.next().then(resolve, reject)
        })
      let contentSeen = false
      /** When the idle dog fires: moved by content only, and by the time the caller holds a batch. */
      let idleDeadline = 0
      let innerDone = false
      let failure: unknown
      arm(started + options.firstTokenTimeoutMs, 'first_token')
      try {
        for (;;) {
          const next = await nextOrFired()
          clearTimeout(timer)
          if (next.done) {
            innerDone = true
            return
          }
          const content = hasContent(next.value)
          contentSeen ||= content
          const heldAt = Date.now()
          yield next.value
          if (content) idleDeadline = Date.now() + options.idleTimeoutMs
          else idleDeadline += Date.now() - heldAt
          if (contentSeen) arm(idleDeadline, 'idle')
          else arm(started + options.firstTokenTimeoutMs, 'first_token')
        }
      } catch (err) {
        innerDone = err !== fired
        // A timeout is the story, whatever the inner model threw while being aborted (a run
        // cancelled at the same moment is still told apart by its own signal, upstream of here).
        failure = fired ?? err
      } finally {
        clearTimeout(timer)
        if (!innerDone) {
          // The dog fired or the caller stopped early: close the inner stream, never wait on it.
          watchdog.abort(fired ?? request.signal.reason)
          iterator.return?.().catch(() => {})
        }
      }
      throw failure
    },
  }
}
