import { Type, type Static } from '@sinclair/typebox'
import type { ClientTool, PendingCall, StatusQueued, UnsequencedRunEvent } from '../protocol/index.ts'
import type { Cluster, Redis } from 'ioredis'
import type { Adoption, AdoptedRun, CallState, Claim, StoredAnswer, WaitingRound } from './waiting-round.ts'

export { serializeEvent } from '../protocol/serialize.ts'

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
  /** (1.1) The message's id (REST, `chat.edit`) and the run that produced it; never sent upstream. */
  id: Type.Optional(Type.String()),
  run_id: Type.Optional(Type.String()),
})
export type HistoryMessage = Static<typeof HistoryMessage>

/**
 * Who a session is (protocol.md §2, 1.1): ids are scoped per owner, and a session created
 * again after deletion or expiry is a new generation. Every store call that writes names
 * all three, so nothing of one generation reaches, or is written into, another.
 */
export const SessionRef = Type.Object({ owner: Type.String(), id: Type.String(), gen: Type.String() })
/** Never changed once made: keys are cached per ref object (keyPerRef). */
export type SessionRef = Readonly<Static<typeof SessionRef>>

export interface SessionRecord extends SessionRef {
  messages: HistoryMessage[]
  /** The first user message, cut to 80 characters ('' before the first run). */
  title: string
  createdAt: number
  updatedAt: number
  active: ActiveRun | null
}

/** A session as the owner's list shows it (GET /v1/sessions). */
export interface SessionSummary {
  id: string
  title: string
  createdAt: number
  updatedAt: number
  activeRunId: string | null
}

export interface SessionPage {
  sessions: SessionSummary[]
  /** Opaque; absent on the last page. */
  nextCursor?: string
}

/** The run a session is executing, as every instance sees it. */
export interface ActiveRun {
  runId: string
  requestId?: string
  /** The instance executing it; only that one holds its AbortController. */
  instanceId: string
  /**
   * (1.1) What the holder's writes name to pass the fence: the run id, until another instance
   * adopts the run (then a new token, so the old holder's writes are refused).
   */
  fence: string
  /** The session's last seq before the run's first event: attach = subscribe from here. */
  startAfterSeq: number
  leaseExpiresAt: number
}

/** What a run answers (protocol.md §2): a new user message, the last one again, or an edited one. */
export type RunInput =
  | { kind: 'message'; message: HistoryMessage }
  | { kind: 'regenerate' }
  | { kind: 'edit'; messageId: string; message: HistoryMessage }

/** A run the store has made active: what the executor needs to run it. */
export interface StartedRun {
  runId: string
  requestId?: string
  /** The session's last seq before the run's first event. */
  startAfterSeq: number
  /** The conversation before the run's user message. */
  history: HistoryMessage[]
  userMessage: HistoryMessage
  /** Asked with `reasoning: true`: relay the model's reasoning deltas. */
  reasoning?: boolean
  /** (1.1) Tools the client runs, declared by the chat that asked for this run. */
  clientTools?: ClientTool[]
}

/** (1.1) A call of the recorded round an event settles (`approval_resolved`, `tool_result`). */
export interface Settles {
  callId: string
  state: CallState
}

export type BeginRunResult =
  | ({ kind: 'started' } & StartedRun)
  | { kind: 'busy'; active: ActiveRun }
  /** Waiting behind the active run (on_busy enqueue, or interrupt: then first in line). */
  | { kind: 'queued'; runId: string; position: number; startAfterSeq: number }
  /** `regenerate` with no user message yet, or `edit` of an unknown message id. */
  | { kind: 'no_message' }
  /** The request id was seen before: attach to that run (which may have ended) from its first event. */
  | { kind: 'duplicate'; runId: string; startAfterSeq: number }
  /** The session is gone, or is another generation now. */
  | { kind: 'gone' }

export interface BeginRun {
  runId: string
  requestId?: string
  instanceId: string
  leaseMs: number
  /** Applied to the history with the run's start, in the same step. */
  input: RunInput
  maxMessages: number
  reasoning?: boolean
  clientTools?: ClientTool[]
  /** When the session has an active run: refuse (default), queue behind it, or queue first. */
  onBusy?: 'reject' | 'enqueue' | 'interrupt'
  maxQueued?: number
  /** The `status:queued` event logged for a queued run (its `position` filled in by the store). */
  queuedEvent?: Omit<StatusQueued, 'seq'>
  /** The title a first message gives the session. */
  title?: string
}

