import type { FastifyBaseLogger } from 'fastify'
import type { RawData, WebSocket } from 'ws'
import { CloseCode, CloseReason, ErrorCode, ProtocolError, SessionId, type ClientFrameType, type RunEvent, type ServerFrame } from '../../protocol/index.ts'
import { refKey } from '../../store/types.ts'
import type { SessionService } from '../../sessions/session-service.ts'
import { WatchList, type Watcher } from '../../sessions/watcher.ts'
import type { Claims } from '../../plugins/auth.ts'
import { closeSocket } from '../../ws/close-socket.ts'
import { ConnectionLog } from '../../ws/connection-log.ts'
import { SocketFlow, type FlowLimits, type FlowViolation } from '../../ws/socket-flow.ts'
import { TokenExpiry } from '../../ws/token-expiry.ts'
import type { ConnectionObserver } from '../../ws/connection.ts'
import { INVALID_FRAME_REASON, parseRequest, type AbortRequest, type AiSdkRequest, type AiSdkResponse, type ResumeRequest, type SendRequest } from './frames.ts'
import { RequestStream } from './request-stream.ts'
import { readSend, type Answer } from './send-options.ts'
import { TypeCompiler } from '@sinclair/typebox/compiler'

export interface AiSdkLimits {
  maxContentChars: number
  /** Received frames that may wait to be served; one more closes the connection 1008. */
  maxPendingFrames: number
  maxWatched: number
  flow: FlowLimits
}

export interface AiSdkConnectionOptions {
  socket: WebSocket
  claims: Claims
  sessions: SessionService
  /** The instance's logger: the connection's one child of it carries the upgrade's request id. */
  log: FastifyBaseLogger
  requestId: string
  limits: AiSdkLimits
  /** The rate limit, before each frame is served; a ProtocolError it throws is the answer. */
  admit?: (connection: { userId: string }) => Promise<void> | void
  onClose?: (connection: AiSdkConnection) => void
  observer?: ConnectionObserver
}

/** How long an `abort` waits for its run's end, so that the next `send` finds the session free. */
const ABORT_SETTLE_MS = 2000

const sessionIdCheck = TypeCompiler.Compile(SessionId)
/** The `error` chunk of a send whose answers no call waits for any more. */
const NOTHING_WAITS = 'the answered tool calls are not waiting any more: answered elsewhere, expired or cancelled'
/** The metrics' frame types: the SDK's requests counted as what they do. */
const COUNTED_AS: Record<AiSdkRequest['type'], ClientFrameType> = { send: 'chat', resume: 'resume', abort: 'cancel' }

/**
 * One `WebSocketChatTransport` connection (ai-sdk.md): serves the SDK's requests in order
 * through the same SessionService as /ws/agent, and delivers each request's run as a UI
 * message stream, under the same flow control (SocketFlow), token expiry and limits.
 */
export class AiSdkConnection implements Watcher {
  readonly socket: WebSocket
  readonly userId: string
  readonly #logging: ConnectionLog
  readonly watching: WatchList
  /** Cleared by each heartbeat ping, set by the pong. */
  alive = true
  readonly #options: AiSdkConnectionOptions
  readonly #flow: SocketFlow
  readonly #expiry: TokenExpiry
  /** The requests being streamed, by the SDK's request id. */
  readonly #streams = new Map<string, RequestStream>()
  #open = true
  #pending = 0
  #tail: Promise<void> = Promise.resolve()

  constructor(options: AiSdkConnectionOptions) {
    this.#options = options
    this.socket = options.socket
    this.userId = options.claims.sub
    this.#logging = new ConnectionLog(options.log, { reqId: options.requestId, userId: this.userId, dialect: 'ai-sdk' })
    this.watching = new WatchList(options.limits.maxWatched)
    this.#flow = new SocketFlow(this.socket, options.limits.flow, (violation) => this.#onFlowViolation(violation))
    // Listeners first, synchronously: a frame sent right after the handshake must not be lost.
    this.socket.on('message', (data) => this.#onMessage(data))
    this.socket.on('pong', () => (this.alive = true))
    this.socket.once('close', (code) => this.#onClose(code))
    this.#expiry = new TokenExpiry(options.claims.exp * 1000, () => {
      this.log.info('token expired')
      this.close(CloseCode.unauthorized, CloseReason.tokenExpired)
    })
    options.observer?.opened()
    this.#logging.connected()
  }

