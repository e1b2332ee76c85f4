import type { FastifyBaseLogger } from 'fastify'
import type { CompleteFrame } from '../protocol/index.ts'
import type { ActiveRun, Backend } from '../store/types.ts'

export interface LeaseSweeperOptions {
  backend: Backend
  /** Ends a run atomically, only if its lease expired (Backend.finishRun). */
  finishRun: NonNullable<Backend['finishRun']>
  intervalMs: number
  historyMaxMessages: number
  /** Sessions with subscribers on this instance: the only runs it looks after. */
  watched: () => Iterable<string>
  /** True when this instance executes the run (it renews that lease itself). */
  runsHere: (sessionId: string, runId: string) => boolean
  log: Pick<FastifyBaseLogger, 'warn'>
}

/**
 * Ends runs whose instance died. The executing instance renews its run's lease; an instance
 * whose subscribers watch a run that runs nowhere (lease expired) logs its `complete` with
 * `finish_reason: "interrupted"`, so no reader hangs. Only the first to notice succeeds: the
 * store appends it only while the lease is expired and the log unchanged, in one atomic step.
 */
export class LeaseSweeper {
  readonly #options: LeaseSweeperOptions
  #timer: NodeJS.Timeout | undefined
  #sweeping = false

  constructor(options: LeaseSweeperOptions) {
    this.#options = options
  }

  start(): void {
    this.#timer ??= setInterval(() => void this.sweep(), this.#options.intervalMs)
    this.#timer.unref()
  }

  stop(): void {
    clearInterval(this.#timer)
    this.#timer = undefined
  }

  /** Checks the run of every watched session once; a sweep still going skips this one. */
  async sweep(): Promise<void> {
    if (this.#sweeping) return
    this.#sweeping = true
    try {
      for (const sessionId of [...this.#options.watched()]) {
        try {
          const active = await this.#options.backend.sessions.activeRun(sessionId)
          if (active) await this.endIfExpired(sessionId, active)
        } catch (err) {
          this.#options.log.warn({ err, sessionId }, 'lease check failed')
        }
      }
    } finally {
      this.#sweeping = false
    }
  }

  /**
   * Ends `active` as interrupted when its lease has expired and it does not run here. True
   * when the run is over (ended by this call or by anybody else meanwhile).
   */
  async endIfExpired(sessionId: string, active: ActiveRun): Promise<boolean> {
    const { backend, log } = this.#options
    // Our clock is a pre-check only; the store decides with its own.
    if (this.#options.runsHere(sessionId, active.runId) || active.leaseExpiresAt > Date.now()) return false
    const held = await backend.events.read(sessionId, active.startAfterSeq)
    const content = held.events.map((event) => tokenText(event.frame, active.runId)).join('')
    const complete: Omit<CompleteFrame, 'seq'> = {
      type: 'complete',
      session_id: sessionId,
      content,
      metadata: {
        run_id: active.runId,
        finish_reason: 'interrupted',
        ...(active.requestId === undefined ? {} : { request_id: active.requestId }),
        reason: 'instance lost',
      },
    }
    const logged = await this.#options.finishRun(sessionId, {
      runId: active.runId,
      event: complete,
      ifLeaseExpired: true,
      ifLastSeq: held.lastSeq,
    })
    if (!logged) return (await backend.sessions.activeRun(sessionId))?.runId !== active.runId
    log.warn({ sessionId, runId: active.runId, instanceId: active.instanceId, seq: logged.seq }, 'run interrupted: its instance stopped renewing the lease')
    // What the user saw stays in the conversation, as a finished run's text would.
    if (content) await backend.sessions.appendMessages(sessionId, [{ role: 'assistant', content }], this.#options.historyMaxMessages)
    return true
  }
}

/** The text of a logged `token` frame of run `runId`; '' for any other frame. */
function tokenText(frame: string, runId: string): string {
  const event = JSON.parse(frame) as { type?: unknown; content?: unknown; metadata?: { run_id?: unknown } }
  return event.type === 'token' && event.metadata?.run_id === runId && typeof event.content === 'string' ? event.content : ''
}
