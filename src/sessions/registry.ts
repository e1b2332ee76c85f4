import { randomUUID } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import { createProgress, producedMessages, runAgent, type AgentEvent } from '../agent/run-agent.ts'
import type { ModelClient } from '../agent/models/types.ts'
import type { ToolRegistry } from '../agent/tools/registry.ts'
import { UpstreamError } from '../agent/upstream-error.ts'
import {
  ErrorCode,
  ProtocolError,
  errorFrame,
  type CompleteFrame,
  type FinishReason,
  type StatusResumed,
  type UnsequencedRunEvent,
} from '../protocol/index.ts'
import type { Backend, ControlMessage, HistoryMessage, LogSubscription, SessionRecord } from '../store/types.ts'
import { RunAborted, type AbortCause, type Subscriber } from './subscriber.ts'
import { LeaseSweeper } from './lease-sweeper.ts'

export interface RegistryConfig {
  systemPrompt: string
  historyMaxMessages: number
  resumeGraceMs: number
  maxToolRounds: number
  /** How long a run's lease lives without renewal; another instance ends it as interrupted after. */
  leaseMs: number
  /** How long `busy` asks a client to wait before retrying. */
  busyRetryAfterMs: number
}

export interface RegistryOptions {
  backend: Backend
  model: ModelClient
  tools: ToolRegistry
  config: RegistryConfig
  logger: FastifyBaseLogger
  instanceId: string
  /**
   * Awaited after each run event is logged (end-to-end backpressure): resolves once the run may
   * pull more from the model; `signal` is the run's, so a cancel never waits on a slow socket.
   */
  flowControl?: (sessionId: string, subscribers: ReadonlySet<Subscriber>, signal?: AbortSignal) => Promise<void>
  /** Told the moments of runs and resumes (metrics: src/plugins/metrics.ts). */
  observer?: RunObserver
}

/** The moments of one run; whoever measures them keeps the clock. */
export interface RunTracker {
  /** An agent event is about to be logged. */
  event(type: AgentEvent['type']): void
  /** A cancel or a delete asked the run to stop; its latency ends with `ended`. */
  cancelRequested(): void
  /** The run's `complete` is logged. */
  ended(finishReason: FinishReason): void
}

export interface RunObserver {
  started(): RunTracker
  resumed(result: 'ok' | ErrorCode): void
  /** A run of a lost instance was ended here as interrupted. */
  interrupted(): void
}

interface LocalRun {
  runId: string
  sessionId: string
  userId: string
  requestId: string | undefined
  controller: AbortController
  /** Settles when the run's final events are logged. */
  done: Promise<void>
  graceTimer?: NodeJS.Timeout
  tracker?: RunTracker
  /** Another instance ended this run (its lease had expired): it logs nothing more. */
  leaseLost?: boolean
}

export interface ChatRequest {
  sessionId: string | undefined
  content: string
  requestId: string | undefined
}

/**
 * The session registry: owns sessions, their event logs and the runs executing on this
 * instance. Connections subscribe to sessions; runs append to the log. Neither knows the other.
 */
export class SessionRegistry {
  readonly #backend: Backend
  readonly #model: ModelClient
  readonly #tools: ToolRegistry
  readonly #config: RegistryConfig
  readonly #log: FastifyBaseLogger
  readonly #instanceId: string
  readonly #flowControl: RegistryOptions['flowControl']
  readonly #observer: RunObserver | undefined
  readonly #runs = new Map<string, LocalRun>()
  readonly #subscriptions = new Map<Subscriber, Map<string, LogSubscription>>()
  readonly #watchers = new Map<string, Set<Subscriber>>()
  readonly #leases: LeaseSweeper | undefined

