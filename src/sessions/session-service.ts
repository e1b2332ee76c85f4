import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyBaseLogger } from 'fastify'
import { ErrorCode, ProtocolError, type ClientTool, type OnBusy, type PendingCall, type StatusResumed } from '../protocol/index.ts'
import { refKey, type ActiveRun, type Backend, type RunInput, type SessionPage, type SessionRecord, type SessionRef, type ToolAnswer } from '../store/types.ts'
import { checkClientTools } from './client-tools.ts'
import { beginAndWatch, type BeginRunDeps } from './begin-run.ts'
import type { LeaseSweeper } from './lease-sweeper.ts'
import type { RunExecutor, RunObserver } from './run-executor.ts'
import type { Subscriptions } from './subscriptions.ts'
import { WatcherClosed, type Watcher } from './watcher.ts'

export interface SessionServiceConfig {
  instanceId: string
  leaseMs: number
  historyMaxMessages: number
  maxSessionsPerUser: number
  maxQueuedRuns: number
  /** The names of the server's tools now (a client tool may not take one). */
  serverToolNames: () => readonly string[]
  /** How long `busy` asks a client to wait before retrying. */
  busyRetryAfterMs: number
}

export interface SessionServiceOptions {
  backend: Backend
  executor: RunExecutor
  subscriptions: Subscriptions
  /** Only with a shared store: ends the runs of dead instances. */
  leases?: LeaseSweeper | undefined
  observer?: RunObserver | undefined
  config: SessionServiceConfig
  log: FastifyBaseLogger
}

export interface ChatRequest {
  sessionId: string | undefined
  content: string
  requestId: string | undefined
  onBusy?: OnBusy | undefined
  /** The id of an earlier user message this one replaces. */
  edit?: string | undefined
  reasoning?: boolean | undefined
  clientTools?: ClientTool[] | undefined
}

/** (1.1) An answer to a call that waits on the client (tool_approval, tool_output). */
export interface ToolAnswerRequest {
  sessionId: string
  callId: string
  answer: ToolAnswer
}

export interface RegenerateRequest {
  sessionId: string
  requestId: string | undefined
  onBusy?: OnBusy | undefined
  reasoning?: boolean | undefined
  clientTools?: ClientTool[] | undefined
}

/**
 * What clients ask of sessions (chat, cancel, resume, read, delete), each in a few store
 * steps: runs belong to the executor, subscriptions to the hub. Sessions are always looked
 * up by (owner, id): another user's session of the same id is invisible (protocol.md §2).
 */
export class SessionService {
  readonly #backend: Backend
  readonly #executor: RunExecutor
  readonly #subscriptions: Subscriptions
  readonly #leases: LeaseSweeper | undefined
  readonly #observer: RunObserver | undefined
  readonly #config: SessionServiceConfig
  readonly #runDeps: BeginRunDeps
  readonly #log: FastifyBaseLogger
  /** Cancels followed until the run they stop has ended elsewhere; stopped by the drain. */
  readonly #following = new Set<Promise<void>>()
  readonly #drained = new AbortController()

  constructor(options: SessionServiceOptions) {
    this.#backend = options.backend
    this.#executor = options.executor
    this.#subscriptions = options.subscriptions
    this.#leases = options.leases
    this.#observer = options.observer
    this.#config = options.config
    this.#log = options.log
    this.#runDeps = { backend: this.#backend, executor: this.#executor, subscriptions: this.#subscriptions, leases: this.#leases, config: this.#config }
  }

  get activeRunCount(): number {
    return this.#executor.activeRunCount
  }

  get subscriptionCount(): number {
    return this.#subscriptions.count
  }

