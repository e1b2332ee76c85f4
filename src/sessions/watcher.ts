import type { Subscription } from './subscription.ts'

/**
 * A connection as the session core sees it: somewhere to deliver a session's frames, under
 * the connection's own flow control (protocol.md §6), with the list of what it watches.
 */
export interface Watcher {
  /** Unique across instances: it is also the watcher id in the shared store. */
  readonly id: string
  readonly userId: string
  /** False once the socket is closing: nothing may start watching on its behalf after that. */
  readonly isOpen: boolean
  /** Sends a frame; the connection counts its unsent bytes and closes a client that never reads. */
  deliver(frame: string): void
  /** True while the socket's unsent bytes are under the high-water mark. */
  readonly writable: boolean
  /** Resolves once `writable` again, or the connection closed. */
  whenWritable(): Promise<void>
  readonly watching: WatchList
  /** Closes the connection (a close code of protocol.md §5). */
  close(code: number, reason: string): void
}

/** Why a run's AbortController fired; the reason decides the final events. */
export type AbortCause = 'cancel' | 'disconnect' | 'shutdown' | 'deleted' | 'superseded' | 'fenced' | 'parked'

export class RunAborted extends Error {
  override name = 'RunAborted'
  override readonly cause: AbortCause
  constructor(cause: AbortCause) {
    super(`run aborted: ${cause}`)
    this.cause = cause
  }
}

/** A subscription was refused because its connection closed meanwhile. */
export class WatcherClosed extends Error {
  override name = 'WatcherClosed'
}

/**
 * The subscriptions one connection owns, least recently named first. At most `limit`: one
 * more closes the oldest (protocol.md §5, MAX_WATCHED_PER_CONNECTION).
 */
export class WatchList {
  readonly #limit: number
  readonly #subscriptions = new Map<string, Subscription>()

  constructor(limit: number) {
    this.#limit = limit
  }

  get size(): number {
    return this.#subscriptions.size
  }

  get(key: string): Subscription | undefined {
    const subscription = this.#subscriptions.get(key)
    // Named again: now the most recent.
    if (subscription) {
      this.#subscriptions.delete(key)
      this.#subscriptions.set(key, subscription)
    }
    return subscription
  }

  add(subscription: Subscription): void {
    this.#subscriptions.set(subscription.key, subscription)
    while (this.#subscriptions.size > this.#limit) this.#subscriptions.values().next().value?.close()
  }

  /** Called by the subscription's own close(). */
  delete(subscription: Subscription): void {
    if (this.#subscriptions.get(subscription.key) === subscription) this.#subscriptions.delete(subscription.key)
  }

  closeAll(): void {
    for (const subscription of [...this.#subscriptions.values()]) subscription.close()
  }
}