export interface FinishRun {
  /** The run's fence (ActiveRun.fence). */
  runId: string
  /** The instance that finishes it: it starts the next queued run, if there is one. */
  instanceId: string
  leaseMs: number
  /** The run's `complete`. */
  event: UnsequencedRunEvent
  /** What the run adds to the conversation, stored in the same step as its `complete`. */
  messages: HistoryMessage[]
  maxMessages: number
  /** Only when the run's lease has expired and it does not wait in a recorded round: ending the run of an instance that died. */
  ifLeaseExpired?: boolean
  /** Only when the session's last seq is still this (the event was computed from the log up to it). */
  ifLastSeq?: number
}

/** The logged `complete`, and the queued run that became active in the same step, if any. */
export interface Finished {
  event: LoggedEvent
  next: StartedRun | null
}

export type OpenResult = { kind: 'open'; session: SessionRecord } | { kind: 'too_many' }

export interface LoggedEvent {
  seq: number
  /** The frame exactly as first sent: replays are byte-identical. */
  frame: string
}

/** A run whose lease has passed, as the lease index lists it. */
export interface ExpiredLease {
  ref: SessionRef
  /** The fence of the run that held the lease. */
  fence: string
}

/**
 * Sessions, their runs and their event logs. Every write that belongs to a run (append,
 * finish, renewal) is fenced by (generation, run fence) in the same atomic step: it is refused
 * once the run is no longer the session's active one, whoever ended it.
 */
export interface SessionStore {
  /** The owner's session of that id, or null. A read: it does not extend the TTL. */
  get(owner: string, id: string): Promise<SessionRecord | null>
  /** The session, created (as a new generation) unless it exists; `too_many` when the owner holds `maxSessions`. */
  open(owner: string, id: string, maxSessions: number): Promise<OpenResult>
  /** Pushes the session's expiry out by its TTL (a resume, a REST read); false when it is gone. */
  touch(ref: SessionRef): Promise<boolean>
  /** Milliseconds until the session expires; null when it is gone (or another generation). */
  expiresIn(ref: SessionRef): Promise<number | null>
  /** Forgets the session. Its log ends with a `gone` mark every tail sees after its last event. */
  delete(ref: SessionRef): Promise<boolean>
  /** Atomically: generation, idempotency and busy checks; reads the start seq; records the run and its user message. */
  beginRun(ref: SessionRef, run: BeginRun): Promise<BeginRunResult>
  activeRun(ref: SessionRef): Promise<ActiveRun | null>
  /**
   * Appends a run event; null, and nothing appended, when the run is no longer active (fenced).
   * `settles`: the event settles a call of the recorded round, in the same step (1.1).
   */
  append(ref: SessionRef, fence: string, event: UnsequencedRunEvent, settles?: Settles): Promise<LoggedEvent | null>
  renewLease(ref: SessionRef, runId: string, leaseMs: number): Promise<boolean>
  /**
   * Logs the run's `complete`, stores its messages and frees the session, in one step, then
   * makes the first queued run active (held by `finish.instanceId`); null when fenced.
   */
  finishRun(ref: SessionRef, finish: FinishRun): Promise<Finished | null>
  /**
   * (1.1) Records a call that waits on the client: the round it waits in (the first wait of a
   * round records it, with the other calls' states) and this call as `waiting`. Calls already
   * recorded keep their state. False when fenced.
   */
  addPending(ref: SessionRef, fence: string, round: WaitingRound, callId: string): Promise<boolean>
  /**
   * (1.1) The first answer (or the deadline) for a waiting call of this kind claims it: the call
   * is `answered`, kept for whoever goes on with the run; null for everybody else (answered,
   * expired, unknown). With `adopt`, when the run's lease has lapsed (its instance drained or
   * died), the claimer holds the run from here on, in the same step.
   */
  claimPending(ref: SessionRef, callId: string, answer: StoredAnswer, adopt?: Adoption): Promise<Claim | null>
  /** (1.1) One call of the recorded round, or null. */
  callState(ref: SessionRef, callId: string): Promise<CallState | null>
  /** (1.1) The round the active run waits in, or null when it has not waited in this round. */
  waitingRound(ref: SessionRef): Promise<WaitingRound | null>
  /** (1.1) The round is over (all its results in): forgets it, before the model is asked again. */
  endRound(ref: SessionRef, fence: string): Promise<boolean>
  /** (1.1) Takes over a run that waits in a recorded round and whose lease has lapsed; null otherwise. */
  adoptRun(ref: SessionRef, fence: string, adopt: Adoption): Promise<AdoptedRun | null>
  /** (1.1) Lets go of a waiting run (a drain): its lease lapses now, so any instance may adopt it. */
  parkRun(ref: SessionRef, fence: string): Promise<boolean>
  /** (1.1) A lapsed lease nobody needs to act on before `until` (a deadline): sweeps skip it till then. */
  deferLease(ref: SessionRef, fence: string, until: number): Promise<void>
  /** (1.1) The calls waiting on the client, in the model's order. */
  listPending(ref: SessionRef): Promise<PendingCall[]>
  /** Drops the session's queued runs (a deletion); how many there were. */
  clearQueue(ref: SessionRef): Promise<number>
  /** The owner's sessions, most recently updated first. */
  list(owner: string, limit: number, cursor: string | undefined): Promise<SessionPage>
  /** Frees the session without logging anything (a run that never got to execute); true when it did. */
  releaseRun(ref: SessionRef, runId: string): Promise<boolean>
  /** Runs whose lease passed before `now` (the store's clock), at most `limit`. */
  expiredLeases(limit: number): Promise<ExpiredLease[]>
  /** Counts connections watching a session on any instance (a run outlives its last one by the grace). */
  addWatcher(ref: SessionRef, watcherId: string): Promise<void>
  removeWatcher(ref: SessionRef, watcherId: string): Promise<number>
  watcherCount(ref: SessionRef): Promise<number>
  /** Keeps these watchers counted: unrefreshed ones age out, so a dead instance's stop counting. */
  refreshWatchers(watched: ReadonlyArray<{ ref: SessionRef; ids: readonly string[] }>): Promise<void>
  /** Throws when the store cannot serve (readiness). */
  ping(): Promise<void>
  close(): Promise<void>
}

