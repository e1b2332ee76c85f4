import type { PendingCall } from '../../protocol/index.ts'
import type { ActiveRun, Settles } from '../types.ts'
import { waitingCalls, type Adoption, type AdoptedRun, type CallState, type Claim, type StoredAnswer, type WaitingRound } from '../waiting-round.ts'

/** The part of a memory session the waiting round lives in. */
export interface RoundHolder {
  active: ActiveRun | null
  round: WaitingRound | null
}

/**
 * (1.1) The recorded round of a memory session, by the same rules as the Redis scripts
 * (redis/waiting-round.ts); every step is synchronous, so atomic. Callers check the fence.
 */
export const memoryRounds = {
  record(session: RoundHolder, round: WaitingRound, callId: string): void {
    const recorded = (session.round ??= { ...structuredClone(round), calls: {} })
    // Calls already recorded keep their state (only this run advances them); this one waits now.
    for (const [id, state] of Object.entries(round.calls)) if (id !== callId) recorded.calls[id] ??= structuredClone(state)
    recorded.calls[callId] = structuredClone(round.calls[callId] as CallState)
  },

  settle(session: RoundHolder, settles: Settles | undefined): void {
    if (settles && session.round) session.round.calls[settles.callId] = structuredClone(settles.state)
  },

  claim(session: RoundHolder, callId: string, answer: StoredAnswer, adopt: Adoption | undefined, now: number): Claim | null {
    const call = session.round?.calls[callId]
    if (!session.active || call?.state !== 'waiting' || call.pending.kind !== answer.kind) return null
    ;(session.round as WaitingRound).calls[callId] = { state: 'answered', pending: call.pending, answer: structuredClone(answer) }
    const runId = session.active.runId
    return { runId, adopted: adopt ? memoryRounds.adopt(session, adopt, now) : null }
  },

  /** The run, taken over when its lease has lapsed and it waits in a recorded round. */
  adopt(session: RoundHolder, adopt: Adoption, now: number): AdoptedRun | null {
    const { active, round } = session
    if (!active || !round || active.leaseExpiresAt > now) return null
    session.active = { ...active, instanceId: adopt.instanceId, fence: adopt.fence, leaseExpiresAt: now + adopt.leaseMs }
    return { active: { ...session.active }, round: structuredClone(round) }
  },

  callState(session: RoundHolder | undefined, callId: string): CallState | null {
    const state = session?.round?.calls[callId]
    return state ? structuredClone(state) : null
  },

  pending(session: RoundHolder | undefined): PendingCall[] {
    return session?.round ? structuredClone(waitingCalls(session.round)) : []
  },
}
