import type { FastifyBaseLogger } from 'fastify'
import { DeadlineTimer } from '../deadline-timer.ts'
import { frameKind } from '../protocol/serialize.ts'
import { refKey, type Backend, type LogEnd, type LoggedEvent, type SessionRef } from '../store/types.ts'
import { Subscription, type SubscriptionOwner } from './subscription.ts'
import { WatcherClosed, type Watcher } from './watcher.ts'

export interface SubscriptionsOptions {
  backend: Backend
  log: FastifyBaseLogger
  /** How often this instance re-counts its watchers of sessions with a run (they age out unrefreshed). */
  refreshMs: number
  /** Told the number of open subscriptions whenever it changes (agw_subscriptions_active). */
  onCount?: (count: number) => void
}

/** The sessions this instance watches, with what is known of each. */
interface Watched {
  ref: SessionRef
  subscriptions: Set<Subscription>
  /** A run of the session is in progress (its `thinking` passed, its `complete` not yet). */
  running: boolean
  /** At the session's expiry as last told by the store: check it. */
  expiry: DeadlineTimer
}

const NONE: ReadonlySet<Subscription> = new Set()

/**
 * Every subscription of this instance, by session: who gets a session's frames, when a run
 * may pull more (`whenWritable`), when a session's last watcher left (the grace), and when a
 * watched session expired. A subscription enters and leaves through its own constructor and
 * close(): this hub never has to be kept in step by hand.
 */
export class Subscriptions implements SubscriptionOwner {
  readonly #backend: Backend
  readonly #log: FastifyBaseLogger
  readonly #onCount: ((count: number) => void) | undefined
  readonly #watched = new Map<string, Watched>()
  readonly #refresher: NodeJS.Timeout
  #count = 0

  constructor(options: SubscriptionsOptions) {
    this.#backend = options.backend
    this.#log = options.log
    this.#onCount = options.onCount
    this.#refresher = setInterval(() => void this.#refresh(), options.refreshMs)
    this.#refresher.unref()
  }

  get count(): number {
    return this.#count
  }

