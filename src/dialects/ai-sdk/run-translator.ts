import type { CompleteFrame, FinishReason, RunEvent } from '../../protocol/index.ts'
import type { ToolAnswer } from '../../store/types.ts'
import type { UiChunk, UiFinishReason } from './frames.ts'

/** A run event of our protocol (protocol.md §3), as a watcher receives it. */
export type RunFrame = RunEvent

const FINISH: Record<Exclude<FinishReason, 'cancelled'>, UiFinishReason> = {
  stop: 'stop',
  length: 'length',
  content_filter: 'content-filter',
  error: 'error',
  interrupted: 'error',
}

/**
 * What one run event becomes: its chunks, and whether the UI message stream ends there: the
 * run's end, or the end of the SDK's turn while the run waits on the client.
 */
export interface Translated {
  chunks: UiChunk[]
  end?: 'run' | 'turn'
}

export interface TranslatorOptions {
  /**
   * A replay (`resume`): the calls waiting on the client now. Only a wait for one of them ends
   * the turn; the calls answered since are replayed through to their results.
   */
  stillPending?: ReadonlySet<string>
}

/** A tool call of the current model round, until its result. */
interface OpenCall {
  /** Waits on the client: an approval asked and not yet resolved, or a client tool's output. */
  waiting: boolean
  client: boolean
  /** Its `tool-approval-request` was translated. */
  asked: boolean
  denied: boolean
  /** A client tool this request answered: the client has its output already. */
  answeredHere: boolean
}

type StatusFrame = Extract<RunFrame, { type: 'status' }>

/**
 * One run as one UI message stream (ai-sdk.md, "Server → client"): our run events in, the
 * SDK's `UIMessageChunk`s out, in order. It keeps the block state the chunks need (the open
 * text or reasoning part, the open step, the current round's tool calls).
 *
 * Waiting on the client (protocol.md §7): once every call of the round still open waits on the
 * client (an approval asked, a client tool called), the run can do nothing more until it is
 * answered: the SDK's turn ends there (`finish-step`, `finish` with `tool-calls`), as the SDK's
 * own server ends a step whose calls wait for approvals or client tools. The next `send` with
 * the answers goes on with the same run (`resumeWith`).
 */
export class RunTranslator {
  readonly #stillPending: ReadonlySet<string> | undefined
  #blocks = 0
  #text: string | undefined
  #reasoning: string | undefined
  #stepOpen = false
  /** A tool round ended: the next model output is a new step. */
  #afterTools = false
  #aborted = false
  readonly #calls = new Map<string, OpenCall>()

  constructor(options: TranslatorOptions = {}) {
    this.#stillPending = options.stillPending
  }

