import { randomUUID } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import { createProgress, producedMessages, runAgent, type AgentEvent } from '../agent/run-agent.ts'
import type { ModelClient } from '../agent/models/types.ts'
import type { ToolRegistry } from '../agent/tools/registry.ts'
import { UpstreamError } from '../agent/upstream-error.ts'
import type { ErrorCode, FinishReason, UnsequencedRunEvent } from '../protocol/index.ts'
import { refKey, type ActiveRun, type Backend, type ControlMessage, type SessionRef, type Settles, type StartedRun } from '../store/types.ts'
import type { Adoption, AdoptedRun } from '../store/waiting-round.ts'
import { cancelledFrame, completeFrame, failureFrame, runEvent, thinkingFrame, type Finish } from './run-events.ts'
import type { Subscriptions } from './subscriptions.ts'
import { RunAborted, type AbortCause } from './watcher.ts'
import { Fenced } from './fenced.ts'
import { ToolGate } from './tool-gate.ts'
import { TokenMerger } from './token-merger.ts'
import { TurnGate } from './turn-gate.ts'
import { modelMessages } from './model-messages.ts'
import { adoption, resumedProgress, snapshotOf, startOf } from './adoption.ts'

export interface ExecutorConfig {
  /** Holds the leases of the runs this instance executes (and of queued runs it starts). */
  instanceId: string
  systemPrompt: string
  historyMaxMessages: number
  resumeGraceMs: number
  maxToolRounds: number
  /** How long a run's lease lives without renewal; another instance ends it as interrupted after. */
  leaseMs: number
  /** (1.1) Waiting on the client (protocol.md §7). */
  approvalTools: ReadonlySet<string>
  approvalTimeoutMs: number
  clientToolTimeoutMs: number
}

/** The moments of one run; whoever measures them keeps the clock. */
export interface RunTracker {
  /** `deltas`: the model's deltas a token joins. */
  event(type: AgentEvent['type'], deltas?: number): void
  /** A cancel or a delete asked the run to stop; its latency ends with `ended`. */
  cancelRequested(): void
  ended(finishReason: FinishReason): void
}

export interface RunObserver {
  started(): RunTracker
  resumed(result: 'ok' | ErrorCode): void
  /** A run of a lost instance was ended here as interrupted. */
  interrupted(): void
  /** (1.1) A run waiting on the client was let go by this draining instance, or taken over here. */
  handedOver(kind: 'parked' | 'adopted'): void
}

export interface RunExecutorOptions {
  backend: Backend
  model: ModelClient
  tools: ToolRegistry
  config: ExecutorConfig
  logger: FastifyBaseLogger
  subscriptions: Subscriptions
  observer?: RunObserver | undefined
}

/** What a started run needs: its identity and the conversation it answers. */
export interface RunStart extends StartedRun {
  ref: SessionRef
}

interface LocalRun extends RunStart {
  /** What its writes name (ActiveRun.fence). */
  fence: string
  /** Taken over from an instance that stopped, in the round it waited in. */
  adopted?: AdoptedRun | undefined
  controller: AbortController
  /** Settles when the run is over here: its final events logged, or given up. */
  done: Promise<void>
  graceTimer?: NodeJS.Timeout
  tracker?: RunTracker | undefined
  /** Its calls that wait on the client. */
  gate?: ToolGate
  /** Its text deltas on their way to the log, merged when they are ready together (§3, §6). */
  tokens?: TokenMerger
}


/** How long a drain waits for the final events of its runs to reach their local sockets. */
const DELIVERY_WAIT_MS = 2000

/**
 * Executes this instance's runs: the only writer of a run's events, lease and final frames.
 * Every write is fenced in the store by (generation, run id), so a run that lost its session
 * (ended as interrupted by another instance, deleted, its state lost) stops at its next write.
 */
