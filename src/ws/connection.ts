import type { FastifyBaseLogger } from 'fastify'
import type { WebSocket, RawData } from 'ws'
import {
  CloseCode,
  CloseReason,
  ErrorCode,
  ProtocolError,
  errorFrame,
  parseClientFrame,
  protocolErrorFrame,
  type ClientFrame,
  type ClientFrameType,
  type ServerFrame,
} from '../protocol/index.ts'
import type { SessionService } from '../sessions/session-service.ts'
import { WatchList, type Watcher } from '../sessions/watcher.ts'
import type { Claims, Verified } from '../plugins/auth.ts'
import { closeSocket } from './close-socket.ts'
import { ConnectionLog } from './connection-log.ts'
import { FrameQueue } from './frame-queue.ts'
import { SocketFlow, type FlowLimits, type FlowViolation } from './socket-flow.ts'
import { TokenExpiry } from './token-expiry.ts'

export { closeSocket }

export interface ConnectionLimits {
  maxContentChars: number
  /** Invalid frames tolerated per window before the connection is closed 1008. */
  invalidFrameLimit: number
  invalidFrameWindowMs: number
  /** Received frames that may wait to be served; one more closes the connection 1008. */
  maxPendingFrames: number
  /** Sessions watched at once; one more drops the least recently named. */
  maxWatched: number
  flow: FlowLimits
}

export interface ConnectionOptions {
  socket: WebSocket
  claims: Claims
  sessions: SessionService
  verifyToken: (token: string) => Verified
  /** The instance's logger: the connection's one child of it carries the upgrade's request id. */
  log: FastifyBaseLogger
  requestId: string
  limits: ConnectionLimits
  /** Called before a valid frame is served; a ProtocolError it throws is the answer. */
  admit?: (connection: Connection, frame: ClientFrame) => Promise<void> | void
  onClose?: (connection: Connection, code: number) => void
  /** Told the connection's traffic (metrics: src/plugins/metrics.ts). */
  observer?: ConnectionObserver
}

export interface ConnectionObserver {
  opened(): void
  received(type: ClientFrameType | 'invalid'): void
  /** A serialized frame was handed to the socket, which now holds `bufferedAmount` unsent bytes. */
  sent(frame: string, bufferedAmount: number): void
  /** A frame was refused by the rate limit (`admit` answered rate_limited). */
  rateLimited(): void
  closed(code: number): void
}

/** Errors answering a frame with an idempotency key carry it as `request_id`. */
async function withRequestId<T>(requestId: string | undefined, work: () => Promise<T>): Promise<T> {
  try {
    return await work()
  } catch (err) {
    if (err instanceof ProtocolError && requestId !== undefined) err.options.requestId ??= requestId
    throw err
  }
}

function codePoints(text: string, atMost: number): number {
  if (text.length <= atMost) return text.length
  let count = 0
  for (const _ of text) if (++count > atMost) break
  return count
}

/**
 * One client connection: validates and serves its frames in order (never waiting on a run,
 * so `cancel` is read while a run streams), delivers session events under its socket's flow
 * control, owns the subscriptions it watches (all closed with it), enforces token expiry.
 */
export class Connection implements Watcher {
  readonly socket: WebSocket
  readonly userId: string
  readonly #logging: ConnectionLog
  /** Cleared by each heartbeat ping, set by the pong. */
  alive = true
  readonly #expiry: TokenExpiry
  readonly #frames: FrameQueue
  #open = true
  readonly #flow: SocketFlow
  readonly watching: WatchList
  #lastSessionId: string | undefined
  #invalidFrames: number[] = []
  readonly #options: ConnectionOptions

