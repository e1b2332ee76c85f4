import type {
  ActiveRun,
  Backend,
  BeginRun,
  BeginRunResult,
  ControlBus,
  ControlMessage,
  EventLog,
  HistoryMessage,
  LoggedEvent,
  LogSubscription,
  ReadResult,
  SessionRecord,
  SessionStore,
} from './types.ts'
import { serializeEvent } from './types.ts'
import type { UnsequencedRunEvent } from '../protocol/index.ts'

/** Idempotency keys remembered per session; older ones are forgotten first. */
const REQUEST_IDS_KEPT = 256

interface MemorySession extends SessionRecord {
  active: ActiveRun | null
  requests: Map<string, { runId: string; startAfterSeq: number }>
  watchers: Set<string>
}

export interface MemoryStoreOptions {
  ttlSeconds: number
  now?: () => number
}

export class MemorySessionStore implements SessionStore {
  readonly #sessions = new Map<string, MemorySession>()
  readonly #ttlMs: number
  readonly #now: () => number
  readonly #sweeper: NodeJS.Timeout
  onExpire: (sessionId: string) => void = () => {}

  constructor(options: MemoryStoreOptions) {
    this.#ttlMs = options.ttlSeconds * 1000
    this.#now = options.now ?? Date.now
    this.#sweeper = setInterval(() => this.sweep(), Math.min(this.#ttlMs, 60_000)).unref()
  }

  /** Forgets idle sessions past their TTL; sessions with a run or a watcher are not idle. */
  sweep(): void {
    const now = this.#now()
    for (const session of this.#sessions.values()) this.#expireIfIdle(session, now)
  }

  /** Forgets the session when it is idle past its TTL; true when it did. */
  #expireIfIdle(session: MemorySession, now: number): boolean {
    if (session.updatedAt >= now - this.#ttlMs || session.active || session.watchers.size > 0) return false
    this.#sessions.delete(session.id)
    this.onExpire(session.id)
    return true
  }

  #live(sessionId: string): MemorySession | undefined {
    const session = this.#sessions.get(sessionId)
    return session && !this.#expireIfIdle(session, this.#now()) ? session : undefined
  }

  async get(sessionId: string): Promise<SessionRecord | null> {
    const session = this.#live(sessionId)
    return session ? publicRecord(session) : null
  }

  async getOrCreate(sessionId: string, owner: string): Promise<SessionRecord> {
    let session = this.#live(sessionId)
    if (!session) {
      const now = this.#now()
      session = {
        id: sessionId,
        owner,
        messages: [],
        createdAt: now,
        updatedAt: now,
        active: null,
        requests: new Map(),
        watchers: new Set(),
      }
      this.#sessions.set(sessionId, session)
    }
    return publicRecord(session)
  }

  async appendMessages(sessionId: string, messages: HistoryMessage[], maxMessages: number): Promise<void> {
    const session = this.#live(sessionId)
    if (!session) return
    session.messages.push(...structuredClone(messages))
    if (session.messages.length > maxMessages) session.messages.splice(0, session.messages.length - maxMessages)
    session.updatedAt = this.#now()
  }

  async delete(sessionId: string): Promise<boolean> {
    return this.#sessions.delete(sessionId)
  }

  async beginRun(sessionId: string, run: BeginRun): Promise<BeginRunResult> {
    const session = this.#live(sessionId)
    if (!session) throw new Error(`session ${sessionId} does not exist`)
    if (run.requestId !== undefined) {
      const seen = session.requests.get(run.requestId)
      if (seen) return { kind: 'duplicate', ...seen }
    }
    if (session.active) return { kind: 'busy', active: { ...session.active } }
    session.active = {
      runId: run.runId,
      instanceId: run.instanceId,
      startAfterSeq: run.startAfterSeq,
      leaseExpiresAt: this.#now() + run.leaseMs,
      ...(run.requestId === undefined ? {} : { requestId: run.requestId }),
    }
    if (run.requestId !== undefined) {
      session.requests.set(run.requestId, { runId: run.runId, startAfterSeq: run.startAfterSeq })
      if (session.requests.size > REQUEST_IDS_KEPT) {
        session.requests.delete(session.requests.keys().next().value as string)
      }
    }
    session.updatedAt = this.#now()
    return { kind: 'started' }
  }

  async activeRun(sessionId: string): Promise<ActiveRun | null> {
    const active = this.#live(sessionId)?.active
    return active ? { ...active } : null
  }

  async renewLease(sessionId: string, runId: string, leaseMs: number): Promise<boolean> {
    const active = this.#sessions.get(sessionId)?.active
    if (active?.runId !== runId) return false
    active.leaseExpiresAt = this.#now() + leaseMs
    return true
  }

  async endRun(sessionId: string, runId: string): Promise<boolean> {
    const session = this.#sessions.get(sessionId)
    if (session?.active?.runId !== runId) return false
    session.active = null
    session.updatedAt = this.#now()
    return true
  }

