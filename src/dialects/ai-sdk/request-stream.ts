import type { AiSdkResponse } from './frames.ts'
import { RunTranslator, type RunFrame } from './run-translator.ts'

/** Which run an SDK request follows: known (resume), or the one our chat asked with this request id. */
export type Target = { runId: string } | { requestId: string }

/**
 * One SDK request (a `send` or a `resume`) following one run of a session: picks that run's
 * events out of the session's, skips what it already relayed (a resume re-delivers from the
 * run's start), and numbers its chunks from 0, +1 each, as the SDK checks.
 */
export class RequestStream {
  readonly requestId: string
  readonly sessionId: string
  #runId: string | undefined
  readonly #chatRequestId: string | undefined
  readonly #send: (response: AiSdkResponse) => void
  readonly #translator = new RunTranslator()
  #sequence = 0
  #lastSeq = 0
  #muted = false
  readonly #settled = Promise.withResolvers<void>()

  constructor(requestId: string, sessionId: string, target: Target, send: (response: AiSdkResponse) => void) {
    this.requestId = requestId
    this.sessionId = sessionId
    this.#runId = 'runId' in target ? target.runId : undefined
    this.#chatRequestId = 'requestId' in target ? target.requestId : undefined
    this.#send = (response) => {
      if (!this.#muted) send(response)
    }
  }

  /** Whether `run` is the run this request follows (or would, once its first event names it). */
  follows(run: { runId: string; requestId?: string | undefined }): boolean {
    return run.runId === this.#runId || (this.#chatRequestId !== undefined && run.requestId === this.#chatRequestId)
  }

  /** A run event of the session; false once the stream is over (it is then never offered more). */
  offer(frame: RunFrame): boolean {
    if (this.#runId === undefined) this.#runId = this.#claim(frame)
    if (frame.metadata.run_id !== this.#runId || frame.seq <= this.#lastSeq) return true
    this.#lastSeq = frame.seq
    const { chunks, done } = this.#translator.translate(frame)
    for (const chunk of chunks) this.#send({ type: 'chunk', requestId: this.requestId, sequence: this.#sequence++, chunk })
    if (done) this.#end()
    return !done
  }

  #end(): void {
    this.#send({ type: 'end', requestId: this.requestId })
    this.#settled.resolve()
  }

  /** The SDK dropped the request (abort): the run is still followed, to see its end, but nothing more is sent. */
  mute(): void {
    this.#muted = true
  }

  /** Resolves once the run ended (or failed), or after `ms`. */
  async settled(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))
    await Promise.race([this.#settled.promise, timeout])
    clearTimeout(timer)
  }

  /** The request can no longer be served (the session ended for its watchers): the SDK's request error. */
  fail(errorText: string): void {
    this.#send({ type: 'error', requestId: this.requestId, errorText })
    this.#settled.resolve()
  }

  /** Our run announces itself with the chat's request id: `status:queued`, or `status:thinking`. */
  #claim(frame: RunFrame): string | undefined {
    const announces = frame.type === 'status' && (frame.content === 'thinking' || frame.content === 'queued')
    return announces && frame.metadata.request_id === this.#chatRequestId ? frame.metadata.run_id : undefined
  }
}
