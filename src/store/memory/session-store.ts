import type { UnsequencedRunEvent } from '../../protocol/index.ts'
import type {
  ActiveRun,
  BeginRun,
  BeginRunResult,
  ExpiredLease,
  FinishRun,
  Finished,
  HistoryMessage,
  LoggedEvent,
  OpenResult,
  SessionPage,
  SessionRecord,
  SessionRef,
  SessionStore,
  SessionSummary,
  Settles,
  StartedRun,
} from '../types.ts'
import { keyPerRef } from '../types.ts'
import type { Adoption, AdoptedRun, CallState, Claim, StoredAnswer, WaitingRound } from '../waiting-round.ts'
import { memoryRounds } from './waiting-rounds.ts'
import type { PendingCall } from '../../protocol/index.ts'
import type { MemoryEventLog } from './event-log.ts'
import { applyRunInput, inputApplies } from '../run-input.ts'
import { decodeCursor, encodeCursor, withPosition } from '../session-list.ts'
import { frozenCopy } from './frozen.ts'

/** Idempotency keys remembered per session; older ones are forgotten first. */
export const REQUEST_IDS_KEPT = 256

interface MemorySession {
  ref: SessionRef
  messages: HistoryMessage[]
  createdAt: number
  /** When a run last started or ended (protocol.md §4). */
  updatedAt: number
  /** The TTL counts from here: the last run, resume or REST read (§5). */
  touchedAt: number
  title: string
  active: ActiveRun | null
  /** Runs waiting behind the active one, first in line first. */
  queue: QueuedRun[]
  /** (1.1) The tool round the active run waits in, when it has waited in this one. */
  round: WaitingRound | null
  requests: Map<string, { runId: string; startAfterSeq: number }>
  watchers: Set<string>
}

type QueuedRun = Pick<BeginRun, 'runId' | 'requestId' | 'input' | 'reasoning' | 'clientTools' | 'maxMessages' | 'title'>

export interface MemoryStoreOptions {
  ttlSeconds: number
  log: MemoryEventLog
  now?: () => number
}

const ownerKey = (owner: string, id: string) => `${owner.length}:${owner}:${id}`
const ownerKeyOf = keyPerRef((ref) => ownerKey(ref.owner, ref.id))

/** One instance's sessions; every check-then-write is synchronous, so it is atomic. */
export class MemorySessionStore implements SessionStore {
  readonly #sessions = new Map<string, MemorySession>()
  readonly #perOwner = new Map<string, Set<string>>()
  readonly #log: MemoryEventLog
  readonly #ttlMs: number
  readonly #now: () => number
  readonly #sweeper: NodeJS.Timeout
  #generation = 0

  constructor(options: MemoryStoreOptions) {
    this.#ttlMs = options.ttlSeconds * 1000
    this.#log = options.log
    this.#now = options.now ?? Date.now
    this.#sweeper = setInterval(() => this.sweep(), Math.min(this.#ttlMs, 60_000)).unref()
  }

  /** Forgets sessions idle past their TTL; a session with a run is not idle. */
  sweep(): void {
    const now = this.#now()
    for (const session of this.#sessions.values()) this.#expireIfIdle(session, now)
  }

  #expireIfIdle(session: MemorySession, now: number): boolean {
    if (session.active || session.touchedAt + this.#ttlMs > now) return false
    this.#forget(session, 'expired')
    return true
  }

  #forget(session: MemorySession, reason: 'expired' | 'deleted'): void {
    const key = ownerKey(session.ref.owner, session.ref.id)
    this.#sessions.delete(key)
    const owned = this.#perOwner.get(session.ref.owner)
    owned?.delete(session.ref.id)
    if (owned?.size === 0) this.#perOwner.delete(session.ref.owner)
    this.#log.end(session.ref, reason)
  }

