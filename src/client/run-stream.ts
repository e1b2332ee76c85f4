import type { ChatFrame, FinishReason, RegenerateFrame, RunEvent, ToolApprovalFrame, ToolOutputFrame, Usage } from '../protocol/index.ts'
import { AsyncQueue } from './async-queue.ts'
import { AgentError } from './errors.ts'

export type { RunEvent }

/** How a run ended, from its `complete` frame. */
export interface RunResult {
  /** The whole assistant text (equals the concatenated tokens). */
  text: string
  finishReason: FinishReason
  /** Undefined when the run was cancelled before the server ever saw it. */
  runId: string | undefined
  usage?: Usage
  /** Why the run stopped early, when the server said. */
  reason?: string
}

/**
 * One `chat()`: an async iterable of that run's events, `status:thinking` first, `complete` last.
 * Iterate it once; or just await `text()`. Leaving the loop early does not cancel the run: call
 * `cancel()`. Fails with an AgentError when the run cannot finish (refused, history gone, closed).
 */
export class RunStream implements AsyncIterable<RunEvent> {
  /** The chat's idempotency key, echoed by the server as `metadata.request_id`. */
  readonly id: string
  readonly sessionId: string
  readonly #control: RunControl

  constructor(id: string, sessionId: string, control: RunControl) {
    this.id = id
    this.sessionId = sessionId
    this.#control = control
  }

  /** Known once the server accepted the run (its `status:thinking`). */
  get runId(): string | undefined {
    return this.#control.runId
  }

  get done(): boolean {
    return this.#control.settled
  }

  /** Stops the run; the iterable then ends with `status:cancelled` and `complete`. Idempotent. */
  cancel(): void {
    this.#control.requestCancel()
  }

  /**
   * (1.1) Answers a `status:approval_required` of this run: the tool runs. A call answered
   * already (here, in another tab, on another device) is refused `not_pending` (onError).
   */
  approve(callId: string): void {
    this.#control.answer({ type: 'tool_approval', session_id: this.sessionId, call_id: callId, approved: true })
  }

  /** (1.1) Refuses a pending approval: the tool does not run, and the model is told `reason`. */
  deny(callId: string, reason?: string): void {
    this.#control.answer({ type: 'tool_approval', session_id: this.sessionId, call_id: callId, approved: false, ...(reason === undefined ? {} : { reason }) })
  }

  result(): Promise<RunResult> {
    return this.#control.result
  }

  text(): Promise<string> {
    return this.#control.result.then((result) => result.text)
  }

  [Symbol.asyncIterator](): AsyncIterator<RunEvent> {
    return this.#control.events[Symbol.asyncIterator]()
  }
}

/** The frame that asks for a run: a chat, or (1.1) a regenerate. */
export type RunRequestFrame =
  | (ChatFrame & Required<Pick<ChatFrame, 'session_id' | 'id'>>)
  | (RegenerateFrame & Required<Pick<RegenerateFrame, 'id'>>)

export interface RunInit {
  frame: RunRequestFrame
  maxBufferedEvents: number
  onCancel: (run: RunControl) => void
  /** Sends an answer to a call of the run that waits on the client. */
  onAnswer: (frame: ToolApprovalFrame | ToolOutputFrame) => void
}

/** The client's side of a run: what the stream's reader never sees. */
export class RunControl {
  readonly stream: RunStream
  readonly events: AsyncQueue<RunEvent>
  readonly result: Promise<RunResult>
  /** What (re)asks the server for this run: sent again, under the same id, after a reconnect. */
  readonly chatFrame: RunRequestFrame
  runId: string | undefined
  settled = false
  /** Handed to an open socket at least once: the server may know it. */
  sent = false
  cancelRequested = false
  /** Retries of a refused frame (busy, rate_limited) so far. */
  retries = 0
  readonly #onCancel: (run: RunControl) => void
  readonly #onAnswer: (frame: ToolApprovalFrame | ToolOutputFrame) => void
  #resolve!: (result: RunResult) => void
  #reject!: (error: AgentError) => void
  #cleanups: Array<() => void> = []

  constructor(init: RunInit) {
    this.chatFrame = init.frame
    this.#onCancel = init.onCancel
    this.#onAnswer = init.onAnswer
    this.events = new AsyncQueue(
      init.maxBufferedEvents,
      () => new AgentError('overflow', `more than ${init.maxBufferedEvents} events were not read: iterate the run, or only await text()`),
    )
    this.result = new Promise<RunResult>((resolve, reject) => {
      this.#resolve = resolve
      this.#reject = reject
    })
    // Awaiting the result is optional: a failure must not become an unhandled rejection.
    this.result.catch(() => {})
    this.stream = new RunStream(init.frame.id, init.frame.session_id, this)
  }

  get id(): string {
    return this.chatFrame.id
  }

  get sessionId(): string {
    return this.chatFrame.session_id
  }

  get acknowledged(): boolean {
    return this.runId !== undefined
  }

  answer(frame: ToolApprovalFrame | ToolOutputFrame): void {
    this.#onAnswer(frame)
  }

  requestCancel(): void {
    if (this.settled) return
    this.#onCancel(this)
  }

  /** Runs when the run settles (timers, abort listeners). */
  onSettled(cleanup: () => void): void {
    this.#cleanups.push(cleanup)
  }

  deliver(event: RunEvent): void {
    this.events.push(event)
    if (event.type !== 'complete') return
    const { metadata } = event
    this.#settle()
    this.#resolve({
      text: event.content,
      finishReason: metadata.finish_reason,
      runId: metadata.run_id,
      ...(metadata.usage ? { usage: metadata.usage } : {}),
      ...(metadata.reason === undefined ? {} : { reason: metadata.reason }),
    })
  }

  /** Ends a run the server never saw, as cancelled, without events. */
  cancelLocally(): void {
    this.#settle()
    this.#resolve({ text: '', finishReason: 'cancelled', runId: undefined, reason: 'cancelled before it was sent' })
  }

  fail(error: AgentError): void {
    this.#settle(error)
    this.#reject(error)
  }

  #settle(error?: AgentError): void {
    this.settled = true
    this.events.end(error)
    for (const cleanup of this.#cleanups.splice(0)) cleanup()
  }
}