  constructor(options: ConnectionOptions) {
    this.#options = options
    this.socket = options.socket
    this.userId = options.claims.sub
    this.#logging = new ConnectionLog(options.log, { reqId: options.requestId, userId: this.userId })
    this.watching = new WatchList(options.limits.maxWatched)
    this.#flow = new SocketFlow(this.socket, options.limits.flow, (violation) => this.#onFlowViolation(violation))
    this.#frames = new FrameQueue({
      maxPending: options.limits.maxPendingFrames,
      admit: (frame) => (this.isOpen ? options.admit?.(this, frame) : undefined),
      serve: (frame) => this.#serve(frame),
      refuse: (err, frame) => this.#refuse(err, frame),
      onOverflow: (pending) => {
        this.log.warn({ pending }, 'closing: too many pending frames')
        this.close(CloseCode.policyViolation, CloseReason.tooManyPendingFrames)
      },
    })
    // Listeners first, synchronously: a frame sent right after the handshake must not be lost.
    this.socket.on('message', (data, isBinary) => {
      // Nothing may escape into ws's event handling: a throw there would take the process down.
      try {
        this.#onMessage(data, isBinary)
      } catch (err) {
        this.#internal(err, '', 'unparsed')
      }
    })
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

  get bufferedAmount(): number {
    return this.#flow.bufferedAmount
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

  deliver(frame: string): void {
    this.#flow.send(frame)
    this.#options.observer?.sent(frame, this.socket.bufferedAmount)
  }

  send(frame: ServerFrame): void {
    this.deliver(JSON.stringify(frame))
  }

  close(code: number, reason: string): void {
    this.#stopWatching()
    closeSocket(this.socket, code, reason)
  }

  #onFlowViolation(violation: FlowViolation): void {
    const bufferedAmount = this.socket.bufferedAmount
    if (violation === 'slow') {
      this.log.warn({ bufferedAmount, timeoutMs: this.#options.limits.flow.slowClientTimeoutMs }, 'closing slow client')
      this.close(CloseCode.policyViolation, CloseReason.slowClient)
    } else {
      this.log.warn({ bufferedAmount }, 'closing client: too much unsent data')
      this.close(CloseCode.policyViolation, CloseReason.bufferLimit)
    }
  }

  /** From the moment the socket is closing, nothing more is watched on its behalf. */
  #stopWatching(): void {
    if (!this.#open) return
    this.#open = false
    this.#flow.end()
    this.watching.closeAll()
  }

  #onMessage(data: RawData, isBinary: boolean): void {
    const parsed = parseClientFrame(data, isBinary)
    this.#options.observer?.received(parsed.ok ? parsed.frame.type : 'invalid')
    if (!parsed.ok) {
      this.send(errorFrame(ErrorCode.invalidMessage, parsed.sessionId, parsed.reason))
      this.#countInvalid()
      return
    }
    this.#frames.push(parsed.frame)
  }

  #countInvalid(): void {
    const now = Date.now()
    const windowStart = now - this.#options.limits.invalidFrameWindowMs
    this.#invalidFrames = this.#invalidFrames.filter((at) => at > windowStart)
    this.#invalidFrames.push(now)
    if (this.#invalidFrames.length > this.#options.limits.invalidFrameLimit) {
      this.log.warn({ invalidFrames: this.#invalidFrames.length }, 'closing: too many invalid frames')
      this.close(CloseCode.policyViolation, CloseReason.tooManyInvalidFrames)
    }
  }

  async #serve(frame: ClientFrame): Promise<void> {
    try {
      if (this.isOpen) await this.#dispatch(frame)
    } catch (err) {
      try {
        this.#refuse(err, frame)
      } catch (answerErr) {
        // Nothing may reject the queue: every later frame would go unserved.
        this.#internal(answerErr, '', frame.type)
      }
    }
  }

  /** A frame that could not be served: a ProtocolError is the answer; anything else is `internal`. */
  #refuse(err: unknown, frame: ClientFrame): void {
    const sessionId = ('session_id' in frame && frame.session_id) || ''
    if (!(err instanceof ProtocolError)) return this.#internal(err, sessionId, frame.type)
    if (err.code === ErrorCode.rateLimited) this.#options.observer?.rateLimited()
    this.send(protocolErrorFrame(err, sessionId))
  }

  /** The answer to any unexpected failure: logged with the ids, `internal` to the client; never throws. */
  #internal(err: unknown, sessionId: string, frameType: string): void {
    this.log.error({ err, sessionId, frameType }, 'frame handling failed')
    try {
      this.send(errorFrame(ErrorCode.internal, sessionId))
    } catch (sendErr) {
      this.log.error({ err: sendErr, sessionId }, 'could not answer internal')
    }
  }

  async #dispatch(frame: ClientFrame): Promise<void> {
    switch (frame.type) {
      case 'ping':
        this.send({ type: 'pong', session_id: frame.session_id ?? '' })
        return
      case 'chat': {
        const requestId = frame.id
        if (codePoints(frame.content, this.#options.limits.maxContentChars) > this.#options.limits.maxContentChars) {
          throw new ProtocolError(ErrorCode.payloadTooLarge, `content is longer than ${this.#options.limits.maxContentChars} characters`, {
            ...(frame.session_id ? { sessionId: frame.session_id } : {}),
            ...(requestId === undefined ? {} : { requestId }),
          })
        }
        this.#lastSessionId = await withRequestId(requestId, () =>
          this.#options.sessions.chat(this, {
            sessionId: frame.session_id,
            content: frame.content,
            requestId,
            onBusy: frame.on_busy,
            edit: frame.edit,
            reasoning: frame.reasoning,
            clientTools: frame.client_tools,
          }),
        )
        return
      }
      case 'regenerate':
        await withRequestId(frame.id, () => this.#options.sessions.regenerate(this, { sessionId: frame.session_id, requestId: frame.id, onBusy: frame.on_busy }))
        this.#lastSessionId = frame.session_id
        return
      case 'tool_approval':
        await this.#options.sessions.answer(this.userId, {
          sessionId: frame.session_id,
          callId: frame.call_id,
          answer: { kind: 'approval', approved: frame.approved, ...(frame.reason === undefined ? {} : { reason: frame.reason }) },
        })
        return
      case 'tool_output': {
        const { maxContentChars } = this.#options.limits
        if (codePoints(frame.output, maxContentChars) > maxContentChars) {
          throw new ProtocolError(ErrorCode.payloadTooLarge, `output is longer than ${maxContentChars} characters`, { sessionId: frame.session_id })
        }
        await this.#options.sessions.answer(this.userId, {
          sessionId: frame.session_id,
          callId: frame.call_id,
          answer: { kind: 'client_tool', output: frame.output, isError: frame.is_error === true },
        })
        return
      }
      case 'cancel': {
        const sessionId = frame.session_id ?? this.#lastSessionId
        if (!sessionId) throw new ProtocolError(ErrorCode.noActiveRun, 'no session to cancel: name session_id')
        await this.#options.sessions.cancel(this.userId, sessionId)
        return
      }
      case 'resume':
        await this.#options.sessions.resume(this, frame.session_id, frame.last_seq)
        this.#lastSessionId = frame.session_id
        return
      case 'auth': {
        const verified = this.#options.verifyToken(frame.token)
        if (!verified.ok) throw new ProtocolError(ErrorCode.forbidden, `token refused: ${verified.reason}`)
        if (verified.claims.sub !== this.userId) throw new ProtocolError(ErrorCode.forbidden, 'token is for another user')
        this.#expiry.extend(verified.claims.exp * 1000)
        this.log.info('token refreshed')
        return
      }
    }
  }

  #onClose(code: number): void {
    this.#expiry.stop()
    this.#stopWatching()
    this.#logging.disconnected(code)
    this.#options.observer?.closed(code)
    this.#options.onClose?.(this, code)
  }
}
