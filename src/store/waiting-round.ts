import { Type, type Static } from '@sinclair/typebox'
import { ClientTool } from '../protocol/client-frames.ts'
import { PendingCall, Usage } from '../protocol/server-frames.ts'
import { HistoryMessage, ToolAnswer, type ActiveRun } from './types.ts'

/**
 * (1.1) A run that waits on the client is state in the store, not a stack (design.md): the
 * tool round it waits in is recorded at its first wait, with each call's state, so that any
 * instance can go on with it when the one that started it has drained or died.
 */

/** What a deadline stores as a call's answer: nobody answered in time. */
export const Expired = Type.Object({ kind: PendingCall.properties.kind, expired: Type.Literal(true) })
export const StoredAnswer = Type.Union([ToolAnswer, Expired])
export type StoredAnswer = Static<typeof StoredAnswer>

export const ToolOutcome = Type.Union([Type.Object({ ok: Type.Literal(true), result: Type.Unknown() }), Type.Object({ ok: Type.Literal(false), error: Type.String() })])
export type ToolOutcome = Static<typeof ToolOutcome>

/**
 * One call of the round. `running`: a server tool executing (no wait); `waiting` → `answered`
 * (claimed by the first answer or the deadline) → for an approval, `resolved` (its
 * `approval_resolved` logged: approved means the tool is executing) → `done` (its `tool_result`
 * logged, in the same atomic step).
 */
export const CallState = Type.Union([
  Type.Object({ state: Type.Literal('running') }),
  Type.Object({ state: Type.Literal('waiting'), pending: PendingCall }),
  Type.Object({ state: Type.Literal('answered'), pending: PendingCall, answer: StoredAnswer }),
  /** Not approved: `error` is what its `tool_result` says. */
  Type.Object({ state: Type.Literal('resolved'), approved: Type.Boolean(), error: Type.Optional(Type.String()) }),
  Type.Object({ state: Type.Literal('done'), outcome: ToolOutcome }),
])
export type CallState = Static<typeof CallState>

/** The run as it was when it first waited in the round: what it produced and how it was asked. */
export const RoundSnapshot = Type.Object({
  round: Type.Integer({ minimum: 0 }),
  /** This run's messages so far; the last is the round's assistant turn with its tool calls. */
  messages: Type.Array(HistoryMessage),
  content: Type.String(),
  reasoning: Type.String(),
  usage: Type.Optional(Usage),
  /** The run relays reasoning deltas (the chat asked for them). */
  relayReasoning: Type.Optional(Type.Boolean()),
  clientTools: Type.Optional(Type.Array(ClientTool)),
})
export type RoundSnapshot = Static<typeof RoundSnapshot>

export interface WaitingRound extends RoundSnapshot {
  calls: Record<string, CallState>
}

/** A run this instance holds now, taken over from one that stopped: its new fence, and its round. */
export interface AdoptedRun {
  active: ActiveRun
  round: WaitingRound
}

/** Whoever claims a call answers it; when the run's lease had lapsed, the claimer holds the run too. */
export interface Claim {
  runId: string
  adopted: AdoptedRun | null
}

/** Asked by whoever claims: take the run over if its holder is gone, under this new fence. */
export interface Adoption {
  instanceId: string
  leaseMs: number
  fence: string
}

/** The round's tool calls in the order the model asked for them. */
export function roundCallIds(round: RoundSnapshot): string[] {
  return round.messages.findLast((message) => message.role === 'assistant')?.tool_calls?.map((call) => call.id) ?? []
}

/** The calls still waiting, in the model's order. */
export function waitingCalls(round: WaitingRound): PendingCall[] {
  return roundCallIds(round).flatMap((id) => {
    const call = round.calls[id]
    return call?.state === 'waiting' ? [call.pending] : []
  })
}

/**
 * When the round needs an instance to act, with nobody holding the run: now (an answer came, a
 * deadline passed, a call was cut or everything is done), or at the earliest deadline.
 */
export function actionDue(round: WaitingRound): number {
  let due = Number.POSITIVE_INFINITY
  for (const id of roundCallIds(round)) {
    const call = round.calls[id]
    if (call?.state === 'done') continue
    if (call?.state !== 'waiting') return 0
    due = Math.min(due, Date.parse(call.pending.expires_at))
  }
  return Number.isFinite(due) ? due : 0
}
