import { randomUUID } from 'node:crypto'
import type { AgentProgress } from '../agent/run-agent.ts'
import type { SessionRecord, SessionRef } from '../store/types.ts'
import type { Adoption, AdoptedRun, RoundSnapshot, WaitingRound } from '../store/waiting-round.ts'
import type { RunStart } from './run-executor.ts'

/** What this instance asks for when it takes a run over: a new fence, so the old holder's writes are refused. */
export function adoption(config: { instanceId: string; leaseMs: number }, runId: string): Adoption {
  return { instanceId: config.instanceId, leaseMs: config.leaseMs, fence: `${runId}~${randomUUID().slice(0, 8)}` }
}

/**
 * The run as the executor starts it, from the store: the session's conversation ends with the
 * run's user message. A session gone meanwhile gives an empty one (the run's next write is fenced).
 */
export function startOf(ref: SessionRef, { active, round }: AdoptedRun, session: Pick<SessionRecord, 'messages'> | null): RunStart {
  const messages = session?.messages ?? []
  return {
    ref,
    runId: active.runId,
    startAfterSeq: active.startAfterSeq,
    history: messages.slice(0, -1),
    userMessage: messages.at(-1) ?? { role: 'user', content: '' },
    ...(active.requestId === undefined ? {} : { requestId: active.requestId }),
    ...(round.relayReasoning ? { reasoning: true } : {}),
    ...(round.clientTools ? { clientTools: round.clientTools } : {}),
  }
}

/** The run as its round's record holds it: what any instance needs to go on with it. */
export function snapshotOf(run: Pick<RunStart, 'reasoning' | 'clientTools'>, progress: AgentProgress, round: number): RoundSnapshot {
  return {
    round,
    messages: structuredClone(progress.messages),
    content: progress.content,
    reasoning: progress.reasoning,
    ...(progress.usage ? { usage: progress.usage } : {}),
    ...(run.reasoning ? { relayReasoning: true } : {}),
    ...(run.clientTools ? { clientTools: run.clientTools } : {}),
  }
}

/** What the run had produced when it first waited in its round (snapshotOf, read back). */
export function resumedProgress(round: WaitingRound): AgentProgress {
  return { content: round.content, messages: structuredClone(round.messages), usage: round.usage, pendingText: '', reasoning: round.reasoning }
}
