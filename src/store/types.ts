import { Type, type Static } from '@sinclair/typebox'
import type { UnsequencedRunEvent } from '../protocol/index.ts'
import type { Redis } from 'ioredis'

/** One message of a conversation, in OpenAI's chat format (what the upstream accepts back). */
export const HistoryMessage = Type.Object({
  role: Type.Union([Type.Literal('system'), Type.Literal('user'), Type.Literal('assistant'), Type.Literal('tool')]),
  content: Type.Union([Type.String(), Type.Null()]),
  tool_calls: Type.Optional(
    Type.Array(
      Type.Object({
        id: Type.String(),
        type: Type.Literal('function'),
        function: Type.Object({ name: Type.String(), arguments: Type.String() }),
      }),
    ),
  ),
  tool_call_id: Type.Optional(Type.String()),
})
export type HistoryMessage = Static<typeof HistoryMessage>

export interface SessionRecord {
  id: string
  owner: string
  messages: HistoryMessage[]
  createdAt: number
  updatedAt: number
}

/** The run a session is executing, as every instance sees it. */
export interface ActiveRun {
  runId: string
  requestId?: string
  /** The instance executing it; only that one holds its AbortController. */
  instanceId: string
  /** The session's last seq before the run's first event: attach = subscribe from here. */
  startAfterSeq: number
  leaseExpiresAt: number
}

export type BeginRunResult =
  | { kind: 'started' }
  | { kind: 'busy'; active: ActiveRun }
  /** The request id was seen before: attach to that run (which may have ended) from its first event. */
  | { kind: 'duplicate'; runId: string; startAfterSeq: number }

export interface BeginRun {
  runId: string
  requestId?: string
  instanceId: string
  startAfterSeq: number
  leaseMs: number
}

/** Owner, history and run bookkeeping of sessions. Async throughout so Redis can back it. */
export interface SessionStore {
  get(sessionId: string): Promise<SessionRecord | null>
  /** Creates the session for `owner` unless it exists; returns what is stored either way. */
  getOrCreate(sessionId: string, owner: string): Promise<SessionRecord>
  /** Appends messages, keeping at most `maxMessages` (oldest dropped first), and refreshes the TTL. */
  appendMessages(sessionId: string, messages: HistoryMessage[], maxMessages: number): Promise<void>
  delete(sessionId: string): Promise<boolean>
  /** Atomically: idempotency check, busy check, then records the run as active. */
  beginRun(sessionId: string, run: BeginRun): Promise<BeginRunResult>
  activeRun(sessionId: string): Promise<ActiveRun | null>
  renewLease(sessionId: string, runId: string, leaseMs: number): Promise<boolean>
  /** Clears the active run if it is still `runId`; true when this call ended it. */
  endRun(sessionId: string, runId: string): Promise<boolean>
  /** Counts connections watching a session on any instance (a run outlives its last one by the grace). */
  addWatcher(sessionId: string, watcherId: string): Promise<void>
  removeWatcher(sessionId: string, watcherId: string): Promise<number>
  watcherCount(sessionId: string): Promise<number>
  /** Throws when the store cannot serve (readiness). */
  ping(): Promise<void>
  close(): Promise<void>
}

export interface LoggedEvent {
  seq: number
  /** The frame exactly as first sent: replays are byte-identical. */
  frame: string
}

export interface ReadResult {
  events: LoggedEvent[]
  /** Events after the asked seq are no longer held (or never existed): the reader must reload. */
  gone: boolean
  lastSeq: number
}

export interface LogSubscription {
  close(): void
}

/** Per-session, seq-numbered run events: append, replay from a seq, live tail. */
export interface EventLog {
  /** Gives the event the session's next seq, stores its serialized frame, notifies live subscribers. */
  append(sessionId: string, event: UnsequencedRunEvent): Promise<LoggedEvent>
  lastSeq(sessionId: string): Promise<number>
  read(sessionId: string, afterSeq: number): Promise<ReadResult>
  /**
   * Live events with seq > afterSeq, in order, each once. The caller reads the backlog with
   * `read` first; no live event reaches `listener` before the returned promise resolves.
   */
  subscribe(sessionId: string, afterSeq: number, listener: (event: LoggedEvent) => void): Promise<LogSubscription>
  delete(sessionId: string): Promise<void>
  close(): Promise<void>
}

/** What instances tell each other; a schema because it crosses the wire (Redis pub/sub). */
export const ControlMessage = Type.Union([
  Type.Object({
    kind: Type.Literal('cancel'),
    sessionId: Type.String(),
    runId: Type.String(),
    reason: Type.Union([Type.Literal('client'), Type.Literal('deleted')]),
  }),
  Type.Object({ kind: Type.Literal('orphaned'), sessionId: Type.String(), runId: Type.String() }),
])
export type ControlMessage = Static<typeof ControlMessage>

/** Signals to the instance that owns a run: cancel it, or check whether anybody still watches. */
export interface ControlBus {
  publish(message: ControlMessage): Promise<void>
  onMessage(handler: (message: ControlMessage) => void): void
  close(): Promise<void>
}

export interface Backend {
  kind: 'memory' | 'redis'
  sessions: SessionStore
  events: EventLog
  control: ControlBus
  /** The Redis client behind a Redis backend: guards keep their shared counters in it too. */
  redis?: Redis
  /** The prefix of the Redis backend's keys; the guards' keys go under it too. */
  keyPrefix?: string
  /**
   * Appends a run's final event and ends the run in one atomic step, so whoever reads that
   * event never finds the session still busy (another instance included); null, and nothing
   * appended, when the run is no longer active or a condition fails. Shared stores have it.
   */
  finishRun?(sessionId: string, finish: FinishRun): Promise<LoggedEvent | null>
}

export interface FinishRun {
  runId: string
  /** The run's `complete`. */
  event: UnsequencedRunEvent
  /** Only when the run's lease has expired: ending the run of an instance that died. */
  ifLeaseExpired?: boolean
  /** Only when the session's last seq is still this (the event was computed from the log up to it). */
  ifLastSeq?: number
}

export function serializeEvent(event: UnsequencedRunEvent, seq: number): string {
  // The hot path (one per model delta), written out: the same bytes as the general case.
  if (event.type === 'token') {
    return `{"type":"token","session_id":${JSON.stringify(event.session_id)},"seq":${seq},"content":${JSON.stringify(event.content)},"metadata":{"run_id":${JSON.stringify(event.metadata.run_id)}}}`
  }
  // type, session_id, seq first: readable on the wire, and the same bytes on every replay.
  const { type, session_id, ...rest } = event
  return JSON.stringify({ type, session_id, seq, ...rest })
}