export class RunExecutor {
  readonly #options: RunExecutorOptions
  readonly #runs = new Map<string, LocalRun>()
  /** The model requests of a burst of run starts, spread one per turn. */
  readonly #starts = new TurnGate()
  /** Draining: runs that only wait on a person are let go (parked) for another instance. */
  #draining = false
  /** The final events of the runs that ended during the drain: delivered before the sockets close. */
  readonly #drainEnds: Array<{ ref: SessionRef; seq: number }> = []

  constructor(options: RunExecutorOptions) {
    this.#options = options
    options.backend.control.onMessage((message) => this.#onControl(message))
  }

  get activeRunCount(): number {
    return this.#runs.size
  }

  isLocal(ref: SessionRef, runId: string): boolean {
    return this.#runs.get(refKey(ref))?.runId === runId
  }

  /**
   * Takes over a run the store has just made active; from here on it always ends.
   * `unwatched`: nobody may be watching it (its sender left, or it was next in a queue), so the
   * grace starts now: it is aborted then unless somebody watches.
   */
  start(start: RunStart, options: { unwatched?: boolean; adopted?: AdoptedRun; abort?: AbortCause } = {}): void {
    const run: LocalRun = {
      ...start,
      fence: options.adopted?.active.fence ?? start.runId,
      adopted: options.adopted,
      controller: new AbortController(),
      done: Promise.resolve(),
      tracker: this.#options.observer?.started(),
    }
    const key = refKey(run.ref)
    this.#runs.set(key, run)
    if (options.abort) this.#abortLocal(run, options.abort)
    if (options.unwatched) this.#armGrace(run)
    run.done = this.#execute(run).finally(() => {
      clearTimeout(run.graceTimer)
      if (this.#runs.get(key) === run) this.#runs.delete(key)
    })
  }

  /**
   * Stops the run wherever it runs: here through its controller, elsewhere through the bus. A
   * waiting run nobody holds (its instance drained or died) is adopted here to be ended.
   */
  async abort(ref: SessionRef, active: ActiveRun, cause: 'cancel' | 'deleted' | 'superseded'): Promise<void> {
    const run = this.#runs.get(refKey(ref))
    if (run?.runId === active.runId) return this.#abortLocal(run, cause)
    if (active.leaseExpiresAt <= Date.now() && (await this.adopt(ref, active, cause))) return
    await this.#options.backend.control.publish({ kind: 'cancel', ref, runId: active.runId, reason: cause === 'cancel' ? 'client' : cause })
  }