  translate(frame: RunFrame): Translated {
    const chunks: UiChunk[] = []
    switch (frame.type) {
      case 'token':
        this.#nextStep(chunks)
        this.#endReasoning(chunks)
        if (this.#text === undefined) chunks.push({ type: 'text-start', id: (this.#text = this.#blockId('text')) })
        chunks.push({ type: 'text-delta', id: this.#text, delta: frame.content })
        break
      case 'reasoning':
        this.#nextStep(chunks)
        this.#endText(chunks)
        if (this.#reasoning === undefined) chunks.push({ type: 'reasoning-start', id: (this.#reasoning = this.#blockId('reasoning')) })
        chunks.push({ type: 'reasoning-delta', id: this.#reasoning, delta: frame.content })
        break
      case 'error':
        chunks.push({ type: 'error', errorText: frame.content })
        break
      case 'complete':
        return { chunks: this.#complete(frame), end: 'run' }
      case 'status':
        this.#status(frame, chunks)
        if (this.#turnEnds()) {
          this.#finishStep(chunks)
          chunks.push({ type: 'finish', finishReason: 'tool-calls' })
          return { chunks, end: 'turn' }
        }
        break
    }
    return { chunks }
  }

  /** Whether the run now waits on the client for every call of the round still open, these among them. */
  waitsOn(callIds: Iterable<string>): boolean {
    const ids = [...callIds]
    return ids.length > 0 && this.#idle() && ids.every((id) => this.#calls.get(id)?.waiting === true)
  }

  /**
   * The request goes on past the client's answers: those calls no longer wait (their results
   * come), and a client tool's output is not sent back (the client has it, as it gave it).
   */
  resumeWith(answers: ReadonlyMap<string, ToolAnswer['kind']>): void {
    for (const [callId, kind] of answers) {
      const call = this.#calls.get(callId)
      if (!call) continue
      call.waiting = false
      call.answeredHere = kind === 'client_tool'
    }
  }

  #status(frame: StatusFrame, chunks: UiChunk[]): void {
    switch (frame.content) {
      case 'thinking':
        this.#stepOpen = true
        chunks.push({ type: 'start', messageId: frame.metadata.run_id }, { type: 'start-step' })
        return
      case 'tool_call': {
        this.#nextStep(chunks)
        this.#endBlocks(chunks)
        const { call_id: toolCallId, tool: toolName, arguments: input } = frame.metadata
        const client = frame.metadata.executor === 'client'
        this.#calls.set(toolCallId, { waiting: client, client, asked: false, denied: false, answeredHere: false })
        if (!client) {
          chunks.push({ type: 'tool-input-available', toolCallId, toolName, input, dynamic: true, providerExecuted: true })
        } else if (this.#stillPending && !this.#stillPending.has(toolCallId)) {
          // Replayed, and answered since: the client must not run it again (onToolCall).
          chunks.push({ type: 'tool-input-available', toolCallId, toolName, input, providerExecuted: true })
        } else {
          // The client's own tool: a typed `tool-<name>` part, run by the client (onToolCall, addToolOutput).
          chunks.push({ type: 'tool-input-available', toolCallId, toolName, input })
        }
        return
      }
      case 'approval_required': {
        const call = this.#call(frame.metadata.call_id)
        call.waiting = true
        call.asked = true
        chunks.push({ type: 'tool-approval-request', approvalId: frame.metadata.call_id, toolCallId: frame.metadata.call_id })
        return
      }
      case 'approval_resolved': {
        const { call_id: callId, approved, reason } = frame.metadata
        const call = this.#call(callId)
        call.waiting = false
        call.denied = !approved
        // Answered elsewhere, or expired: the client's part shows it (its own answer, again, changes nothing).
        if (call.asked) chunks.push({ type: 'tool-approval-response', approvalId: callId, approved, ...(reason === undefined ? {} : { reason }) })
        return
      }
      case 'tool_result': {
        const { call_id: toolCallId, result } = frame.metadata
        const call = this.#calls.get(toolCallId)
        this.#calls.delete(toolCallId)
        this.#afterTools = true
        if (call?.denied) chunks.push({ type: 'tool-output-denied', toolCallId })
        else if (call?.answeredHere) return
        else chunks.push(this.#result(toolCallId, result, frame.metadata.is_error, call?.client === true))
        return
      }
      case 'cancelled':
        this.#endBlocks(chunks)
        // Its waits are over too: the turn does not end here, the run does.
        this.#calls.clear()
        this.#aborted = true
        chunks.push({ type: 'abort', reason: 'cancelled' })
        return
      // queued, tool_progress: no chunk (ai-sdk.md).
    }
  }

  #result(toolCallId: string, result: unknown, isError: boolean, client: boolean): UiChunk {
    // A server tool's part is dynamic and provider-executed; a client tool's is the client's typed part.
    const kind = client ? {} : ({ dynamic: true, providerExecuted: true } as const)
    if (!isError) return { type: 'tool-output-available', toolCallId, output: result, ...kind }
    return { type: 'tool-output-error', toolCallId, errorText: typeof result === 'string' ? result : JSON.stringify(result), ...kind }
  }

  /** A call of the round; one this stream never saw announced (it began later) is tracked from here. */
  #call(callId: string): OpenCall {
    let call = this.#calls.get(callId)
    if (!call) this.#calls.set(callId, (call = { waiting: false, client: false, asked: false, denied: false, answeredHere: false }))
    return call
  }

  #idle(): boolean {
    return this.#calls.size > 0 && [...this.#calls.values()].every((call) => call.waiting)
  }

  #turnEnds(): boolean {
    if (!this.#idle()) return false
    const stillPending = this.#stillPending
    return !stillPending || [...this.#calls.keys()].some((callId) => stillPending.has(callId))
  }

  #complete(frame: CompleteFrame): UiChunk[] {
    const chunks: UiChunk[] = []
    this.#endBlocks(chunks)
    // A model round after tools is a step of its own, even an empty one: the SDK's
    // sendAutomaticallyWhen helpers read the last step's tool parts.
    this.#nextStep(chunks)
    this.#finishStep(chunks)
    const { finish_reason: reason, usage } = frame.metadata
    if (reason === 'cancelled') {
      // `abort` instead of `finish`, once: status:cancelled usually said it already.
      if (!this.#aborted) chunks.push({ type: 'abort', reason: frame.metadata.reason ?? 'cancelled' })
      return chunks
    }
    chunks.push({ type: 'finish', finishReason: FINISH[reason], ...(usage ? { messageMetadata: { usage } } : {}) })
    return chunks
  }

  #nextStep(chunks: UiChunk[]): void {
    if (!this.#afterTools) return
    this.#afterTools = false
    this.#finishStep(chunks)
    this.#stepOpen = true
    chunks.push({ type: 'start-step' })
  }

  #finishStep(chunks: UiChunk[]): void {
    if (!this.#stepOpen) return
    this.#stepOpen = false
    chunks.push({ type: 'finish-step' })
  }

  #endBlocks(chunks: UiChunk[]): void {
    this.#endReasoning(chunks)
    this.#endText(chunks)
  }

  #endText(chunks: UiChunk[]): void {
    if (this.#text === undefined) return
    chunks.push({ type: 'text-end', id: this.#text })
    this.#text = undefined
  }

  #endReasoning(chunks: UiChunk[]): void {
    if (this.#reasoning === undefined) return
    chunks.push({ type: 'reasoning-end', id: this.#reasoning })
    this.#reasoning = undefined
  }

  #blockId(kind: 'text' | 'reasoning'): string {
    return `${kind}-${++this.#blocks}`
  }
}
