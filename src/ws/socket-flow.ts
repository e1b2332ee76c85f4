import type { Duplex } from 'node:stream'
import type { WebSocket } from 'ws'
import { rawSocket } from './raw-socket.ts'

export interface FlowLimits {
  /** Unsent bytes above which the socket is "backed up": reading pauses, runs wait. */
  highWaterMark: number
  /** Unsent bytes past which the client is closed at once. */
  maxBufferedBytes: number
  /** How long the socket may stay backed up before the client is closed as slow. */
  slowClientTimeoutMs: number
}

export type FlowViolation = 'slow' | 'buffer'

/** Re-check period while backed up: a safety net under the 'drain' event, not the mechanism. */
const POLL_MS = 100

/**
 * Flow control of one socket, for every frame it is sent (protocol.md §6): counts what is
 * unsent, stops reading the client's frames while above the high-water mark (a client that
 * floods and never reads is held back by TCP, not by our memory), wakes whoever waits for
 * room, and reports a client that stays backed up too long or past the hard cap.
 */
export class SocketFlow {
  readonly #socket: WebSocket
  readonly #raw: Duplex | undefined
  readonly #limits: FlowLimits
  readonly #onViolation: (violation: FlowViolation) => void
  #backedUpSince = 0
  #waiters: Array<() => void> = []
  #poll: NodeJS.Timeout | undefined
  #corked = false
  #ended = false

  constructor(socket: WebSocket, limits: FlowLimits, onViolation: (violation: FlowViolation) => void) {
    this.#socket = socket
    this.#raw = rawSocket(socket)
    this.#limits = limits
    this.#onViolation = onViolation
  }

  get bufferedAmount(): number {
    return this.#socket.bufferedAmount
  }

  get writable(): boolean {
    return this.#backedUpSince === 0
  }

  /** Resolves once below the high-water mark, or the socket is gone. */
  whenWritable(): Promise<void> {
    if (this.writable || this.#ended) return Promise.resolve()
    return new Promise((resolve) => this.#waiters.push(resolve))
  }

  send(frame: string): void {
    if (this.#ended || this.#socket.readyState !== this.#socket.OPEN) return
    this.#batchWrites()
    this.#socket.send(frame)
    const buffered = this.#socket.bufferedAmount
    if (buffered > this.#limits.maxBufferedBytes) return this.#violate('buffer')
    if (buffered > this.#limits.highWaterMark && this.writable) this.#backUp()
  }

  /** The socket closed: nobody waits for it any more. */
  end(): void {
    this.#ended = true
    clearInterval(this.#poll)
    this.#raw?.off('drain', this.#check)
    this.#wake()
  }

  /**
   * Frames sent in one burst of work (a run relaying every token of one upstream read) leave
   * in one write instead of one system call each: the socket is corked until the burst's
   * microtasks have run. Still one WebSocket frame per event.
   */
  #batchWrites(): void {
    if (this.#corked || !this.#raw) return
    const raw = this.#raw
    this.#corked = true
    raw.cork()
    process.nextTick(() => {
      this.#corked = false
      raw.uncork()
    })
  }

  #backUp(): void {
    this.#backedUpSince = Date.now()
    this.#socket.pause()
    this.#raw?.on('drain', this.#check)
    this.#poll = setInterval(this.#check, POLL_MS)
    this.#poll.unref()
  }

  /** Runs only while backed up: unblocking and end() both remove it. */
  readonly #check = (): void => {
    if (this.#socket.bufferedAmount <= this.#limits.highWaterMark) {
      this.#backedUpSince = 0
      clearInterval(this.#poll)
      this.#raw?.off('drain', this.#check)
      this.#socket.resume()
      this.#wake()
      return
    }
    if (Date.now() - this.#backedUpSince > this.#limits.slowClientTimeoutMs) this.#violate('slow')
  }

  #violate(violation: FlowViolation): void {
    this.end()
    this.#onViolation(violation)
  }

  #wake(): void {
    const waiters = this.#waiters
    this.#waiters = []
    for (const wake of waiters) wake()
  }
}
