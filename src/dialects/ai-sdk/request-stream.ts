import type { ToolAnswer } from '../../store/types.ts'
import type { AiSdkResponse, UiChunk } from './frames.ts'
import { RunTranslator, type RunFrame } from './run-translator.ts'

/**
 * Which run an SDK request follows, and from where:
 * - `requestId`: the run our chat (or regenerate) asked with this request id, from its start;
 * - `runId` + `stillPending`: a resume, the whole run replayed (only calls still waiting end the turn);
 * - `runId` + `answers`: a send answering calls of that run, from where the client's turn ended.
 */
export type Target = { requestId: string } | { runId: string; stillPending: ReadonlySet<string> } | { runId: string; answers: ReadonlyMap<string, ToolAnswer['kind']> }

const isTerminal = (chunk: UiChunk) => chunk.type === 'finish' || chunk.type === 'abort'

/**
 * One SDK request (a `send` or a `resume`) following one run of a session: picks that run's
 * events out of the session's, skips what it already relayed (a resume re-delivers from the
 * run's start), and numbers its chunks from 0, +1 each, as the SDK checks.
 *
 * A request that answers calls is given the run from its start too, and catches up silently:
 * the client has seen it up to the turn end where the calls it answers were waiting (the
 * first such point), and gets the rest.
 */
export class RequestStream {
  readonly requestId: string
  readonly sessionId: string
  #runId: string | undefined
  readonly #chatRequestId: string | undefined
  /** The calls this request answers (none unless it does). */
  readonly #answers: ReadonlyMap<string, ToolAnswer['kind']>
  readonly #send: (response: AiSdkResponse) => void
  readonly #translator: RunTranslator
  #sequence = 0
  #lastSeq = 0
  #catchingUp: boolean
  #over = false
  #muted = false
  readonly #settled = Promise.withResolvers<void>()

  constructor(requestId: string, sessionId: string, target: Target, send: (response: AiSdkResponse) => void) {
    this.requestId = requestId
    this.sessionId = sessionId
    this.#runId = 'runId' in target ? target.runId : undefined
    this.#chatRequestId = 'requestId' in target ? target.requestId : undefined
    this.#answers = 'answers' in target ? target.answers : new Map()
    this.#catchingUp = 'answers' in target
    this.#translator = new RunTranslator('stillPending' in target ? { stillPending: target.stillPending } : {})
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
    const { chunks, end } = this.#translator.translate(frame)
    if (this.#catchingUp) {
      if (end === 'run') {
        // Never where the client's turn ended (the calls were answered meanwhile): only the end.
        this.#goOn()
        this.#emit(chunks.filter(isTerminal))
        this.#end()
        return false
      }
      if (this.#translator.waitsOn(this.#answers.keys())) this.#goOn()
      return true
    }
    this.#emit(chunks)
    if (end) this.#end()
    return !end
  }

  /** The replay asked for this request is over: a request still catching up goes on from here. */
  replayed(): void {
    if (this.#catchingUp) this.#goOn()
  }

  /** An `error` chunk (human text) in the request's stream; the stream goes on. */
  note(errorText: string): void {
    if (this.#over) return
    if (this.#catchingUp) this.#goOn()
    this.#emit([{ type: 'error', errorText }])
  }

  /** The client's turn ended here: the answered calls' results and the rest follow, in its message. */
  #goOn(): void {
    this.#catchingUp = false
    this.#translator.resumeWith(this.#answers)
    this.#emit([{ type: 'start' }])
  }

  #emit(chunks: UiChunk[]): void {
    for (const chunk of chunks) this.#send({ type: 'chunk', requestId: this.requestId, sequence: this.#sequence++, chunk })
  }

  #end(): void {
    this.#over = true
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
    this.#over = true
    this.#send({ type: 'error', requestId: this.requestId, errorText })
    this.#settled.resolve()
  }

  /** Our run announces itself with the chat's request id: `status:queued`, or `status:thinking`. */
  #claim(frame: RunFrame): string | undefined {
    const announces = frame.type === 'status' && (frame.content === 'thinking' || frame.content === 'queued')
    return announces && frame.metadata.request_id === this.#chatRequestId ? frame.metadata.run_id : undefined
  }
}