  constructor(options: RegistryOptions) {
    this.#backend = options.backend
    this.#model = options.model
    this.#tools = options.tools
    this.#config = options.config
    this.#log = options.logger
    this.#instanceId = options.instanceId
    this.#flowControl = options.flowControl
    this.#observer = options.observer
    this.#backend.control.onMessage((message) => this.#onControl(message))
    // Only a shared store can hold runs of other (possibly dead) instances.
    if (this.#backend.finishRun) {
      const finishRun = this.#backend.finishRun.bind(this.#backend)
      this.#leases = new LeaseSweeper({
        backend: this.#backend,
        // The sweeper ends runs only as interrupted: each one it logs is counted.
        finishRun: async (sessionId, finish) => {
          const logged = await finishRun(sessionId, finish)
          if (logged) this.#observer?.interrupted()
          return logged
        },
        intervalMs: Math.min(1000, this.#config.leaseMs / 4),
        historyMaxMessages: this.#config.historyMaxMessages,
        watched: () => this.#watchers.keys(),
        runsHere: (sessionId, runId) => this.#runs.get(sessionId)?.runId === runId,
        log: this.#log,
      })
      this.#leases.start()
    }
  }

  get activeRunCount(): number {
    return this.#runs.size
  }

  async #owned(sessionId: string, userId: string): Promise<SessionRecord> {
    const session = await this.#backend.sessions.get(sessionId)
    if (!session) throw new ProtocolError(ErrorCode.notFound, 'unknown session', { sessionId })
    if (session.owner !== userId) throw new ProtocolError(ErrorCode.forbidden, 'forbidden', { sessionId })
    return session
  }

  /** Starts a run, or attaches the sender to the run its idempotency key already started. */
  async chat(subscriber: Subscriber, request: ChatRequest): Promise<string> {
    const sessionId = request.sessionId ?? randomUUID()
    const session = await this.#backend.sessions.getOrCreate(sessionId, subscriber.userId)
    if (session.owner !== subscriber.userId) throw new ProtocolError(ErrorCode.forbidden, 'forbidden', { sessionId })
    const runId = randomUUID()
    let startAfterSeq = await this.#backend.events.lastSeq(sessionId)
    const begin = () =>
      this.#backend.sessions.beginRun(sessionId, {
        runId,
        instanceId: this.#instanceId,
        startAfterSeq,
        leaseMs: this.#config.leaseMs,
        ...(request.requestId === undefined ? {} : { requestId: request.requestId }),
      })
    let begun = await begin()
    // The run of a dead instance holds the session until somebody ends it: the first to ask does.
    if (begun.kind === 'busy' && (await this.#leases?.endIfExpired(sessionId, begun.active))) {
      startAfterSeq = await this.#backend.events.lastSeq(sessionId)
      begun = await begin()
    }
    const ids = request.requestId === undefined ? {} : { requestId: request.requestId }
    if (begun.kind === 'busy') {
      throw new ProtocolError(ErrorCode.busy, undefined, {
        ...ids,
        sessionId,
        runId: begun.active.runId,
        retryAfterMs: this.#config.busyRetryAfterMs,
      })
    }
    if (begun.kind === 'duplicate') {
      if (!this.#subscriptions.get(subscriber)?.has(sessionId)) {
        const held = await this.#backend.events.read(sessionId, begun.startAfterSeq)
        if (held.gone) throw new ProtocolError(ErrorCode.historyGone, undefined, { ...ids, sessionId })
        await this.#subscribe(subscriber, sessionId, begun.startAfterSeq)
      }
      return sessionId
    }
    await this.#subscribe(subscriber, sessionId, startAfterSeq)
    this.#start({ runId, sessionId, userId: subscriber.userId, requestId: request.requestId }, session, request.content)
    return sessionId
  }

  async cancel(userId: string, sessionId: string): Promise<void> {
    await this.#owned(sessionId, userId)
    const active = await this.#backend.sessions.activeRun(sessionId)
    if (!active) throw new ProtocolError(ErrorCode.noActiveRun, undefined, { sessionId })
    await this.#abort(sessionId, active.runId, 'cancel')
  }

  /** Replays held events after `lastSeq`, answers `status:resumed`, then streams live. */
  async resume(subscriber: Subscriber, sessionId: string, lastSeq: number): Promise<void> {
    try {
      await this.#replay(subscriber, sessionId, lastSeq)
    } catch (err) {
      this.#observer?.resumed(err instanceof ProtocolError ? err.code : ErrorCode.internal)
      throw err
    }
    this.#observer?.resumed('ok')
  }

  async #replay(subscriber: Subscriber, sessionId: string, lastSeq: number): Promise<void> {
    await this.#owned(sessionId, subscriber.userId)
    this.#unsubscribe(subscriber, sessionId)
    const held = await this.#backend.events.read(sessionId, lastSeq)
    if (held.gone) throw new ProtocolError(ErrorCode.historyGone, undefined, { sessionId })
    for (const event of held.events) subscriber.deliver(event.frame)
    const replayedUpTo = held.events.at(-1)?.seq ?? lastSeq
    let active = await this.#backend.sessions.activeRun(sessionId)
    if (active && (await this.#leases?.endIfExpired(sessionId, active))) active = null
    // Nothing awaited between subscribing and answering: live events follow `resumed`.
    await this.#subscribe(subscriber, sessionId, replayedUpTo)
    const resumed: StatusResumed = {
      type: 'status',
      session_id: sessionId,
      content: 'resumed',
      metadata: { last_seq: replayedUpTo, active_run: active?.runId ?? null },
    }
    subscriber.deliver(JSON.stringify(resumed))
  }

  /** The session as its owner may see it (REST). */
  async get(userId: string, sessionId: string): Promise<SessionRecord> {
    return this.#owned(sessionId, userId)
  }

  /** Aborts the session's run, waits for its final events, then forgets the session. */
  async delete(userId: string, sessionId: string): Promise<void> {
    await this.#owned(sessionId, userId)
    const active = await this.#backend.sessions.activeRun(sessionId)
    if (active) await this.#abort(sessionId, active.runId, 'deleted')
    await this.#runs.get(sessionId)?.done
    for (const subscriber of this.#watchers.get(sessionId) ?? []) this.#unsubscribe(subscriber, sessionId)
    await this.#backend.sessions.delete(sessionId)
    await this.#backend.events.delete(sessionId)
  }

  /** A connection went away: it stops watching; runs nobody watches end after the grace. */
  async disconnect(subscriber: Subscriber): Promise<void> {
    const sessions = [...(this.#subscriptions.get(subscriber)?.keys() ?? [])]
    this.#subscriptions.delete(subscriber)
    await Promise.all(sessions.map((sessionId) => this.#unwatch(subscriber, sessionId)))
  }

  /** Shutdown: runs get `graceMs` to finish, then are cancelled; resolves when all have ended. */
  async drain(graceMs: number): Promise<void> {
    this.#leases?.stop()
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
  }

  async #subscribe(subscriber: Subscriber, sessionId: string, afterSeq: number): Promise<void> {
    let mine = this.#subscriptions.get(subscriber)
    if (!mine) this.#subscriptions.set(subscriber, (mine = new Map()))
    if (mine.has(sessionId)) return
    // Counted first, so that the caller's next step follows the subscription at once (see EventLog.subscribe).
    await this.#backend.sessions.addWatcher(sessionId, subscriber.id)
    const subscription = await this.#backend.events.subscribe(sessionId, afterSeq, (event) => subscriber.deliver(event.frame))
    mine.set(sessionId, subscription)
    let local = this.#watchers.get(sessionId)
    if (!local) this.#watchers.set(sessionId, (local = new Set()))
    local.add(subscriber)
  }

  #unsubscribe(subscriber: Subscriber, sessionId: string): void {
    const mine = this.#subscriptions.get(subscriber)
    mine?.get(sessionId)?.close()
    mine?.delete(sessionId)
    const local = this.#watchers.get(sessionId)
    local?.delete(subscriber)
    if (local?.size === 0) this.#watchers.delete(sessionId)
  }

  async #unwatch(subscriber: Subscriber, sessionId: string): Promise<void> {
    this.#unsubscribe(subscriber, sessionId)
    const remaining = await this.#backend.sessions.removeWatcher(sessionId, subscriber.id)
    if (remaining > 0) return
    const active = await this.#backend.sessions.activeRun(sessionId)
    if (active) await this.#backend.control.publish({ kind: 'orphaned', sessionId, runId: active.runId })
  }

  async #abort(sessionId: string, runId: string, cause: AbortCause): Promise<void> {
    const local = this.#runs.get(sessionId)
    if (local?.runId === runId) {
      local.tracker?.cancelRequested()
      local.controller.abort(new RunAborted(cause))
      return
    }
    await this.#backend.control.publish({ kind: 'cancel', sessionId, runId, reason: cause === 'deleted' ? 'deleted' : 'client' })
  }

  #onControl(message: ControlMessage): void {
    const run = this.#runs.get(message.sessionId)
    if (run?.runId !== message.runId) return
    if (message.kind === 'cancel') {
      run.tracker?.cancelRequested()
      run.controller.abort(new RunAborted(message.reason === 'deleted' ? 'deleted' : 'cancel'))
      return
    }
    clearTimeout(run.graceTimer)
    run.graceTimer = setTimeout(() => void this.#abortIfUnwatched(run), this.#config.resumeGraceMs)
    run.graceTimer.unref()
  }

  async #abortIfUnwatched(run: LocalRun): Promise<void> {
    try {
      if ((await this.#backend.sessions.watcherCount(run.sessionId)) > 0) return
      this.#log.info({ sessionId: run.sessionId, runId: run.runId }, 'run aborted: nobody resumed within the grace')
      run.controller.abort(new RunAborted('disconnect'))
    } catch (err) {
      this.#log.error({ err, sessionId: run.sessionId, runId: run.runId }, 'could not check watchers')
    }
  }

  #start(ids: Omit<LocalRun, 'controller' | 'done'>, session: SessionRecord, content: string): void {
    const run: LocalRun = { ...ids, controller: new AbortController(), done: Promise.resolve(), tracker: this.#observer?.started() }
    this.#runs.set(run.sessionId, run)
    run.done = this.#execute(run, session, content)
      .catch((err: unknown) => this.#log.error({ err, sessionId: run.sessionId, runId: run.runId }, 'run failed to finish'))
      .finally(() => {
        clearTimeout(run.graceTimer)
        if (this.#runs.get(run.sessionId) === run) this.#runs.delete(run.sessionId)
      })
  }

  async #append(sessionId: string, event: UnsequencedRunEvent): Promise<void> {
    if (this.#runs.get(sessionId)?.leaseLost) return
    await this.#backend.events.append(sessionId, event)
    const local = this.#watchers.get(sessionId)
    if (this.#flowControl && local) await this.#flowControl(sessionId, local, this.#runs.get(sessionId)?.controller.signal)
  }

  async #execute(run: LocalRun, session: SessionRecord, content: string): Promise<void> {
    const { sessionId, runId, controller } = run
    const log = this.#log.child({ sessionId, runId, userId: run.userId })
    const requestMeta = run.requestId === undefined ? {} : { request_id: run.requestId }
    const lease = setInterval(() => {
      this.#backend.sessions.renewLease(sessionId, runId, this.#config.leaseMs).then(
        (held) => {
          if (held || controller.signal.aborted) return
          // Ended elsewhere (we stalled past the lease, or the session was deleted): stop paying.
          log.warn('lease lost: the run was ended by another instance')
          run.leaseLost = true
          controller.abort(new RunAborted('cancel'))
        },
        (err: unknown) => log.warn({ err }, 'lease renewal failed'),
      )
    }, this.#config.leaseMs / 3)
    lease.unref()
    const userMessage: HistoryMessage = { role: 'user', content }
    const progress = createProgress()
    let finishReason: FinishReason = 'stop'
    let reason: string | undefined
    try {
      await this.#append(sessionId, { type: 'status', session_id: sessionId, content: 'thinking', metadata: { run_id: runId, ...requestMeta } })
      await this.#backend.sessions.appendMessages(sessionId, [userMessage], this.#config.historyMaxMessages)
      log.info('run started')
      const outcome = await runAgent(
        {
          model: this.#model,
          tools: this.#tools,
          messages: [{ role: 'system', content: this.#config.systemPrompt }, ...withoutOrphanedToolResults(session.messages), userMessage],
          signal: controller.signal,
          maxToolRounds: this.#config.maxToolRounds,
          sessionId,
          userId: run.userId,
          emit: (event) => {
            run.tracker?.event(event.type)
            return this.#append(sessionId, runEvent(sessionId, runId, event))
          },
        },
        progress,
      )
      finishReason = outcome.finishReason
      reason = outcome.reason
    } catch (err) {
      if (controller.signal.aborted) {
        // Only this registry aborts the run's controller, always with a RunAborted.
        const { cause } = controller.signal.reason as RunAborted
        log.info({ cause }, 'run cancelled')
        finishReason = 'cancelled'
        reason = cause
        await this.#append(sessionId, { type: 'status', session_id: sessionId, content: 'cancelled', metadata: { run_id: runId } })
      } else {
        finishReason = 'error'
        const failure = err instanceof UpstreamError ? err : undefined
        if (failure?.failure === 'auth') {
          // Every run will fail the same way until someone fixes the deployment: say so loudly.
          log.error({ err, failure: failure.failure, status: failure.status }, 'UPSTREAM REJECTED OUR CREDENTIALS: check OPENAI_API_KEY / OPENAI_BASE_URL')
        } else if (failure) log.warn({ err, failure: failure.failure, status: failure.status }, 'run failed upstream')
        else log.error({ err }, 'run failed')
        const code = failure?.code ?? ErrorCode.internal
        const frame = errorFrame(code, sessionId, failure?.message ?? 'internal error', {
          retryable: failure?.retryable ?? true,
          runId,
          ...(failure?.retryAfterMs === undefined ? {} : { retryAfterMs: failure.retryAfterMs }),
          ...(run.requestId === undefined ? {} : { requestId: run.requestId }),
        })
        await this.#append(sessionId, frame)
      }
    } finally {
      clearInterval(lease)
    }
    const complete: Omit<CompleteFrame, 'seq'> = {
      type: 'complete',
      session_id: sessionId,
      content: progress.content,
      metadata: {
        run_id: runId,
        finish_reason: finishReason,
        ...(progress.usage ? { usage: progress.usage } : {}),
        ...requestMeta,
        ...(reason === undefined ? {} : { reason }),
      },
    }
    try {
      await this.#backend.sessions.appendMessages(sessionId, producedMessages(progress), this.#config.historyMaxMessages)
      // A shared store logs `complete` and frees the session in one step: a client that reads it
      // and sends the next chat at once (to any instance) never gets `busy`.
      if (this.#backend.finishRun) await this.#backend.finishRun(sessionId, { runId, event: complete })
      else await this.#backend.events.append(sessionId, complete)
      run.tracker?.ended(finishReason)
      log.info({ finishReason }, 'run complete')
    } finally {
      await this.#backend.sessions.endRun(sessionId, runId)
    }
  }
}

/**
 * History trimmed from the front may start with tool results whose assistant tool_calls were
 * dropped; OpenAI refuses such a request (400), so they go too.
 */
function withoutOrphanedToolResults(messages: HistoryMessage[]): HistoryMessage[] {
  const first = messages.findIndex((message) => message.role !== 'tool')
  return first === -1 ? [] : messages.slice(first)
}

function runEvent(sessionId: string, runId: string, event: AgentEvent): UnsequencedRunEvent {
  switch (event.type) {
    case 'token':
      return { type: 'token', session_id: sessionId, content: event.text, metadata: { run_id: runId } }
    case 'tool_call':
      return {
        type: 'status',
        session_id: sessionId,
        content: 'tool_call',
        metadata: { run_id: runId, tool: event.tool, call_id: event.callId, arguments: event.arguments },
      }
    case 'tool_result':
      return {
        type: 'status',
        session_id: sessionId,
        content: 'tool_result',
        metadata: { run_id: runId, tool: event.tool, call_id: event.callId, result: event.result, is_error: event.isError },
      }
  }
}
