import type { FastifyBaseLogger } from 'fastify'
import type { WebSocket } from 'ws'
import { CloseCode, CloseReason } from '../protocol/index.ts'
import type { Subscriber } from '../sessions/subscriber.ts'
import { rawSocket } from '../ws/raw-socket.ts'

/** A subscriber whose socket flow control can watch and close: the WebSocket Connection. */
export interface Throttleable extends Subscriber {
  readonly socket: WebSocket
  close(code: number, reason: string): void
}

/** Awaited by a run after each event it logs: resolves when the run may pull the next one. */
export type FlowControl = (sessionId: string, subscribers: ReadonlySet<Subscriber>, signal?: AbortSignal) => Promise<void>

export interface FlowControlOptions {
  /** Unsent bytes a socket may hold before its runs stop pulling from the model. */
  highWaterMark: number
  /** How long a socket may stay above the mark before it is closed 1008 `slow client`. */
  slowClientTimeoutMs: number
  log: FastifyBaseLogger
  /** Re-check period while blocked: a safety net under the 'drain' event, not the mechanism. */
  pollMs?: number
}

const DEFAULT_POLL_MS = 100

function isThrottleable(subscriber: Subscriber): subscriber is Throttleable {
  const candidate = subscriber as Partial<Throttleable>
  return typeof candidate.close === 'function' && typeof candidate.socket?.once === 'function'
}

/**
 * One pending 'drain'-or-close per socket, shared by every run waiting on it, so a connection
 * following many sessions holds two listeners, not two per run.
 */
const writable = new WeakMap<Throttleable, Promise<void>>()

function whenWritable(subscriber: Throttleable): Promise<void> {
  let pending = writable.get(subscriber)
  if (!pending) {
    pending = new Promise((resolve) => {
      const { socket } = subscriber
      const raw = rawSocket(socket)
      const done = (): void => {
        raw?.off('drain', done)
        socket.off('close', done)
        writable.delete(subscriber)
        resolve()
      }
      raw?.once('drain', done)
      socket.once('close', done)
    })
    writable.set(subscriber, pending)
  }
  return pending
}

/** Resolves when any of the sockets drains or closes, on an abort, or after `ms`. */
async function somethingChanged(subscribers: Throttleable[], ms: number, signal: AbortSignal | undefined): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  let wake!: () => void
  const elapsed = new Promise<void>((resolve) => {
    wake = resolve
    timer = setTimeout(resolve, ms)
  })
  signal?.addEventListener('abort', wake, { once: true })
  try {
    await Promise.race([...subscribers.map(whenWritable), elapsed])
  } finally {
    clearTimeout(timer)
    signal?.removeEventListener('abort', wake)
  }
}

/**
 * End-to-end backpressure. A run awaits this after each event it logs (delivered at once to
 * local subscribers): it resolves at once while every subscriber's socket holds less than the
 * high-water mark, else when they have drained — so the run stops reading the model's stream
 * and the upstream is throttled through TCP. A socket above the mark for longer than the slow-
 * client timeout is closed 1008; it still holds the run until it is gone (within a second,
 * see `closeSocket`), and its close then goes down the ordinary disconnect path.
 */
export function createFlowControl(options: FlowControlOptions): FlowControl {
  const { highWaterMark, slowClientTimeoutMs, log } = options
  const pollMs = options.pollMs ?? DEFAULT_POLL_MS
  /** Since when each socket has been seen above the mark; shared by every run it watches. */
  const blockedSince = new WeakMap<Subscriber, number>()
  const closedAsSlow = new WeakSet<Subscriber>()

  function isBlocking(subscriber: Throttleable): boolean {
    const { socket } = subscriber
    if (socket.readyState !== socket.OPEN && socket.readyState !== socket.CLOSING) return false
    return subscriber.bufferedAmount > highWaterMark
  }

  function closeAsSlow(subscriber: Throttleable, sessionId: string, blockedMs: number): void {
    closedAsSlow.add(subscriber)
    log.warn(
      { connId: subscriber.id, userId: subscriber.userId, sessionId, bufferedAmount: subscriber.bufferedAmount, blockedMs },
      'closing slow client',
    )
    subscriber.close(CloseCode.policyViolation, CloseReason.slowClient)
  }

  return async function flowControl(sessionId, subscribers, signal) {
    for (;;) {
      if (signal?.aborted) return
      const now = Date.now()
      const blocked: Throttleable[] = []
      let wait = pollMs
      for (const subscriber of subscribers) {
        if (!isThrottleable(subscriber)) continue
        if (!isBlocking(subscriber)) {
          blockedSince.delete(subscriber)
          continue
        }
        blocked.push(subscriber)
        if (closedAsSlow.has(subscriber)) continue
        const since = blockedSince.get(subscriber) ?? now
        blockedSince.set(subscriber, since)
        const left = since + slowClientTimeoutMs - now
        if (left <= 0) closeAsSlow(subscriber, sessionId, now - since)
        else wait = Math.min(wait, left)
      }
      if (blocked.length === 0) return
      await somethingChanged(blocked, wait, signal)
    }
  }
}
