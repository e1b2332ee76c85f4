import { randomUUID } from 'node:crypto'
import type { Duplex } from 'node:stream'
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
import type { SessionRegistry } from '../sessions/registry.ts'
import type { Subscriber } from '../sessions/subscriber.ts'
import type { Claims, Verified } from '../plugins/auth.ts'
import { rawSocket } from './raw-socket.ts'

export interface ConnectionLimits {
  maxContentChars: number
  /** Invalid frames tolerated per window before the connection is closed 1008. */
  invalidFrameLimit: number
  invalidFrameWindowMs: number
}

export interface ConnectionOptions {
  socket: WebSocket
  claims: Claims
  registry: SessionRegistry
  verifyToken: (token: string) => Verified
  log: FastifyBaseLogger
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

/** A socket that ignores our close frame is destroyed after this (ws itself waits 30 s). */
const CLOSE_TIMEOUT_MS = 1000
/** setTimeout's limit; a later expiry is re-armed when this fires. */
const MAX_TIMER_MS = 2 ** 31 - 1

export function closeSocket(socket: WebSocket, code: number, reason: string): void {
  if (socket.readyState === socket.CLOSED) return
  if (socket.readyState !== socket.CLOSING) socket.close(code, reason)
  setTimeout(() => socket.terminate(), CLOSE_TIMEOUT_MS).unref()
}

function codePoints(text: string, atMost: number): number {
  if (text.length <= atMost) return text.length
  let count = 0
  for (const _ of text) if (++count > atMost) break
  return count
}

/**
 * One client connection: validates and serves its frames in order (never waiting on a run,
 * so `cancel` is read while a run streams), delivers session events, enforces token expiry.
 */
export class Connection implements Subscriber {
  readonly id = randomUUID()
  readonly socket: WebSocket
  readonly userId: string
  readonly log: FastifyBaseLogger
  /** Cleared by each heartbeat ping, set by the pong. */
  alive = true
  #expiresAt: number
  #expiryTimer: NodeJS.Timeout | undefined
  #queue: Promise<void> = Promise.resolve()
  #corked = false
  #lastSessionId: string | undefined
  #invalidFrames: number[] = []
  readonly #options: ConnectionOptions

  constructor(options: ConnectionOptions) {
    this.#options = options
    this.socket = options.socket
    this.userId = options.claims.sub
    this.#expiresAt = options.claims.exp * 1000
    this.log = options.log.child({ connId: this.id, userId: this.userId })
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
    this.#armExpiry()
    options.observer?.opened()
    this.log.info('connected')
  }

  get bufferedAmount(): number {
    return this.socket.bufferedAmount
  }

  deliver(frame: string): void {
    if (this.socket.readyState !== this.socket.OPEN) return
    this.#batchWrites()
    this.socket.send(frame)
    this.#options.observer?.sent(frame, this.socket.bufferedAmount)
  }

  /**
   * Frames delivered in one burst of work (a run relaying every token of one upstream read)
   * leave in one write instead of one system call each: the socket is corked until the
   * burst's microtasks have run. Still one WebSocket frame per event.
   */
  #batchWrites(): void {
    if (this.#corked) return
    // Only called for an open WebSocket, which always has its TCP socket.
    const raw = rawSocket(this.socket) as Duplex
    this.#corked = true
    raw.cork()
    process.nextTick(() => {
      this.#corked = false
      raw.uncork()
    })
  }

  send(frame: ServerFrame): void {
    this.deliver(JSON.stringify(frame))
  }

  close(code: number, reason: string): void {
    closeSocket(this.socket, code, reason)
  }

  #armExpiry(): void {
    clearTimeout(this.#expiryTimer)
    const delay = this.#expiresAt - Date.now()
    this.#expiryTimer = setTimeout(() => {
      if (Date.now() < this.#expiresAt) return this.#armExpiry()
      this.log.info('token expired')
      this.close(CloseCode.unauthorized, CloseReason.tokenExpired)
    }, Math.min(Math.max(delay, 0), MAX_TIMER_MS))
    this.#expiryTimer.unref()
  }

  #onMessage(data: RawData, isBinary: boolean): void {
    const parsed = parseClientFrame(data, isBinary)
    this.#options.observer?.received(parsed.ok ? parsed.frame.type : 'invalid')
    if (!parsed.ok) {
      this.send(errorFrame(ErrorCode.invalidMessage, parsed.sessionId, parsed.reason))
      this.#countInvalid()
      return
    }
    const { frame } = parsed
    // In order, one at a time; handlers return as soon as a run is started, never when it ends.
    this.#queue = this.#queue.then(() => this.#serve(frame)).catch((err: unknown) => this.#internal(err, '', frame.type))
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
    const sessionId = ('session_id' in frame && frame.session_id) || ''
    try {
      if (this.socket.readyState !== this.socket.OPEN) return
      await this.#options.admit?.(this, frame)
      await this.#dispatch(frame)
    } catch (err) {
      if (err instanceof ProtocolError) {
        if (err.code === ErrorCode.rateLimited) this.#options.observer?.rateLimited()
        this.send(protocolErrorFrame(err, sessionId))
        return
      }
      this.#internal(err, sessionId, frame.type)
    }
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
        try {
          this.#lastSessionId = await this.#options.registry.chat(this, {
            sessionId: frame.session_id,
            content: frame.content,
            requestId,
          })
        } catch (err) {
          if (err instanceof ProtocolError && requestId !== undefined) err.options.requestId ??= requestId
          throw err
        }
        return
      }
      case 'cancel': {
        const sessionId = frame.session_id ?? this.#lastSessionId
        if (!sessionId) throw new ProtocolError(ErrorCode.noActiveRun, 'no session to cancel: name session_id')
        await this.#options.registry.cancel(this.userId, sessionId)
        return
      }
      case 'resume':
        await this.#options.registry.resume(this, frame.session_id, frame.last_seq)
        this.#lastSessionId = frame.session_id
        return
      case 'auth': {
        const verified = this.#options.verifyToken(frame.token)
        if (!verified.ok) throw new ProtocolError(ErrorCode.forbidden, `token refused: ${verified.reason}`)
        if (verified.claims.sub !== this.userId) throw new ProtocolError(ErrorCode.forbidden, 'token is for another user')
        this.#expiresAt = verified.claims.exp * 1000
        this.#armExpiry()
        this.log.info('token refreshed')
        return
      }
    }
  }

  #onClose(code: number): void {
    clearTimeout(this.#expiryTimer)
    this.log.info({ code }, 'disconnected')
    this.#options.observer?.closed(code)
    this.#options.onClose?.(this, code)
    this.#options.registry.disconnect(this).catch((err: unknown) => this.log.error({ err }, 'disconnect cleanup failed'))
  }
}