  async #find(owner: string, sessionId: string, ids: { sessionId: string; requestId?: string } = { sessionId }): Promise<SessionRecord> {
    const session = await this.#backend.sessions.get(owner, sessionId)
    if (!session) throw new ProtocolError(ErrorCode.notFound, 'unknown session', ids)
    return session
  }

  /**
   * Starts a run (creating the session when new), queues it (`on_busy`), or attaches the
   * sender to the run its idempotency key already asked for. `edit` replaces an earlier user
   * message of the session (which must exist).
   */
  async chat(watcher: Watcher, request: ChatRequest): Promise<string> {
    const sessionId = request.sessionId ?? randomUUID()
    const ids = { sessionId, ...(request.requestId === undefined ? {} : { requestId: request.requestId }) }
    const message = { id: randomUUID(), role: 'user' as const, content: request.content }
    let ref: SessionRef
    if (request.edit === undefined) {
      const opened = await this.#backend.sessions.open(watcher.userId, sessionId, this.#config.maxSessionsPerUser)
      if (opened.kind === 'too_many') {
        throw new ProtocolError(ErrorCode.tooManySessions, `you hold ${this.#config.maxSessionsPerUser} sessions: delete one first`, { ...ids, retryable: false })
      }
      ref = refOf(opened.session)
    } else {
      ref = refOf(await this.#find(watcher.userId, sessionId, ids))
    }
    const input: RunInput = request.edit === undefined ? { kind: 'message', message } : { kind: 'edit', messageId: request.edit, message }
    const clientTools = request.clientTools && checkClientTools(request.clientTools, this.#config.serverToolNames(), ids)
    await beginAndWatch(this.#runDeps, watcher, ref, { input, requestId: request.requestId, onBusy: request.onBusy, reasoning: request.reasoning, clientTools })
    return sessionId
  }

  /**
   * (1.1) Answers a call that waits on the client: the first answer claims it in the store
   * (atomically, whichever instance it reaches) and goes to the run's instance; any later one is
   * `not_pending`.
   */
  async answer(owner: string, request: ToolAnswerRequest): Promise<void> {
    const { sessionId, callId, answer } = request
    const session = await this.#find(owner, sessionId)
    const ref = refOf(session)
    // When the run's holder is gone (drained or died), whoever claims the answer holds the run too: the store decides.
    const adopt = session.active ? this.#executor.adoptionOf(session.active.runId) : undefined
    const claimed = await this.#backend.sessions.claimPending(ref, callId, answer, adopt)
    if (!claimed) throw new ProtocolError(ErrorCode.notPending, `call ${callId} is not waiting for ${answer.kind === 'approval' ? 'an approval' : 'a tool output'}`, { sessionId })
    if (claimed.adopted) return this.#executor.startAdopted(ref, claimed.adopted)
    await this.#backend.control.publish({ kind: 'answer', ref, runId: claimed.runId, callId, answer })
  }

  /** Answers the session's last user message again, its last answer dropped (protocol.md §2). */
  async regenerate(watcher: Watcher, request: RegenerateRequest): Promise<void> {
    const ids = { sessionId: request.sessionId, ...(request.requestId === undefined ? {} : { requestId: request.requestId }) }
    const ref = refOf(await this.#find(watcher.userId, request.sessionId, ids))
    const clientTools = request.clientTools && checkClientTools(request.clientTools, this.#config.serverToolNames(), ids)
    await beginAndWatch(this.#runDeps, watcher, ref, { input: { kind: 'regenerate' }, requestId: request.requestId, onBusy: request.onBusy, reasoning: request.reasoning, clientTools })
  }

  /** The owner's sessions, most recently updated first (REST). */
  async list(owner: string, limit: number, cursor: string | undefined): Promise<SessionPage> {
    return this.#backend.sessions.list(owner, limit, cursor)
  }

  /** Cancels the session's active run; with `runId`, only when that is the active one. */
  async cancel(owner: string, sessionId: string, runId?: string): Promise<void> {
    const session = await this.#find(owner, sessionId)
    const { active } = session
    if (!active || (runId !== undefined && active.runId !== runId)) throw new ProtocolError(ErrorCode.noActiveRun, undefined, { sessionId })
    const ref = refOf(session)
    await this.#executor.abort(ref, active, 'cancel')
    if (this.#executor.isLocal(ref, active.runId)) return
    // Published to the run's holder, which may be none right now (it died; the lease has not lapsed).
    const following = this.#remoteRunEnded(ref, active, 'cancel')
      .catch((err: unknown) => this.#log.warn({ err, sessionId, userId: owner, runId: active.runId }, 'could not follow the cancel of a run held elsewhere'))
      .finally(() => this.#following.delete(following))
    this.#following.add(following)
  }

  /** Replays held events after `lastSeq` under the socket's backpressure, answers `status:resumed`, then streams live. */
  async resume(watcher: Watcher, sessionId: string, lastSeq: number): Promise<void> {
    try {
      await this.#resume(watcher, sessionId, lastSeq)
    } catch (err) {
      this.#observer?.resumed(err instanceof ProtocolError ? err.code : ErrorCode.internal)
      throw err
    }
    this.#observer?.resumed('ok')
  }

  async #resume(watcher: Watcher, sessionId: string, lastSeq: number): Promise<void> {
    const session = await this.#find(watcher.userId, sessionId)
    const ref = refOf(session)
    await this.#backend.sessions.touch(ref)
    const held = await this.#backend.events.read(ref, lastSeq)
    if (held.gone) throw new ProtocolError(ErrorCode.historyGone, undefined, { sessionId })
    // A resume restarts the connection's watch of the session from `lastSeq`.
    watcher.watching.get(refKey(ref))?.close()
    for (const event of held.events) {
      if (!watcher.writable) await watcher.whenWritable()
      if (!watcher.isOpen) return
      watcher.deliver(event.frame)
    }
    const replayedUpTo = held.events.at(-1)?.seq ?? lastSeq
    let active = await this.#backend.sessions.activeRun(ref)
    if (active && (await this.#leases?.endIfExpired(ref, active))) active = null
    try {
      await this.#subscriptions.subscribe(watcher, ref, replayedUpTo)
    } catch (err) {
      if (err instanceof WatcherClosed) return
      throw err
    }
    // Nothing awaited between subscribing and answering: live events follow `resumed`.
    const pending = active ? await this.#backend.sessions.listPending(ref) : []
    const resumed: StatusResumed = {
      type: 'status',
      session_id: sessionId,
      content: 'resumed',
      metadata: { last_seq: replayedUpTo, active_run: active?.runId ?? null, pending },
    }
    watcher.deliver(JSON.stringify(resumed))
  }

  /** The session as its owner may see it (REST), with its calls waiting on the client; a read keeps it alive like a resume. */
  async get(owner: string, sessionId: string): Promise<SessionRecord & { pending: PendingCall[] }> {
    const session = await this.#find(owner, sessionId)
    await this.#backend.sessions.touch(refOf(session))
    return { ...session, pending: session.active ? await this.#backend.sessions.listPending(refOf(session)) : [] }
  }

  /**
   * Aborts the session's run wherever it runs and waits for its `complete` to be logged, then
   * forgets the session; every watcher, on any instance, then reads the log's end.
   */
  async delete(owner: string, sessionId: string): Promise<void> {
    const session = await this.#find(owner, sessionId)
    const ref = refOf(session)
    if (session.active) {
      // Queued runs go first: nothing may start after the deleted run ends.
      await this.#backend.sessions.clearQueue(ref)
      const { runId } = session.active
      await this.#executor.abort(ref, session.active, 'deleted')
      await (this.#executor.whenDone(ref, runId) ?? this.#remoteRunEnded(ref, session.active, 'deleted'))
    }
    await this.#backend.sessions.delete(ref)
  }

  /**
   * Polls until run `told` of another instance is over (its lease lapsing counts), bounded by
   * two leases. The stop was published to the run's holder; a run that changes hands meanwhile
   * (a dead instance's waiting run, adopted once its lease lapsed, by any instance's sweeper)
   * has its new holder told again, and a lapsed one nobody took is adopted here to be ended.
   */
  async #remoteRunEnded(ref: SessionRef, told: ActiveRun, cause: 'cancel' | 'deleted'): Promise<void> {
    const { runId } = told
    let toldFence = told.fence
    const deadline = Date.now() + 2 * this.#config.leaseMs
    while (Date.now() < deadline && !this.#drained.signal.aborted) {
      const active = await this.#backend.sessions.activeRun(ref)
      if (active?.runId !== runId) return
      if (await this.#leases?.endIfExpired(ref, active)) return
      // A waiting run whose instance is gone is adopted (here, or by this instance's sweeper meanwhile) and ended here.
      if (this.#executor.isLocal(ref, runId) || (active.leaseExpiresAt <= Date.now() && (await this.#executor.adopt(ref, active, cause)))) {
        await this.#executor.abort(ref, active, cause)
        return this.#executor.whenDone(ref, runId)
      }
      if (active.fence !== toldFence) {
        toldFence = active.fence
        await this.#executor.abort(ref, active, cause)
      }
      await sleep(25, undefined, { signal: this.#drained.signal }).catch(() => {})
    }
  }

  /** Shutdown: runs get `graceMs` to finish, then are cancelled. */
  async drain(graceMs: number): Promise<void> {
    this.#leases?.stop()
    this.#drained.abort()
    await Promise.all(this.#following)
    await this.#executor.drain(graceMs)
  }
}

function refOf(session: SessionRecord): SessionRef {
  return { owner: session.owner, id: session.id, gen: session.gen }
}
