import type { GateDecision, GatedCall } from '../agent/run-agent.ts'
import type { ToolOutcome, ToolRegistry } from '../agent/tools/registry.ts'
import type { PendingCall, UnsequencedRunEvent } from '../protocol/index.ts'
import type { Backend, SessionRef, Settles, ToolAnswer } from '../store/types.ts'
import type { CallState, RoundSnapshot, StoredAnswer, WaitingRound } from '../store/waiting-round.ts'
import { Fenced } from './fenced.ts'

export interface ToolGateOptions {
  backend: Backend
  ref: SessionRef
  runId: string
  /** What the run's writes name (ActiveRun.fence). */
  fence: string
  signal: AbortSignal
  tools: ToolRegistry
  /** TOOLS_REQUIRING_APPROVAL. */
  approvalTools: ReadonlySet<string>
  /** The chat's client_tools. */
  clientTools: ReadonlySet<string>
  approvalTimeoutMs: number
  clientToolTimeoutMs: number
  /** Logs a run event (fenced, under backpressure), with the call it settles: the executor's. */
  append(event: UnsequencedRunEvent, settles?: Settles): Promise<void>
  /** The run as it is now, for the round's record (the executor's progress). */
  snapshot(round: number): RoundSnapshot
  /** A call started waiting (recorded): the run may only wait now. */
  onWaiting?(): void
}

const RUN: GateDecision = { kind: 'run' }
/** The outcome of a call its instance stopped running before it reported: it is not run again. */
export const CUT_OFF: ToolOutcome = { ok: false, error: 'interrupted: the instance running this tool stopped before it reported; it may or may not have run' }

/**
 * The calls of one run that wait on the client (protocol.md §7): an approval before a server
 * tool runs, or a client tool's output. The first wait of a tool round records the round in the
 * store (what the run produced, every call's state), so that the run is state, not a stack: any
 * instance can go on with it (adoption). A call is answered by whoever claims it there,
 * atomically: an answer (from any instance, forwarded or adopted) or its deadline, never both.
 * Events that settle a call (`approval_resolved`, `tool_result`) advance its recorded state in
 * the same store step that logs them, so nothing is logged twice by whoever goes on.
 */
export class ToolGate {
  readonly #options: ToolGateOptions
  readonly #waits = new Map<string, (answer: StoredAnswer) => void>()
  /** Deadlines of the calls waiting now: the run is not abandoned before the last. */
  readonly #deadlines = new Map<string, number>()
  /** The current round's calls as this instance knows them. */
  #calls = new Map<string, CallState>()
  #recorded = false
  /** The round a resumed run starts in, as the store held it. */
  #resumed: WaitingRound | undefined

  constructor(options: ToolGateOptions, resumed?: WaitingRound) {
    this.#options = options
    if (resumed) {
      this.#resumed = resumed
      this.#recorded = true
      for (const [id, state] of Object.entries(resumed.calls)) this.#calls.set(id, state)
    }
  }

  /** The latest deadline of the calls waiting now, if any wait. */
  get waitingUntil(): number | undefined {
    return this.#deadlines.size === 0 ? undefined : Math.max(...this.#deadlines.values())
  }

