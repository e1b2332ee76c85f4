import type { FastifyBaseLogger } from 'fastify'
import type { CompleteFrame } from '../protocol/index.ts'
import type { ActiveRun, Backend, SessionRef, StartedRun } from '../store/types.ts'
import { actionDue } from '../store/waiting-round.ts'

export interface LeaseSweeperOptions {
  backend: Backend
  intervalMs: number
  historyMaxMessages: number
  /** True when this instance executes the run (it renews that lease itself). */
  runsHere: (ref: SessionRef, runId: string) => boolean
  /** A run of a lost instance was ended here. */
  onInterrupted?: () => void
  /** Its queued successor became active, held by this instance: it runs here. */
  startNext: (ref: SessionRef, next: StartedRun) => void
  /** (1.1) Takes over a waiting run whose instance is gone, to go on with it here. */
  adopt: (ref: SessionRef, active: ActiveRun) => Promise<boolean>
  instanceId: string
  leaseMs: number
  log: Pick<FastifyBaseLogger, 'warn'>
}

/** Expired leases looked at per sweep; more wait for the next one. */
const SWEEP_BATCH = 100

/**
 * Ends runs whose instance died. The executing instance renews its run's lease; the store
 * indexes leases by expiry, so a sweep costs one read plus one step per *expired* lease,
 * however many sessions are watched. Only the first instance to notice succeeds: the store
 * logs the `complete` (`finish_reason: "interrupted"`) only while the lease is expired and the
 * log unchanged, in one atomic step; from then on the old holder's writes are refused.
 * (1.1) A run that waits on the client is not ended: it is state in the store. It is adopted
 * here when something is due (an answer nobody took, a deadline, a call cut short), else
 * looked at again at its earliest deadline.
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

  async sweep(): Promise<void> {
    if (this.#sweeping) return
    this.#sweeping = true
    try {
      for (const { ref, fence } of await this.#options.backend.sessions.expiredLeases(SWEEP_BATCH)) {
        const active = await this.#options.backend.sessions.activeRun(ref)
        if (active?.fence !== fence || this.#options.runsHere(ref, active.runId)) continue
        const round = await this.#options.backend.sessions.waitingRound(ref)
        const due = round && actionDue(round)
        if (due === null) await this.endIfExpired(ref, active)
        else if (due <= Date.now()) await this.#options.adopt(ref, active)
        else await this.#options.backend.sessions.deferLease(ref, fence, due)
      }
    } catch (err) {
      this.#options.log.warn({ err }, 'lease sweep failed')
    } finally {
      this.#sweeping = false
    }
  }

  /**
   * Ends `active` as interrupted when its lease has expired and it does not run here. True
   * when the run is over (ended by this call or by anybody else meanwhile).
   */
  async endIfExpired(ref: SessionRef, active: ActiveRun): Promise<boolean> {
    const { backend, log } = this.#options
    // Our clock is a pre-check only; the store decides with its own.
    if (this.#options.runsHere(ref, active.runId) || active.leaseExpiresAt > Date.now()) return false
    const held = await backend.events.read(ref, active.startAfterSeq)
    const content = held.events.map((event) => tokenText(event.frame, active.runId)).join('')
    const complete: Omit<CompleteFrame, 'seq'> = {
      type: 'complete',
      session_id: ref.id,
      content,
      metadata: {
        run_id: active.runId,
        finish_reason: 'interrupted',
        ...(active.requestId === undefined ? {} : { request_id: active.requestId }),
        reason: 'instance lost',
      },
    }
    const finished = await backend.sessions.finishRun(ref, {
      runId: active.runId,
      instanceId: this.#options.instanceId,
      leaseMs: this.#options.leaseMs,
      event: complete,
      // What the user saw stays in the conversation, as a finished run's text would.
      messages: content ? [{ role: 'assistant', content }] : [],
      maxMessages: this.#options.historyMaxMessages,
      ifLeaseExpired: true,
      ifLastSeq: held.lastSeq,
    })
    if (!finished) return (await backend.sessions.activeRun(ref))?.runId !== active.runId
    log.warn({ sessionId: ref.id, userId: ref.owner, runId: active.runId, instanceId: active.instanceId, seq: finished.event.seq }, 'run interrupted: its instance stopped renewing the lease')
    this.#options.onInterrupted?.()
    if (finished.next) this.#options.startNext(ref, finished.next)
    return true
  }
}

/** The text of a logged `token` frame of run `runId`; '' for any other frame. */
function tokenText(frame: string, runId: string): string {
  const event = JSON.parse(frame) as { type?: unknown; content?: unknown; metadata?: { run_id?: unknown } }
  return event.type === 'token' && event.metadata?.run_id === runId && typeof event.content === 'string' ? event.content : ''
}
