import { CloseCode, CloseReason, ErrorCode, errorFrame } from '../protocol/index.ts'
import { refKey, type LogEnd, type LoggedEvent, type LogSubscription, type SessionRef } from '../store/types.ts'
import type { Watcher } from './watcher.ts'

/** What a subscription needs from the instance's hub (src/sessions/subscriptions.ts). */
export interface SubscriptionOwner {
  registered(subscription: Subscription): void
  /** The subscription closed: forget it, and tell the store it no longer watches. */
  released(subscription: Subscription, counted: Promise<void>): void
  /** A frame of the session passed by (the hub tracks which sessions have a run). */
  seen(subscription: Subscription, event: LoggedEvent): void
}

const endMessages: Record<Exclude<LogEnd, 'history_gone' | 'lost'>, string> = {
  deleted: 'session deleted',
  expired: 'session expired',
}

/**
 * One connection watching one session: the only object that ties the session's log tail and
 * its store watcher to a socket. Registered synchronously at construction (in the
 * connection's watch list and in the hub) and torn down by one idempotent `close()`, so
 * nothing can outlive it and nothing has to be kept in step by hand.
 */
let nextSubscription = 0

export class Subscription {
  /** Its watcher id in the store: unique, so a quick re-subscribe never races its predecessor's release. */
  readonly id: string
  readonly ref: SessionRef
  readonly key: string
  readonly watcher: Watcher
  readonly #owner: SubscriptionOwner
  #tail: LogSubscription | undefined
  #closed = false
  /** The seq of the last event handed to the socket. */
  #deliveredSeq = 0
  /** Resolved when that reaches their seq, or at close. */
  readonly #deliveryWaits = new Set<{ seq: number; resolve: () => void }>()
  /** Settles once the store counts this watcher (or failed to): release comes after it. */
  counted: Promise<void> = Promise.resolve()

  constructor(ref: SessionRef, watcher: Watcher, owner: SubscriptionOwner) {
    this.id = `${watcher.id}/${++nextSubscription}`
    this.ref = ref
    this.key = refKey(ref)
    this.watcher = watcher
    this.#owner = owner
    watcher.watching.add(this)
    owner.registered(this)
  }

  get closed(): boolean {
    return this.#closed
  }

  /** Hands the opened log tail over; a subscription closed meanwhile closes it at once. */
  attach(tail: LogSubscription): void {
    if (this.#closed) tail.close()
    else this.#tail = tail
  }

  /** Resolves once the event of `seq` was handed to the socket, or the subscription closed. */
  whenDelivered(seq: number): Promise<void> {
    if (this.#closed || this.#deliveredSeq >= seq) return Promise.resolve()
    const { promise, resolve } = Promise.withResolvers<void>()
    this.#deliveryWaits.add({ seq, resolve })
    return promise
  }

  /** A logged frame for the socket; the tail waits while the socket is backed up. */
  event(event: LoggedEvent): void {
    if (this.#closed) return
    this.watcher.deliver(event.frame)
    this.#deliveredSeq = event.seq
    for (const wait of this.#deliveryWaits) if (wait.seq <= event.seq) this.#settle(wait)
    this.#owner.seen(this, event)
    if (this.watcher.writable || !this.#tail) return
    const tail = this.#tail
    tail.pause()
    void this.watcher.whenWritable().then(() => {
      if (!this.#closed) tail.resume()
    })
  }

  /** The log ended for its readers: say why, then nothing more of this session reaches the socket. */
  end(reason: LogEnd): void {
    if (this.#closed) return
    const { id } = this.ref
    if (reason === 'history_gone') {
      // Fell behind what the log holds while its socket was backed up: resume from a reload.
      this.watcher.deliver(JSON.stringify(errorFrame(ErrorCode.historyGone, id, 'events were dropped while the connection was not reading', { retryable: false })))
    } else if (reason === 'lost') {
      // The store forgot the run mid-way (e.g. Redis restarted empty): 1011 says reconnect and resume.
      this.close()
      this.watcher.close(CloseCode.internalError, CloseReason.sessionLost)
      return
    } else {
      this.watcher.deliver(JSON.stringify(errorFrame(ErrorCode.notFound, id, endMessages[reason], { retryable: false })))
    }
    this.close()
  }

  #settle(wait: { resolve: () => void }): void {
    this.#deliveryWaits.delete(wait as { seq: number; resolve: () => void })
    wait.resolve()
  }

  close(): void {
    if (this.#closed) return
    this.#closed = true
    for (const wait of this.#deliveryWaits) this.#settle(wait)
    this.#tail?.close()
    this.watcher.watching.delete(this)
    this.#owner.released(this, this.counted)
  }
}