  /** Made when first asked for (ConnectionLog). */
  get id(): string {
    return this.#logging.id
  }

  get log(): FastifyBaseLogger {
    return this.#logging.log
  }

  get isOpen(): boolean {
    return this.#open && this.socket.readyState === this.socket.OPEN
  }

  get writable(): boolean {
    return this.#flow.writable
  }

  whenWritable(): Promise<void> {
    return this.#flow.whenWritable()
  }

  /** A frame of a watched session: each request following its run turns it into chunks. */
  deliver(frame: string): void {
    const event = JSON.parse(frame) as ServerFrame
    const streams = [...this.#streams.values()].filter((stream) => stream.sessionId === event.session_id)
    if (streams.length === 0) return
    if ('seq' in event && event.seq !== undefined) {
      for (const stream of streams) if (!stream.offer(event as RunEvent)) this.#streams.delete(stream.requestId)
      return
    }
    // Not a run event: `status:resumed`, the end of a replay (no chunk), or an `error` saying
    // the session ended for its watchers (deleted, expired, history gone).
    if (event.type !== 'error') {
      for (const stream of streams) stream.replayed()
      return
    }
    for (const stream of streams) {
      this.#streams.delete(stream.requestId)
      stream.fail(event.content)
    }
  }

  close(code: number, reason: string): void {
    this.#stopWatching()
    closeSocket(this.socket, code, reason)
  }

  #respond(response: AiSdkResponse): void {
    const frame = JSON.stringify(response)
    this.#flow.send(frame)
    this.#options.observer?.sent(frame, this.socket.bufferedAmount)
  }

