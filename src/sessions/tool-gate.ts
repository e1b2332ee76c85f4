import type { GateDecision, GatedCall } from '../agent/run-agent.ts'
import type { ToolRegistry } from '../agent/tools/registry.ts'
import type { PendingCall, UnsequencedRunEvent } from '../protocol/index.ts'
import type { Backend, SessionRef, ToolAnswer } from '../store/types.ts'
import { Fenced } from './fenced.ts'

export interface ToolGateOptions {
  backend: Backend
  ref: SessionRef
  runId: string
  signal: AbortSignal
  tools: ToolRegistry
  /** TOOLS_REQUIRING_APPROVAL. */
  approvalTools: ReadonlySet<string>
  /** The chat's client_tools. */
  clientTools: ReadonlySet<string>
  approvalTimeoutMs: number
  clientToolTimeoutMs: number
  /** Logs a run event (fenced, under backpressure): the executor's. */
  append(event: UnsequencedRunEvent): Promise<void>
  /** How long a call that expired here waits for the answer that claimed it first (CLAIMED_ANSWER_WAIT_MS). */
  claimedAnswerWaitMs: number
}

type Waited = ToolAnswer | 'expired'

/** How long a call that expired here waits for the answer that claimed it first (it is on its way). */
export const CLAIMED_ANSWER_WAIT_MS = 5000
const RUN: GateDecision = { kind: 'run' }

/**
 * The calls of one run that wait on the client (protocol.md §7): an approval before a server
 * tool runs, or a client tool's output. Each wait is recorded in the store first (so a resume,
 * REST and any instance see it), then answered by whoever claims it there, atomically: an
 * answer (through the control bus, from any instance) or the deadline, never both.
 */
export class ToolGate {
  readonly #options: ToolGateOptions
  readonly #waits = new Map<string, (answer: Waited) => void>()
  /** Deadlines of the calls waiting now: the run is not abandoned before the last. */
  readonly #deadlines = new Map<string, number>()

  constructor(options: ToolGateOptions) {
    this.#options = options
  }

  /** The latest deadline of the calls waiting now, if any wait. */
  get waitingUntil(): number | undefined {
    return this.#deadlines.size === 0 ? undefined : Math.max(...this.#deadlines.values())
  }

  answer(callId: string, answer: ToolAnswer): void {
    this.#waits.get(callId)?.(answer)
  }

  async decide(call: GatedCall): Promise<GateDecision> {
    const { approvalTools, clientTools, tools } = this.#options
    const kind: PendingCall['kind'] | undefined = clientTools.has(call.tool)
      ? 'client_tool'
      : approvalTools.has(call.tool) || tools.needsApproval(call.tool, call.argumentsJson)
        ? 'approval'
        : undefined
    if (!kind) return RUN
    const timeoutMs = kind === 'approval' ? this.#options.approvalTimeoutMs : this.#options.clientToolTimeoutMs
    const answer = await this.#wait(call, kind, timeoutMs)
    if (kind === 'client_tool') {
      if (answer === 'expired') return { kind: 'outcome', outcome: { ok: false, error: `timed out: the client sent no output within ${timeoutMs / 1000} s` } }
      const output = answer as Extract<ToolAnswer, { kind: 'client_tool' }>
      return { kind: 'outcome', outcome: output.isError ? { ok: false, error: output.output } : { ok: true, result: output.output } }
    }
    const approval = answer === 'expired' ? undefined : (answer as Extract<ToolAnswer, { kind: 'approval' }>)
    const reason = approval ? approval.reason : 'nobody answered in time'
    await this.#options.append({
      type: 'status',
      session_id: this.#options.ref.id,
      content: 'approval_resolved',
      metadata: { run_id: this.#options.runId, call_id: call.callId, approved: approval?.approved === true, ...(reason === undefined ? {} : { reason }) },
    })
    if (approval?.approved) return RUN
    const why = approval ? `the user denied it${reason ? `: ${reason}` : ''}` : `nobody approved it within ${timeoutMs / 1000} s`
    return { kind: 'outcome', outcome: { ok: false, error: `not run: ${why}` } }
  }

  /** Records the call as waiting, announces it, and resolves with its answer or 'expired'. */
  async #wait(call: GatedCall, kind: PendingCall['kind'], timeoutMs: number): Promise<Waited> {
    const { backend, ref, runId, signal } = this.#options
    const expiresAt = Date.now() + timeoutMs
    const pending: PendingCall = { call_id: call.callId, tool: call.tool, arguments: parsed(call.argumentsJson), kind, expires_at: new Date(expiresAt).toISOString() }
    const { promise, resolve, reject } = Promise.withResolvers<Waited>()
    // Listening before the call is announced: an answer may come right after.
    this.#waits.set(call.callId, resolve)
    this.#deadlines.set(call.callId, expiresAt)
    const onAbort = () => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    let claimedElsewhere: NodeJS.Timeout | undefined
    const deadline = setTimeout(() => {
      // The deadline answers only if nobody claimed the call first.
      backend.sessions.claimPending(ref, call.callId, kind).then(
        (claimed) => (claimed ? resolve('expired') : (claimedElsewhere = setTimeout(() => resolve('expired'), this.#options.claimedAnswerWaitMs))),
        () => resolve('expired'),
      )
    }, timeoutMs)
    try {
      if (!(await backend.sessions.addPending(ref, runId, pending))) throw new Fenced()
      if (kind === 'approval') {
        const { call_id, tool, arguments: args, expires_at } = pending
        await this.#options.append({ type: 'status', session_id: ref.id, content: 'approval_required', metadata: { run_id: runId, tool, call_id, arguments: args, expires_at } })
      }
      return await promise
    } finally {
      clearTimeout(deadline)
      clearTimeout(claimedElsewhere)
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