  /**
   * (1.1) Takes over a run that waits on the client and whose lease lapsed, and goes on with it
   * here (or ends it at once: `abort`). False when the store gave it to nobody (not waiting,
   * held, or taken by another instance first).
   */
  async adopt(ref: SessionRef, active: ActiveRun, abort?: AbortCause): Promise<boolean> {
    const asked = this.adoptionOf(active.runId)
    const adopted = asked && (await this.#options.backend.sessions.adoptRun(ref, active.fence, asked))
    if (!adopted) return false
    await this.startAdopted(ref, adopted, abort)
    return true
  }

  /** What to ask the store for to take run `runId` over; none while draining (nothing new runs here). */
  adoptionOf(runId: string): Adoption | undefined {
    return this.#draining ? undefined : adoption(this.#options.config, runId)
  }

  /** A run this instance now holds (adopted by an answer's claim, or by adopt()): it goes on from its round. */
  async startAdopted(ref: SessionRef, adopted: AdoptedRun, abort?: AbortCause): Promise<void> {
    const session = await this.#options.backend.sessions.get(ref.owner, ref.id)
    this.#options.logger.info({ sessionId: ref.id, userId: ref.owner, runId: adopted.active.runId }, 'run adopted: it goes on here')
    this.#options.observer?.handedOver('adopted')
    this.start(startOf(ref, adopted, session), { adopted, unwatched: true, ...(abort ? { abort } : {}) })
  }

  /** Resolves when the local run is over; undefined when it does not run here. */
  whenDone(ref: SessionRef, runId: string): Promise<void> | undefined {
    const run = this.#runs.get(refKey(ref))
    return run?.runId === runId ? run.done : undefined
  }

  /**
   * Shutdown: runs get `graceMs` to finish, then are cancelled; resolves when all have ended.
   * With a shared store, a run that only waits on a person is let go instead: any instance goes
   * on with it when the answer comes (protocol.md §7a).
   */
  async drain(graceMs: number): Promise<void> {
    this.#draining = true
    for (const run of this.#runs.values()) void this.#parkIfWaiting(run)
    const all = () => Promise.all([...this.#runs.values()].map((run) => run.done))
    let timer: NodeJS.Timeout | undefined
    let graceOver = false
    const grace = new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs))).then(() => (graceOver = true))
    // Runs started during the grace (a chat on a socket still open) are waited for too.
    while (this.#runs.size > 0 && !graceOver) await Promise.race([all(), grace])
    clearTimeout(timer)
    while (this.#runs.size > 0) {
      for (const run of this.#runs.values()) run.controller.abort(new RunAborted('shutdown'))
      await all()
    }
    // Logged is not delivered: a lagging tail still hands the final events over before the close.
    await Promise.all(this.#drainEnds.map(({ ref, seq }) => this.#options.subscriptions.delivered(ref, seq, DELIVERY_WAIT_MS)))
  }

  /** While draining: parks the run when all it does is wait on the client. */
  async #parkIfWaiting(run: LocalRun): Promise<void> {
    if (!this.#draining || this.#options.backend.kind === 'memory' || !run.gate?.onlyWaiting) return
    const { ref, runId, fence } = run
    try {
      if (!(await this.#options.backend.sessions.parkRun(ref, fence))) return
      this.#options.logger.info({ sessionId: ref.id, userId: ref.owner, runId }, 'run parked: it waits on the client; any instance goes on with it')
      this.#options.observer?.handedOver('parked')
      this.#abortLocal(run, 'parked')
    } catch (err) {
      this.#options.logger.warn({ err, sessionId: ref.id, runId }, 'could not park the waiting run')
    }
  }

  #abortLocal(run: LocalRun, cause: AbortCause): void {
    if (run.controller.signal.aborted) return
    if (cause === 'cancel' || cause === 'deleted' || cause === 'superseded') run.tracker?.cancelRequested()
    run.controller.abort(new RunAborted(cause))
  }

  #onControl(message: ControlMessage): void {
    const run = this.#runs.get(refKey(message.ref))
    if (run?.runId !== message.runId) return
    if (message.kind === 'cancel') return this.#abortLocal(run, message.reason === 'client' ? 'cancel' : message.reason)
    if (message.kind === 'answer') return run.gate?.answer(message.callId, message.answer)
    this.#armGrace(run)
  }

  /** Nobody watches the run anywhere: it ends after the grace unless somebody comes back. */
  #armGrace(run: LocalRun, delayMs = this.#options.config.resumeGraceMs): void {
    clearTimeout(run.graceTimer)
    run.graceTimer = setTimeout(() => void this.#abortIfUnwatched(run), delayMs)
    run.graceTimer.unref()
  }

  async #abortIfUnwatched(run: LocalRun): Promise<void> {
    const { logger, backend } = this.#options
    // A person may take minutes to decide: a run waiting on the client outlives the grace (§7).
    const waitingUntil = run.gate?.waitingUntil
    if (waitingUntil !== undefined && waitingUntil > Date.now()) return this.#armGrace(run, waitingUntil - Date.now() + this.#options.config.resumeGraceMs)
    try {
      if ((await backend.sessions.watcherCount(run.ref)) > 0) return
      logger.info({ sessionId: run.ref.id, userId: run.ref.owner, runId: run.runId }, 'run aborted: nobody resumed within the grace')
      this.#abortLocal(run, 'disconnect')
    } catch (err) {
      logger.warn({ err, sessionId: run.ref.id, runId: run.runId }, 'could not check watchers')
    }
  }

  /** Logs one event of the run (after any text it holds), then waits until its local watchers can take more. */
  async #append(run: LocalRun, event: UnsequencedRunEvent, settles?: Settles): Promise<void> {
    await run.tokens?.flushed()
    await this.#log(run, event, settles)
    await this.#options.subscriptions.whenWritable(run.ref)
  }

  /** The fenced write itself; with the call of the recorded round the event settles (1.1). */
  async #log(run: LocalRun, event: UnsequencedRunEvent, settles = run.gate?.settles(event)): Promise<void> {
    if (!(await this.#options.backend.sessions.append(run.ref, run.fence, event, settles))) throw new Fenced()
    if (settles) void this.#parkIfWaiting(run)
  }

  async #execute(run: LocalRun): Promise<void> {
    const { backend, config, logger } = this.#options
    const { ref, runId, controller } = run
    const log = logger.child({ sessionId: ref.id, userId: ref.owner, runId })
    const lease = setInterval(() => {
      backend.sessions.renewLease(ref, run.fence, config.leaseMs).then(
        (held) => {
          if (held || controller.signal.aborted) return
          log.warn('lease lost: the run no longer holds its session')
          this.#abortLocal(run, 'fenced')
        },
        (err: unknown) => log.warn({ err }, 'lease renewal failed'),
      )
    }, config.leaseMs / 3)
    lease.unref()
    const progress = run.adopted ? resumedProgress(run.adopted.round) : createProgress()
    const tokens = new TokenMerger({
      log: (text) => this.#log(run, runEvent(ref.id, runId, { type: 'token', text })),
      writable: () => this.#options.subscriptions.writable(ref),
      whenWritable: () => this.#options.subscriptions.whenWritable(ref),
    })
    run.tokens = tokens
    const clientTools = run.clientTools ?? []
    run.gate = new ToolGate(
      {
        backend,
        ref,
        runId,
        fence: run.fence,
        signal: controller.signal,
        tools: this.#options.tools,
        approvalTools: config.approvalTools,
        clientTools: new Set(clientTools.map((tool) => tool.name)),
        approvalTimeoutMs: config.approvalTimeoutMs,
        clientToolTimeoutMs: config.clientToolTimeoutMs,
        append: (event, settles) => this.#append(run, event, settles),
        snapshot: (round) => snapshotOf(run, progress, round),
        onWaiting: () => void this.#parkIfWaiting(run),
      },
      run.adopted?.round,
    )
    let finish: Finish | null = { finishReason: 'stop' }
    try {
      if (!run.adopted) {
        await this.#append(run, thinkingFrame(ref, runId, run.requestId))
        log.info('run started')
      }
      await this.#starts.pass()
      controller.signal.throwIfAborted()
      const outcome = await runAgent(
        {
          model: this.#options.model,
          tools: this.#options.tools,
          messages: modelMessages(config.systemPrompt, run.history, run.userMessage),
          signal: controller.signal,
          maxToolRounds: config.maxToolRounds,
          clientTools: clientTools.map((tool) => ({ type: 'function', function: { name: tool.name, description: tool.description ?? '', parameters: tool.parameters } })),
          gate: (call) => (run.gate as ToolGate).decide(call),
          roundEnded: () => (run.gate as ToolGate).roundEnded(),
          resume: run.adopted ? { round: run.adopted.round.round } : undefined,
          sessionId: ref.id,
          userId: ref.owner,
          emit: (event) => {
            run.tracker?.event(event.type, event.type === 'token' ? event.deltas : undefined)
            // Reasoning is relayed only to a chat that asked for it (protocol.md §2).
            if (event.type === 'reasoning' && !run.reasoning) return Promise.resolve()
            if (event.type === 'token') return tokens.push(event.text)
            return this.#append(run, runEvent(ref.id, runId, event))
          },
        },
        progress,
      )
      finish = await this.#finish(run, progress, outcome)
    } catch (err) {
      finish = await this.#fail(run, progress, err, log)
    } finally {
      clearInterval(lease)
    }
    // Parked: not over, only no longer here.
    if (!finish) return
    run.tracker?.ended(finish.finishReason)
    log.info({ finishReason: finish.finishReason }, 'run complete')
  }

  /** Logs `complete` with the run's messages, freeing the session, in one fenced step; starts the next queued run. */
  async #finish(run: LocalRun, progress: ReturnType<typeof createProgress>, finish: Finish): Promise<Finish> {
    const { backend, config } = this.#options
    await run.tokens?.flushed()
    const finished = await backend.sessions.finishRun(run.ref, {
      runId: run.fence,
      instanceId: config.instanceId,
      leaseMs: config.leaseMs,
      event: completeFrame(run.ref, run.runId, run.requestId, progress, finish),
      messages: producedMessages(progress).map((message) => ({ ...message, id: randomUUID(), run_id: run.runId })),
      maxMessages: config.historyMaxMessages,
    })
    if (!finished) throw new Fenced()
    if (this.#draining) this.#drainEnds.push({ ref: run.ref, seq: finished.event.seq })
    this.startNext(run.ref, finished.next)
    return finish
  }

  /** A queued run the store made active as the one before it ended: it runs here. */
  startNext(ref: SessionRef, next: StartedRun | null): void {
    if (next) queueMicrotask(() => this.start({ ref, ...next }, { unwatched: true }))
  }

  /** The run stopped early: log why (cancelled, or the error) and its `complete`, unless it was fenced. */
  async #fail(run: LocalRun, progress: ReturnType<typeof createProgress>, err: unknown, log: FastifyBaseLogger): Promise<Finish | null> {
    const { ref, runId, controller } = run
    const cause = controller.signal.aborted ? (controller.signal.reason as RunAborted).cause : undefined
    if (err instanceof Fenced || cause === 'fenced') return this.#fenced(run, log)
    // Let go while it waited (a drain): whoever adopts it ends it.
    if (cause === 'parked') return null
    try {
      if (cause) {
        log.info({ cause }, 'run cancelled')
        await this.#append(run, cancelledFrame(ref, runId))
        return await this.#finish(run, progress, { finishReason: 'cancelled', reason: cause })
      }
      logFailure(log, err)
      await this.#append(run, failureFrame(ref, runId, run.requestId, err))
      return await this.#finish(run, progress, { finishReason: 'error' })
    } catch (finalErr) {
      if (finalErr instanceof Fenced) return this.#fenced(run, log)
      // The store could not take the final events: nobody here may wait for them.
      log.error({ err: finalErr }, 'run could not log its end')
      this.#options.subscriptions.end(ref, 'lost')
      // Free the session if the store still can; else its lease lapses (shared stores).
      await this.#options.backend.sessions.releaseRun(ref, run.fence).catch(() => false)
      return { finishReason: 'interrupted' }
    }
  }

  /** Refused a write: ended elsewhere (its `complete` is logged there) or the session is gone. */
  async #fenced(run: LocalRun, log: FastifyBaseLogger): Promise<Finish> {
    run.controller.abort(new RunAborted('fenced'))
    const session = await this.#options.backend.sessions.get(run.ref.owner, run.ref.id).catch(() => null)
    if (session?.gen === run.ref.gen) {
      log.warn('run fenced: another instance ended it')
    } else {
      // Deleted (its watchers heard so from the log) or lost with the store's state.
      log.warn('run fenced: its session is gone')
      this.#options.subscriptions.end(run.ref, 'lost')
    }
    return { finishReason: 'interrupted' }
  }
}

function logFailure(log: FastifyBaseLogger, err: unknown): void {
  const failure = err instanceof UpstreamError ? err : undefined
  if (failure?.failure === 'auth') {
    // Every run will fail the same way until someone fixes the deployment: say so loudly.
    log.error({ err, failure: failure.failure, status: failure.status }, 'UPSTREAM REJECTED OUR CREDENTIALS: check OPENAI_API_KEY / OPENAI_BASE_URL')
  } else if (failure) log.warn({ err, failure: failure.failure, status: failure.status }, 'run failed upstream')
  else log.error({ err }, 'run failed')
}