  #onMessage(data: RawData): void {
    const request = parseRequest(data.toString())
    this.#options.observer?.received(request ? COUNTED_AS[request.type] : 'invalid')
    if (!request) {
      this.log.info('closing: invalid frame')
      this.close(CloseCode.policyViolation, INVALID_FRAME_REASON)
      return
    }
    if (this.#pending >= this.#options.limits.maxPendingFrames) {
      this.log.warn({ pending: this.#pending + 1 }, 'closing: too many pending frames')
      this.close(CloseCode.policyViolation, CloseReason.tooManyPendingFrames)
      return
    }
    this.#pending++
    // Admitted as they arrive (the limiter answers in order), served one at a time in order;
    // a failure of one never stops the frames after it.
    const admitted = Promise.resolve().then(() => this.#options.admit?.(this))
    admitted.catch(() => {}) // answered in its turn below
    this.#tail = this.#tail
      .then(() => admitted)
      .then(
        () => this.#serve(request),
        (err: unknown) => this.#refuse(request, err),
      )
      .catch((err: unknown) => this.log.error({ err }, 'frame handling failed'))
      .finally(() => this.#pending--)
  }

  async #serve(request: AiSdkRequest): Promise<void> {
    if (!this.isOpen) return
    try {
      switch (request.type) {
        case 'send':
          return await this.#send(request)
        case 'resume':
          return await this.#resume(request)
        case 'abort':
          return await this.#abort(request)
      }
    } catch (err) {
      this.#refuse(request, err)
    }
  }

  /** The SDK's request error, human text only: a ProtocolError says why; anything else is ours. */
  #refuse(request: AiSdkRequest, err: unknown): void {
    const stream = this.#streams.get(request.requestId)
    if (stream) this.#streams.delete(request.requestId)
    if (request.type === 'abort') return
    if (!(err instanceof ProtocolError)) this.log.error({ err, frameType: request.type }, 'frame handling failed')
    const errorText = err instanceof ProtocolError ? err.message : 'internal error'
    if (stream) stream.fail(errorText)
    else this.#respond({ type: 'error', requestId: request.requestId, errorText })
  }

  async #send(request: SendRequest): Promise<void> {
    const { requestId, id: sessionId } = request
    const ask = readSend(request, this.#options.limits.maxContentChars)
    if (ask.kind === 'answers') return this.#answer(request, ask.answers)
    const stream = new RequestStream(requestId, sessionId, { requestId }, (response) => this.#respond(response))
    // Before the run starts: its first events may arrive before chat() returns.
    this.#streams.set(requestId, stream)
    const { onBusy, reasoning, clientTools } = ask
    if (ask.kind === 'regenerate') {
      await this.#options.sessions.regenerate(this, { sessionId, requestId, onBusy, reasoning, clientTools })
    } else {
      await this.#options.sessions.chat(this, { sessionId, content: ask.content, requestId, onBusy, reasoning, clientTools })
    }
  }

  /**
   * A send whose last message answers tool calls: the answers of the calls still waiting go to
   * the run as `tool_approval` / `tool_output`, and the request follows that run from where
   * the client's turn ended. Answers no call waits for any more are an `error` chunk.
   */
  async #answer(request: SendRequest, answers: Answer[]): Promise<void> {
    const { requestId, id: sessionId } = request
    const { sessions } = this.#options
    const session = await sessions.get(this.userId, sessionId)
    if (!session.active) throw new ProtocolError(ErrorCode.notPending, 'no tool call of this chat is waiting: its run is over')
    const waiting = new Map(session.pending.map((call) => [call.call_id, call.kind]))
    const due = answers.filter(({ callId, answer }) => waiting.get(callId) === answer.kind)
    // Where the client's turn ended: where the calls it answers were waiting.
    const answered = new Map((due.length > 0 ? due : answers).map(({ callId, answer }) => [callId, answer.kind]))
    const stream = new RequestStream(requestId, sessionId, { runId: session.active.runId, answers: answered }, (response) => this.#respond(response))
    // The run from its start is this stream's first events: the connection's watch of the
    // session (whose live events would come first) restarts with the replay.
    this.watching.get(refKey(session))?.close()
    this.#streams.set(requestId, stream)
    await sessions.resume(this, sessionId, session.active.startAfterSeq)
    if (due.length === 0) stream.note(NOTHING_WAITS)
    for (const { callId, answer } of due) {
      await sessions.answer(this.userId, { sessionId, callId, answer }).catch((err: unknown) => {
        // Answered elsewhere, or expired, meanwhile.
        if (!(err instanceof ProtocolError)) throw err
        stream.note(err.message)
      })
    }
  }

  /** The active run's whole UI message, then live (the SDK sends no lastSequence); `no-active` otherwise. */
  async #resume(request: ResumeRequest): Promise<void> {
    const { requestId, id: sessionId } = request
    const session = sessionIdCheck.Check(sessionId) ? await this.#session(sessionId) : null
    const active = session?.active
    if (!active) return this.#respond({ type: 'no-active', requestId })
    const stillPending = new Set(session.pending.map((call) => call.call_id))
    const stream = new RequestStream(requestId, sessionId, { runId: active.runId, stillPending }, (response) => this.#respond(response))
    this.#streams.set(requestId, stream)
    this.#respond({ type: 'start', requestId })
    await this.#options.sessions.resume(this, sessionId, active.startAfterSeq)
  }

  /** Cancels the run the request follows, and waits (bounded) for its end; its chunks are no longer sent. */
  async #abort(request: AbortRequest): Promise<void> {
    const stream = this.#streams.get(request.requestId)
    if (!stream) return
    stream.mute()
    const active = (await this.#session(stream.sessionId))?.active
    if (!active || !stream.follows(active)) {
      this.#streams.delete(stream.requestId)
      return
    }
    // That run only: the next one may have started meanwhile.
    await this.#options.sessions.cancel(this.userId, stream.sessionId, active.runId).catch((err: unknown) => {
      // Ended meanwhile: nothing left to stop.
      if (!(err instanceof ProtocolError)) throw err
    })
    await stream.settled(ABORT_SETTLE_MS)
    this.#streams.delete(stream.requestId)
  }

  async #session(sessionId: string) {
    try {
      return await this.#options.sessions.get(this.userId, sessionId)
    } catch (err) {
      if (err instanceof ProtocolError) return null
      throw err
    }
  }

  #onFlowViolation(violation: FlowViolation): void {
    const bufferedAmount = this.socket.bufferedAmount
    this.log.warn({ bufferedAmount, violation }, violation === 'slow' ? 'closing slow client' : 'closing client: too much unsent data')
    this.close(CloseCode.policyViolation, violation === 'slow' ? CloseReason.slowClient : CloseReason.bufferLimit)
  }

  #stopWatching(): void {
    if (!this.#open) return
    this.#open = false
    this.#flow.end()
    this.watching.closeAll()
  }

  #onClose(code: number): void {
    this.#expiry.stop()
    this.#stopWatching()
    this.#streams.clear()
    this.#logging.disconnected(code)
    this.#options.observer?.closed(code)
    this.#options.onClose?.(this)
  }
}