  /** The run only waits on a person (nothing runs): it may be parked and go on elsewhere. */
  get onlyWaiting(): boolean {
    if (!this.#recorded || this.#waits.size === 0) return false
    return [...this.#calls.entries()].every(([id, state]) => state.state === 'done' || (state.state === 'waiting' && this.#waits.has(id)))
  }

  answer(callId: string, answer: ToolAnswer): void {
    this.#waits.get(callId)?.(answer)
  }

  /** Sees each event of the run's own tool rounds before it is logged: the call a `tool_result` settles, when the round is recorded. */
  settles(event: UnsequencedRunEvent): Settles | undefined {
    if (event.type !== 'status' || (event.content !== 'tool_call' && event.content !== 'tool_result')) return undefined
    const { metadata } = event as { metadata: { call_id: string; result?: unknown; is_error?: boolean } }
    if (event.content === 'tool_call') return void this.#calls.set(metadata.call_id, { state: 'running' })
    const state: CallState = { state: 'done', outcome: metadata.is_error ? { ok: false, error: String(metadata.result) } : { ok: true, result: metadata.result } }
    this.#calls.set(metadata.call_id, state)
    return this.#recorded ? { callId: metadata.call_id, state } : undefined
  }

  /** All results of the round are in: its record goes before the model is asked again. */
  async roundEnded(): Promise<void> {
    this.#calls = new Map()
    this.#resumed = undefined
    if (!this.#recorded) return
    this.#recorded = false
    if (!(await this.#options.backend.sessions.endRound(this.#options.ref, this.#options.fence))) throw new Fenced()
  }

  async decide(call: GatedCall): Promise<GateDecision> {
    if (this.#resumed) return this.#goOn(call, this.#resumed.calls[call.callId])
    const kind = this.#kindOf(call.tool, call.argumentsJson)
    if (!kind) return RUN
    const answer = await this.#wait(call, this.#pending(call, kind))
    return this.#applied(call, kind, answer)
  }

  #kindOf(tool: string, argumentsJson: string): PendingCall['kind'] | undefined {
    const { approvalTools, clientTools, tools } = this.#options
    if (clientTools.has(tool)) return 'client_tool'
    return approvalTools.has(tool) || tools.needsApproval(tool, argumentsJson) ? 'approval' : undefined
  }

  /** A call of the round a resumed run starts in: wherever its instance left it. */
  async #goOn(call: GatedCall, state: CallState | undefined): Promise<GateDecision> {
    switch (state?.state) {
      case 'done':
        return { kind: 'logged', outcome: state.outcome }
      case 'waiting':
        return this.#applied(call, state.pending.kind, await this.#wait(call, state.pending, false))
      case 'answered':
        return this.#applied(call, state.pending.kind, state.answer)
      case 'resolved':
        if (!state.approved) return { kind: 'outcome', outcome: { ok: false, error: state.error as string } }
    }
    // Running (or approved and running) when its instance stopped: not run again.
    return { kind: 'outcome', outcome: CUT_OFF }
  }

  #pending(call: GatedCall, kind: PendingCall['kind']): PendingCall {
    const timeoutMs = kind === 'approval' ? this.#options.approvalTimeoutMs : this.#options.clientToolTimeoutMs
    return { call_id: call.callId, tool: call.tool, arguments: parsed(call.argumentsJson), kind, expires_at: new Date(Date.now() + timeoutMs).toISOString() }
  }

  /** What the answer means for the call: its outcome, or run it (approved; `approval_resolved` logged first). */
  async #applied(call: GatedCall, kind: PendingCall['kind'], answer: StoredAnswer): Promise<GateDecision> {
    const expired = 'expired' in answer
    const timeoutS = (kind === 'approval' ? this.#options.approvalTimeoutMs : this.#options.clientToolTimeoutMs) / 1000
    if (answer.kind === 'client_tool' && !expired) return { kind: 'outcome', outcome: answer.isError ? { ok: false, error: answer.output } : { ok: true, result: answer.output } }
    if (kind === 'client_tool') return { kind: 'outcome', outcome: { ok: false, error: `timed out: the client sent no output within ${timeoutS} s` } }
    const approval = expired ? undefined : (answer as Extract<ToolAnswer, { kind: 'approval' }>)
    const reason = approval ? approval.reason : 'nobody answered in time'
    const error = approval?.approved ? undefined : `not run: ${approval ? `the user denied it${reason ? `: ${reason}` : ''}` : `nobody approved it within ${timeoutS} s`}`
    const state: CallState = error ? { state: 'resolved', approved: false, error } : { state: 'resolved', approved: true }
    this.#calls.set(call.callId, state)
    await this.#options.append(
      {
        type: 'status',
        session_id: this.#options.ref.id,
        content: 'approval_resolved',
        metadata: { run_id: this.#options.runId, call_id: call.callId, approved: approval?.approved === true, ...(reason === undefined ? {} : { reason }) },
      },
      { callId: call.callId, state },
    )
    return error ? { kind: 'outcome', outcome: { ok: false, error } } : RUN
  }

  /**
   * Records the call as waiting (and announces an approval), then resolves with its answer or
   * its expiry. `announce` false: a resumed call, recorded and announced already.
   */
  async #wait(call: GatedCall, pending: PendingCall, announce = true): Promise<StoredAnswer> {
    const { backend, ref, runId, fence, signal } = this.#options
    const { promise, resolve, reject } = Promise.withResolvers<StoredAnswer>()
    const expiresAt = Date.parse(pending.expires_at)
    // Listening before the call is announced: an answer may come right after.
    this.#waits.set(call.callId, resolve)
    this.#deadlines.set(call.callId, expiresAt)
    this.#calls.set(call.callId, { state: 'waiting', pending })
    const onAbort = () => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    const expired: StoredAnswer = { kind: pending.kind, expired: true }
    // Past already for a resumed call whose deadline came while no instance held it: at once.
    const delayMs = Math.max(0, expiresAt - Date.now())
    // The deadline answers only if nobody claimed the call first; if somebody did, theirs stands.
    const deadline = setTimeout(() => {
      backend.sessions.claimPending(ref, call.callId, expired).then(
        async (claimed) => {
          const state = claimed ? null : await backend.sessions.callState(ref, call.callId)
          resolve(state?.state === 'answered' ? state.answer : expired)
        },
        () => resolve(expired),
      )
    }, delayMs)
    try {
      if (announce) {
        const round: WaitingRound = { ...this.#options.snapshot(call.round), calls: Object.fromEntries(this.#calls) }
        this.#recorded = true
        if (!(await backend.sessions.addPending(ref, fence, round, call.callId))) throw new Fenced()
        if (pending.kind === 'approval') {
          const { call_id, tool, arguments: args, expires_at } = pending
          await this.#options.append({ type: 'status', session_id: ref.id, content: 'approval_required', metadata: { run_id: runId, tool, call_id, arguments: args, expires_at } })
        }
      }
      this.#options.onWaiting?.()
      return await promise
    } finally {
      clearTimeout(deadline)
      signal.removeEventListener('abort', onAbort)
      this.#waits.delete(call.callId)
      this.#deadlines.delete(call.callId)
    }
  }
}

function parsed(json: string): unknown {
  try {
    return json.trim() === '' ? {} : JSON.parse(json)
  } catch {
    return json
  }
}