  #find(key: string): MemorySession | undefined {
    const session = this.#sessions.get(key)
    return session && !this.#expireIfIdle(session, this.#now()) ? session : undefined
  }

  /** The session `ref` names, if it still exists as that generation. */
  #live(ref: SessionRef): MemorySession | undefined {
    const session = this.#find(ownerKeyOf(ref))
    return session?.ref.gen === ref.gen ? session : undefined
  }

  async get(owner: string, id: string): Promise<SessionRecord | null> {
    const session = this.#find(ownerKey(owner, id))
    return session ? publicRecord(session) : null
  }

  async open(owner: string, id: string, maxSessions: number): Promise<OpenResult> {
    const found = this.#find(ownerKey(owner, id))
    if (found) return { kind: 'open', session: publicRecord(found) }
    const owned = this.#perOwner.get(owner) ?? new Set<string>()
    // Expired ones do not count: look at each (cheap: at most maxSessions of them).
    if (owned.size >= maxSessions) for (const other of [...owned]) this.#find(ownerKey(owner, other))
    if (owned.size >= maxSessions) return { kind: 'too_many' }
    const now = this.#now()
    const session: MemorySession = {
      ref: { owner, id, gen: String(++this.#generation) },
      messages: [],
      createdAt: now,
      updatedAt: now,
      touchedAt: now,
      title: '',
      active: null,
      queue: [],
      round: null,
      requests: new Map(),
      watchers: new Set(),
    }
    this.#sessions.set(ownerKey(owner, id), session)
    owned.add(id)
    this.#perOwner.set(owner, owned)
    return { kind: 'open', session: publicRecord(session) }
  }

  async touch(ref: SessionRef): Promise<boolean> {
    const session = this.#live(ref)
    if (session) session.touchedAt = this.#now()
    return Boolean(session)
  }

  async expiresIn(ref: SessionRef): Promise<number | null> {
    const session = this.#live(ref)
    if (!session) return null
    return session.active ? this.#ttlMs : session.touchedAt + this.#ttlMs - this.#now()
  }

  async delete(ref: SessionRef): Promise<boolean> {
    const session = this.#live(ref)
    if (session) this.#forget(session, 'deleted')
    return Boolean(session)
  }

  async beginRun(ref: SessionRef, run: BeginRun): Promise<BeginRunResult> {
    const session = this.#live(ref)
    if (!session) return { kind: 'gone' }
    if (run.requestId !== undefined) {
      const seen = session.requests.get(run.requestId)
      if (seen) return { kind: 'duplicate', ...seen }
    }
    if (session.active) return this.#enqueue(ref, session, run)
    const started = this.#start(ref, session, run, run.instanceId, run.leaseMs)
    return started ? { kind: 'started', ...started } : { kind: 'no_message' }
  }

  /** Behind the active run, or first in line (interrupt); its `status:queued` logged at once. */
  #enqueue(ref: SessionRef, session: MemorySession, run: BeginRun): BeginRunResult {
    const active = session.active as ActiveRun
    if (!run.onBusy || run.onBusy === 'reject' || session.queue.length >= (run.maxQueued ?? 0)) return { kind: 'busy', active: { ...active } }
    if (!inputApplies(session.messages, run.input)) return { kind: 'no_message' }
    const queued: QueuedRun = { runId: run.runId, requestId: run.requestId, input: run.input, reasoning: run.reasoning, clientTools: run.clientTools, maxMessages: run.maxMessages, title: run.title }
    const position = run.onBusy === 'interrupt' ? 1 : session.queue.length + 1
    session.queue.splice(position - 1, 0, queued)
    const startAfterSeq = this.#log.lastSeq(ref)
    this.#remember(session, run.requestId, run.runId, startAfterSeq)
    if (run.queuedEvent) this.#log.append(ref, withPosition(run.queuedEvent, position))
    return { kind: 'queued', runId: run.runId, position, startAfterSeq }
  }

  /** Makes the run active and applies its input to the history; null when its input names nothing. */
  #start(ref: SessionRef, session: MemorySession, run: QueuedRun, instanceId: string, leaseMs: number): StartedRun | null {
    const applied = applyRunInput(session.messages, run.input)
    if (!applied) return null
    const now = this.#now()
    const startAfterSeq = this.#log.lastSeq(ref)
    session.active = {
      runId: run.runId,
      fence: run.runId,
      instanceId,
      startAfterSeq,
      leaseExpiresAt: now + leaseMs,
      ...(run.requestId === undefined ? {} : { requestId: run.requestId }),
    }
    this.#remember(session, run.requestId, run.runId, startAfterSeq)
    // The caller's title, as on Redis (a regenerate brings none: the title stays).
    if (applied.history.length === 0 && run.title) session.title = run.title
    const userMessage = frozenCopy(applied.userMessage)
    session.messages = [...applied.history, userMessage]
    if (session.messages.length > run.maxMessages) session.messages.splice(0, session.messages.length - run.maxMessages)
    session.updatedAt = session.touchedAt = now
    return {
      runId: run.runId,
      startAfterSeq,
      history: applied.history,
      userMessage,
      ...(run.requestId === undefined ? {} : { requestId: run.requestId }),
      ...(run.reasoning ? { reasoning: true } : {}),
      ...(run.clientTools ? { clientTools: structuredClone(run.clientTools) } : {}),
    }
  }

  #remember(session: MemorySession, requestId: string | undefined, runId: string, startAfterSeq: number): void {
    if (requestId === undefined) return
    session.requests.set(requestId, { runId, startAfterSeq })
    if (session.requests.size > REQUEST_IDS_KEPT) session.requests.delete(session.requests.keys().next().value as string)
  }

  async activeRun(ref: SessionRef): Promise<ActiveRun | null> {
    const active = this.#live(ref)?.active
    return active ? { ...active } : null
  }

  #holder(ref: SessionRef, fence: string): MemorySession | undefined {
    const session = this.#live(ref)
    return session?.active?.fence === fence ? session : undefined
  }

  async append(ref: SessionRef, fence: string, event: UnsequencedRunEvent, settles?: Settles): Promise<LoggedEvent | null> {
    const session = this.#holder(ref, fence)
    if (!session) return null
    memoryRounds.settle(session, settles)
    return this.#log.append(ref, event)
  }

  async renewLease(ref: SessionRef, runId: string, leaseMs: number): Promise<boolean> {
    const active = this.#holder(ref, runId)?.active
    if (active) active.leaseExpiresAt = this.#now() + leaseMs
    return Boolean(active)
  }

  async finishRun(ref: SessionRef, finish: FinishRun): Promise<Finished | null> {
    const session = this.#holder(ref, finish.runId)
    const now = this.#now()
    if (!session?.active) return null
    if (finish.ifLeaseExpired && (session.active.leaseExpiresAt > now || session.round)) return null
    if (finish.ifLastSeq !== undefined && this.#log.lastSeq(ref) !== finish.ifLastSeq) return null
    const event = this.#log.append(ref, finish.event)
    appendTrimmed(session.messages, finish.messages, finish.maxMessages)
    session.active = null
    session.round = null
    session.updatedAt = session.touchedAt = now
    let next: StartedRun | null = null
    // The first queued run whose input still applies (an edited message may be gone by now).
    while (!next && session.queue.length > 0) next = this.#start(ref, session, session.queue.shift() as QueuedRun, finish.instanceId, finish.leaseMs)
    return { event, next }
  }

  async clearQueue(ref: SessionRef): Promise<number> {
    const session = this.#live(ref)
    const dropped = session?.queue.length ?? 0
    if (session) session.queue = []
    return dropped
  }

  async list(owner: string, limit: number, cursor: string | undefined): Promise<SessionPage> {
    const after = decodeCursor(cursor)
    const sessions = [...(this.#perOwner.get(owner) ?? [])]
      .map((id) => this.#find(ownerKey(owner, id)))
      .filter((session) => session !== undefined)
      .sort(newestFirst)
      .filter((session) => !after || newestFirst(session, { updatedAt: after[0], ref: { id: after[1] } }) > 0)
    const page = sessions.slice(0, limit)
    const last = page.at(-1)
    return {
      sessions: page.map(summary),
      ...(sessions.length > limit && last ? { nextCursor: encodeCursor(last.updatedAt, last.ref.id) } : {}),
    }
  }

  async releaseRun(ref: SessionRef, runId: string): Promise<boolean> {
    const session = this.#holder(ref, runId)
    if (session) {
      session.active = null
      session.round = null
    }
    return Boolean(session)
  }

  async addPending(ref: SessionRef, fence: string, round: WaitingRound, callId: string): Promise<boolean> {
    const session = this.#holder(ref, fence)
    if (session) memoryRounds.record(session, round, callId)
    return Boolean(session)
  }

  async claimPending(ref: SessionRef, callId: string, answer: StoredAnswer, adopt?: Adoption): Promise<Claim | null> {
    const session = this.#live(ref)
    return session ? memoryRounds.claim(session, callId, answer, adopt, this.#now()) : null
  }

  async callState(ref: SessionRef, callId: string): Promise<CallState | null> {
    return memoryRounds.callState(this.#live(ref), callId)
  }

  async waitingRound(ref: SessionRef): Promise<WaitingRound | null> {
    const round = this.#live(ref)?.round
    return round ? structuredClone(round) : null
  }

  async endRound(ref: SessionRef, fence: string): Promise<boolean> {
    const session = this.#holder(ref, fence)
    if (session) session.round = null
    return Boolean(session)
  }

  async adoptRun(ref: SessionRef, fence: string, adopt: Adoption): Promise<AdoptedRun | null> {
    const session = this.#holder(ref, fence)
    return session ? memoryRounds.adopt(session, adopt, this.#now()) : null
  }

  async parkRun(ref: SessionRef, fence: string): Promise<boolean> {
    const active = this.#holder(ref, fence)?.active
    if (active) active.leaseExpiresAt = this.#now()
    return Boolean(active)
  }

  /** No sweeper reads leases here. */
  async deferLease(): Promise<void> {}

  async listPending(ref: SessionRef): Promise<PendingCall[]> {
    return memoryRounds.pending(this.#live(ref))
  }

  /** One instance: nobody else can hold a lease here. */
  async expiredLeases(): Promise<ExpiredLease[]> {
    return []
  }

  async addWatcher(ref: SessionRef, watcherId: string): Promise<void> {
    this.#live(ref)?.watchers.add(watcherId)
  }

  async removeWatcher(ref: SessionRef, watcherId: string): Promise<number> {
    const session = this.#live(ref)
    session?.watchers.delete(watcherId)
    return session?.watchers.size ?? 0
  }

  async watcherCount(ref: SessionRef): Promise<number> {
    return this.#live(ref)?.watchers.size ?? 0
  }

  /** Nothing ages out on one instance. */
  async refreshWatchers(): Promise<void> {}

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    clearInterval(this.#sweeper)
    this.#sessions.clear()
    this.#perOwner.clear()
  }
}

function appendTrimmed(messages: HistoryMessage[], added: HistoryMessage[], maxMessages: number): void {
  messages.push(...added.map(frozenCopy))
  if (messages.length > maxMessages) messages.splice(0, messages.length - maxMessages)
}

/** Most recently updated first; ties by id, so a cursor is exact. */
function newestFirst(a: { updatedAt: number; ref: { id: string } }, b: { updatedAt: number; ref: { id: string } }): number {
  return b.updatedAt - a.updatedAt || (a.ref.id < b.ref.id ? 1 : a.ref.id > b.ref.id ? -1 : 0)
}

function summary(session: MemorySession): SessionSummary {
  return { id: session.ref.id, title: session.title, createdAt: session.createdAt, updatedAt: session.updatedAt, activeRunId: session.active?.runId ?? null }
}

function publicRecord(session: MemorySession): SessionRecord {
  return {
    ...session.ref,
    title: session.title,
    messages: [...session.messages],
    createdAt: session.createdAt,
    updatedAt: session.updatedAt,
    active: session.active ? { ...session.active } : null,
  }
}
