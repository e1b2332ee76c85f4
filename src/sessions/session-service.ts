import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { ErrorCode, ProtocolError, type StatusResumed } from '../protocol/index.ts'
import { refKey, type Backend, type SessionRecord, type SessionRef } from '../store/types.ts'
import type { LeaseSweeper } from './lease-sweeper.ts'
import type { RunExecutor, RunObserver } from './run-executor.ts'
import type { Subscriptions } from './subscriptions.ts'
import { WatcherClosed, type Watcher } from './watcher.ts'

export interface SessionServiceConfig {
  instanceId: string
  leaseMs: number
  historyMaxMessages: number
  maxSessionsPerUser: number
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
}

export interface ChatRequest {
  sessionId: string | undefined
  content: string
  requestId: string | undefined
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

  constructor(options: SessionServiceOptions) {
    this.#backend = options.backend
    this.#executor = options.executor
    this.#subscriptions = options.subscriptions
    this.#leases = options.leases
    this.#observer = options.observer
    this.#config = options.config
  }

  get activeRunCount(): number {
    return this.#executor.activeRunCount
  }

  get subscriptionCount(): number {
    return this.#subscriptions.count
  }

  async #find(owner: string, sessionId: string): Promise<SessionRecord> {
    const session = await this.#backend.sessions.get(owner, sessionId)
    if (!session) throw new ProtocolError(ErrorCode.notFound, 'unknown session', { sessionId })
    return session
  }

  /** Starts a run, or attaches the sender to the run its idempotency key already started. */
  async chat(watcher: Watcher, request: ChatRequest): Promise<string> {
    const sessionId = request.sessionId ?? randomUUID()
    const ids = { sessionId, ...(request.requestId === undefined ? {} : { requestId: request.requestId }) }
    const opened = await this.#backend.sessions.open(watcher.userId, sessionId, this.#config.maxSessionsPerUser)
    if (opened.kind === 'too_many') {
      throw new ProtocolError(ErrorCode.tooManySessions, `you hold ${this.#config.maxSessionsPerUser} sessions: delete one first`, { ...ids, retryable: false })
    }
    const { session } = opened
    const ref = refOf(session)
    const runId = randomUUID()
    const userMessage = { role: 'user' as const, content: request.content }
    const begin = () =>
      this.#backend.sessions.beginRun(ref, {
        runId,
        instanceId: this.#config.instanceId,
        leaseMs: this.#config.leaseMs,
        userMessage,
        maxMessages: this.#config.historyMaxMessages,
        ...(request.requestId === undefined ? {} : { requestId: request.requestId }),
      })
    let begun = await begin()
    // The run of a dead instance holds the session until somebody ends it: the first to ask does.
    if (begun.kind === 'busy' && (await this.#leases?.endIfExpired(ref, begun.active))) begun = await begin()
    switch (begun.kind) {
      case 'gone':
        throw new ProtocolError(ErrorCode.notFound, 'the session was deleted meanwhile', ids)
      case 'busy':
        throw new ProtocolError(ErrorCode.busy, undefined, { ...ids, runId: begun.active.runId, retryAfterMs: this.#config.busyRetryAfterMs })
      case 'duplicate': {
        if (watcher.watching.get(refKey(ref))) return sessionId
        const held = await this.#backend.events.read(ref, begun.startAfterSeq)
        if (held.gone) throw new ProtocolError(ErrorCode.historyGone, undefined, ids)
        await this.#watch(watcher, ref, begun.startAfterSeq)
        return sessionId
      }
      case 'started': {
        const start = { ref, runId, requestId: request.requestId, history: begun.history, userMessage }
        // The sender watches from the run's start before the run logs anything.
        try {
          await this.#subscriptions.subscribe(watcher, ref, begun.startAfterSeq)
        } catch (err) {
          // Gone meanwhile: the run goes on for the grace, as for any disconnect.
          if (err instanceof WatcherClosed) {
            this.#executor.start(start, { unwatched: true })
            return sessionId
          }
          // Nothing will execute it: free the session before answering.
          await this.#backend.sessions.releaseRun(ref, runId)
          throw err
        }
        this.#executor.start(start)
        return sessionId
      }
    }
  }

  /** Subscribes; a connection that closed meanwhile is no error (the hub counted it gone). */
  async #watch(watcher: Watcher, ref: SessionRef, afterSeq: number): Promise<void> {
    try {
      await this.#subscriptions.subscribe(watcher, ref, afterSeq)
    } catch (err) {
      if (!(err instanceof WatcherClosed)) throw err
    }
  }

  async cancel(owner: string, sessionId: string): Promise<void> {
    const session = await this.#find(owner, sessionId)
    if (!session.active) throw new ProtocolError(ErrorCode.noActiveRun, undefined, { sessionId })
    await this.#executor.abort(refOf(session), session.active.runId, 'cancel')
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
    const resumed: StatusResumed = {
      type: 'status',
      session_id: sessionId,
      content: 'resumed',
      metadata: { last_seq: replayedUpTo, active_run: active?.runId ?? null },
    }
    watcher.deliver(JSON.stringify(resumed))
  }

  /** The session as its owner may see it (REST); a read keeps it alive like a resume. */
  async get(owner: string, sessionId: string): Promise<SessionRecord> {
    const session = await this.#find(owner, sessionId)
    await this.#backend.sessions.touch(refOf(session))
    return session
  }

  /**
   * Aborts the session's run wherever it runs and waits for its `complete` to be logged, then
   * forgets the session; every watcher, on any instance, then reads the log's end.
   */
  async delete(owner: string, sessionId: string): Promise<void> {
    const session = await this.#find(owner, sessionId)
    const ref = refOf(session)
    if (session.active) {
      const { runId } = session.active
      await this.#executor.abort(ref, runId, 'deleted')
      await (this.#executor.whenDone(ref, runId) ?? this.#remoteRunEnded(ref, runId))
    }
    await this.#backend.sessions.delete(ref)
  }

  /** Polls until another instance's run is over (its lease lapsing counts); bounded by two leases. */
  async #remoteRunEnded(ref: SessionRef, runId: string): Promise<void> {
    const deadline = Date.now() + 2 * this.#config.leaseMs
    while (Date.now() < deadline) {
      const active = await this.#backend.sessions.activeRun(ref)
      if (active?.runId !== runId) return
      if (await this.#leases?.endIfExpired(ref, active)) return
      await sleep(25)
    }
  }

  /** Shutdown: runs get `graceMs` to finish, then are cancelled. */
  async drain(graceMs: number): Promise<void> {
    this.#leases?.stop()
    await this.#executor.drain(graceMs)
  }
}

function refOf(session: SessionRecord): SessionRef {
  return { owner: session.owner, id: session.id, gen: session.gen }
}