  /**
   * Starts `watcher` watching `ref` from `afterSeq` (or returns its subscription, if it has
   * one). The subscription exists from the first line on; every await after re-checks it.
   */
  async subscribe(watcher: Watcher, ref: SessionRef, afterSeq: number): Promise<Subscription> {
    if (!watcher.isOpen) {
      this.#orphanCheck(ref, undefined)
      throw new WatcherClosed()
    }
    const held = watcher.watching.get(refKey(ref))
    if (held) return held
    const subscription = new Subscription(ref, watcher, this)
    const { promise: counted, resolve } = Promise.withResolvers<void>()
    subscription.counted = counted
    try {
      // Counted first, so that the caller's next step follows the subscription at once.
      await this.#backend.sessions.addWatcher(ref, subscription.id).finally(resolve)
      if (subscription.closed) throw new WatcherClosed()
      subscription.attach(await this.#backend.events.subscribe(ref, afterSeq, subscription))
      if (subscription.closed) throw new WatcherClosed()
    } catch (err) {
      subscription.close()
      throw err
    }
    return subscription
  }

  /** The session's local subscriptions (for a run relaying to them). */
  of(ref: SessionRef): ReadonlySet<Subscription> {
    return this.#watched.get(refKey(ref))?.subscriptions ?? NONE
  }

  /** True while every local watcher of the session can take more. */
  writable(ref: SessionRef): boolean {
    for (const subscription of this.of(ref)) if (!subscription.watcher.writable) return false
    return true
  }

  /** Resolves once every local watcher of the session was handed the event of `seq` (or left), or after `timeoutMs`. */
  async delivered(ref: SessionRef, seq: number, timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))
    await Promise.race([Promise.all([...this.of(ref)].map((subscription) => subscription.whenDelivered(seq))), timeout])
    clearTimeout(timer)
  }

  /** Resolves once every local watcher of the session can take more (end-to-end backpressure). */
  async whenWritable(ref: SessionRef): Promise<void> {
    for (const subscription of this.of(ref)) {
      if (!subscription.watcher.writable) await subscription.watcher.whenWritable()
    }
  }

  /** The session ended for its local watchers (a run found its state gone): each hears why. */
  end(ref: SessionRef, reason: LogEnd): void {
    for (const subscription of [...this.of(ref)]) subscription.end(reason)
  }

  registered(subscription: Subscription): void {
    const watched = this.#watched.get(subscription.key) ?? this.#watch(subscription)
    watched.subscriptions.add(subscription)
    this.#count++
    this.#onCount?.(this.#count)
  }

  /** The session's first local subscription: it is watched here, its expiry checked from now on. */
  #watch(subscription: Subscription): Watched {
    const watched: Watched = { ref: subscription.ref, subscriptions: new Set(), running: false, expiry: new DeadlineTimer(() => void this.#checkExpiry(watched)) }
    this.#watched.set(subscription.key, watched)
    watched.expiry.arm(Date.now())
    return watched
  }

  /** Called once per subscription, by its close(). */
  released(subscription: Subscription, counted: Promise<void>): void {
    const watched = this.#watched.get(subscription.key) as Watched
    watched.subscriptions.delete(subscription)
    this.#count--
    this.#onCount?.(this.#count)
    if (watched.subscriptions.size === 0) {
      watched.expiry.clear()
      this.#watched.delete(subscription.key)
    }
    void counted.then(() => this.#orphanCheck(subscription.ref, subscription.id))
  }

  seen(subscription: Subscription, event: LoggedEvent): void {
    const watched = this.#watched.get(subscription.key)
    if (!watched) return
    const kind = frameKind(event.frame)
    if (kind === 'other') return
    const running = kind === 'thinking'
    if (watched.running === running) return
    watched.running = running
    // A run started: count this instance's watchers of it now, not at the next refresh.
    if (running) void this.#refreshOnly([watched])
  }

  /** A watcher left: when it was the last anywhere and a run is active, the run's instance starts the grace. */
  #orphanCheck(ref: SessionRef, watcherId: string | undefined): void {
    const { sessions, control } = this.#backend
    void (async () => {
      const remaining = watcherId === undefined ? await sessions.watcherCount(ref) : await sessions.removeWatcher(ref, watcherId)
      if (remaining > 0) return
      const active = await sessions.activeRun(ref)
      if (active) await control.publish({ kind: 'orphaned', ref, runId: active.runId })
    })().catch((err: unknown) => this.#log.warn({ err, sessionId: ref.id, userId: ref.owner }, 'could not release watcher'))
  }

  /** At the session's expiry (as the store tells it), check it: gone means its watchers hear so. */
  async #checkExpiry(watched: Watched): Promise<void> {
    let left: number | null
    try {
      left = await this.#backend.sessions.expiresIn(watched.ref)
    } catch (err) {
      this.#log.warn({ err, sessionId: watched.ref.id }, 'session expiry check failed')
      left = 5000
    }
    if (watched.subscriptions.size === 0) return
    if (left === null) this.end(watched.ref, 'expired')
    else watched.expiry.arm(Date.now() + left + 50)
  }

  async #refresh(): Promise<void> {
    await this.#refreshOnly([...this.#watched.values()].filter((watched) => watched.running))
  }

  async #refreshOnly(list: Watched[]): Promise<void> {
    if (list.length === 0) return
    const watched = list.map(({ ref, subscriptions }) => ({ ref, ids: [...subscriptions].map((subscription) => subscription.id) }))
    await this.#backend.sessions.refreshWatchers(watched).catch((err: unknown) => this.#log.warn({ err }, 'watcher refresh failed'))
  }

  close(): void {
    clearInterval(this.#refresher)
    for (const watched of this.#watched.values()) watched.expiry.clear()
  }
}