export interface ReadResult {
  events: LoggedEvent[]
  /** Events after the asked seq are no longer held (or never existed): the reader must reload. */
  gone: boolean
  lastSeq: number
}

/** Why a log stopped for its readers. */
export type LogEnd = 'deleted' | 'expired' | 'lost' | 'history_gone'

export interface LogListener {
  event(event: LoggedEvent): void
  /** Nothing more will come: the session was deleted, or the reader fell behind what is held. */
  end(reason: LogEnd): void
}

export interface LogSubscription {
  close(): void
  /** Stop delivering (the reader's socket is backed up); what arrives meanwhile stays in the log. */
  pause(): void
  resume(): void
}

/** Per-session, seq-numbered run events: replay from a seq, live tail. Writes go through the store. */
export interface EventLog {
  read(ref: SessionRef, afterSeq: number): Promise<ReadResult>
  /**
   * Events with seq > afterSeq, in order, each once: the held ones, then live ones. None
   * reaches `listener` before the returned promise resolves and its reaction has run.
   */
  subscribe(ref: SessionRef, afterSeq: number, listener: LogListener): Promise<LogSubscription>
  close(): Promise<void>
}

/** (1.1) An answer to a call that waits on the client. */
export const ToolAnswer = Type.Union([
  Type.Object({ kind: Type.Literal('approval'), approved: Type.Boolean(), reason: Type.Optional(Type.String()) }),
  Type.Object({ kind: Type.Literal('client_tool'), output: Type.String(), isError: Type.Boolean() }),
])
export type ToolAnswer = Static<typeof ToolAnswer>

/** What instances tell each other; a schema because it crosses the wire (Redis pub/sub). */
export const ControlMessage = Type.Union([
  Type.Object({
    kind: Type.Literal('cancel'),
    ref: SessionRef,
    runId: Type.String(),
    reason: Type.Union([Type.Literal('client'), Type.Literal('deleted'), Type.Literal('superseded')]),
  }),
  Type.Object({ kind: Type.Literal('orphaned'), ref: SessionRef, runId: Type.String() }),
  /** (1.1) A claimed answer to a call the run waits for: to the instance executing it. */
  Type.Object({
    kind: Type.Literal('answer'),
    ref: SessionRef,
    runId: Type.String(),
    callId: Type.String(),
    answer: ToolAnswer,
  }),
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
  /** The Redis client behind a Redis backend (a cluster client on a Redis Cluster): guards keep their shared counters in it too. */
  redis?: Redis | Cluster
  /** The prefix of the Redis backend's keys; the guards' keys go under it too. */
  keyPrefix?: string
  /** Closes every connection and timer of the backend; idempotent. */
  close(): Promise<void>
}

/**
 * `key`, made once per ref object (refs never change): a run looks its session up by the same
 * ref several times per token, and a string built anew is hashed anew.
 */
export function keyPerRef(key: (ref: SessionRef) => string): (ref: SessionRef) => string {
  const keys = new WeakMap<SessionRef, string>()
  return (ref) => {
    let made = keys.get(ref)
    if (made === undefined) keys.set(ref, (made = key(ref)))
    return made
  }
}

/** A stable string for a ref (map keys). */
export const refKey = keyPerRef((ref) => `${ref.owner.length}:${ref.owner}:${ref.id}:${ref.gen}`)