  async addWatcher(sessionId: string, watcherId: string): Promise<void> {
    this.#sessions.get(sessionId)?.watchers.add(watcherId)
  }

  async removeWatcher(sessionId: string, watcherId: string): Promise<number> {
    const session = this.#sessions.get(sessionId)
    if (!session) return 0
    session.watchers.delete(watcherId)
    session.updatedAt = this.#now()
    return session.watchers.size
  }

  async watcherCount(sessionId: string): Promise<number> {
    return this.#sessions.get(sessionId)?.watchers.size ?? 0
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    clearInterval(this.#sweeper)
    this.#sessions.clear()
  }
}

function publicRecord(session: MemorySession): SessionRecord {
  return {
    id: session.id,
    owner: session.owner,
    messages: structuredClone(session.messages),
    createdAt: session.createdAt,
    updatedAt: session.updatedAt,
  }
}

interface SessionLog {
  lastSeq: number
  events: LoggedEvent[]
  listeners: Set<(event: LoggedEvent) => void>
}

export class MemoryEventLog implements EventLog {
  readonly #logs = new Map<string, SessionLog>()
  readonly #maxEvents: number

  constructor(options: { maxEvents: number }) {
    this.#maxEvents = options.maxEvents
  }

  #log(sessionId: string): SessionLog {
    let log = this.#logs.get(sessionId)
    if (!log) {
      log = { lastSeq: 0, events: [], listeners: new Set() }
      this.#logs.set(sessionId, log)
    }
    return log
  }

  async append(sessionId: string, event: UnsequencedRunEvent): Promise<LoggedEvent> {
    const log = this.#log(sessionId)
    const seq = ++log.lastSeq
    const logged = { seq, frame: serializeEvent(event, seq) }
    log.events.push(logged)
    // Trim in batches so a full buffer does not shift the array on every append.
    if (log.events.length > this.#maxEvents * 1.25) log.events.splice(0, log.events.length - this.#maxEvents)
    for (const listener of log.listeners) listener(logged)
    return logged
  }

  async lastSeq(sessionId: string): Promise<number> {
    return this.#logs.get(sessionId)?.lastSeq ?? 0
  }

  async read(sessionId: string, afterSeq: number): Promise<ReadResult> {
    const log = this.#logs.get(sessionId)
    if (!log) return { events: [], gone: afterSeq > 0, lastSeq: 0 }
    return readHeld(log, afterSeq, this.#maxEvents)
  }

  async subscribe(sessionId: string, afterSeq: number, listener: (event: LoggedEvent) => void): Promise<LogSubscription> {
    const log = this.#log(sessionId)
    let delivered = afterSeq
    let ready = false
    const pending: LoggedEvent[] = []
    const deliver = (event: LoggedEvent) => {
      if (event.seq <= delivered) return
      delivered = event.seq
      listener(event)
    }
    const onEvent = (event: LoggedEvent) => (ready ? deliver(event) : pending.push(event))
    log.listeners.add(onEvent)
    // Held events newer than afterSeq, then whatever arrived meanwhile, once the caller has
    // finished reacting to the resolved promise (it sends status:resumed first).
    const backlog = readHeld(log, afterSeq, this.#maxEvents).events
    setImmediate(() => {
      for (const event of backlog) deliver(event)
      for (const event of pending) deliver(event)
      pending.length = 0
      ready = true
    })
    return { close: () => log.listeners.delete(onEvent) }
  }

  async delete(sessionId: string): Promise<void> {
    this.#logs.delete(sessionId)
  }

  async close(): Promise<void> {
    this.#logs.clear()
  }
}

function readHeld(log: SessionLog, afterSeq: number, maxEvents: number): ReadResult {
  const events = log.events.length > maxEvents ? log.events.slice(-maxEvents) : log.events
  const oldest = events[0]?.seq ?? log.lastSeq + 1
  const gone = afterSeq > log.lastSeq || afterSeq < oldest - 1
  const start = Math.max(0, afterSeq - oldest + 1)
  return { events: gone ? [] : events.slice(start), gone, lastSeq: log.lastSeq }
}

export class MemoryControlBus implements ControlBus {
  readonly #handlers = new Set<(message: ControlMessage) => void>()

  async publish(message: ControlMessage): Promise<void> {
    for (const handler of this.#handlers) handler(message)
  }

  onMessage(handler: (message: ControlMessage) => void): void {
    this.#handlers.add(handler)
  }

  async close(): Promise<void> {
    this.#handlers.clear()
  }
}

export function createMemoryBackend(options: { ttlSeconds: number; maxEvents: number }): Backend {
  const sessions = new MemorySessionStore({ ttlSeconds: options.ttlSeconds })
  const events = new MemoryEventLog({ maxEvents: options.maxEvents })
  sessions.onExpire = (sessionId) => void events.delete(sessionId)
  return { kind: 'memory', sessions, events, control: new MemoryControlBus() }
}
