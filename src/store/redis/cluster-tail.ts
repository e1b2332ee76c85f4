import type { Cluster } from 'ioredis'
import type { LogListener } from '../types.ts'
import { closeRedis, type RedisLog } from './connections.ts'
import type { Tail } from './stream-tail.ts'
import { deliverEntries, type StreamEntries, type Tailed } from './tail-entries.ts'

/** Entries per stream per read. */
const BATCH = 500
/** Every tailed stream is read this often even without a ring: a ring lost in a failover costs at most this. */
const SWEEP_MS = 2000

export interface ClusterTailOptions {
  /** This tail's own cluster client, with `shardedSubscribers`: one subscriber connection per master. */
  subscriber: Cluster
  /** Reads (XREAD without BLOCK, routed to the stream's master). */
  commands: Cluster
  log: RedisLog
  sweepMs?: number
}

/**
 * The live tail on a Redis Cluster. One blocking XREAD cannot span hash slots there (CROSSSLOT,
 * even for two slots of one node), so instead every append rings its stream's shard channel
 * (scripts.ts doorbell: SPUBLISH on the stream's own name, in its own slot) and this tail, which
 * SSUBSCRIBEs the streams it has listeners for, reads a rung stream from its cursor. ioredis holds
 * one subscriber connection per master node and moves the subscriptions when a slot moves (a
 * failover, MOVED); what rang meanwhile is read by the next sweep, or at once when the
 * subscribers are back. Reads are cursor-based, one at a time per stream: no gap, no duplicate.
 * @see https://redis.io/docs/latest/develop/interact/pubsub/#sharded-pubsub
 */
export class ClusterStreamTail implements Tail {
  readonly #subscriber: Cluster
  readonly #commands: Cluster
  readonly #log: RedisLog
  readonly #streams = new Map<string, Tailed>()
  /** Streams with a read in flight, and those rung meanwhile (read again after it). */
  readonly #reading = new Set<string>()
  readonly #rungAgain = new Set<string>()
  /** Streams whose SSUBSCRIBE failed (cluster not ready): retried by the sweep. */
  readonly #unsubscribed = new Set<string>()
  readonly #sweep: NodeJS.Timeout
  #closed = false

  constructor(options: ClusterTailOptions) {
    this.#subscriber = options.subscriber
    this.#commands = options.commands
    this.#log = options.log
    this.#subscriber.on('smessage', (channel: string) => this.#read(channel))
    // Subscriptions moved to a new master: what rang in between was missed.
    this.#subscriber.on('+subscriber', () => this.#readAll())
    this.#sweep = setInterval(() => this.#readAll(), options.sweepMs ?? SWEEP_MS)
    this.#sweep.unref()
  }

  add(key: string, afterSeq: number, listener: LogListener): number {
    let tailed = this.#streams.get(key)
    if (!tailed) {
      tailed = { cursor: afterSeq, listeners: new Set(), paused: 0 }
      this.#streams.set(key, tailed)
      this.#subscribe(key)
    }
    tailed.listeners.add(listener)
    return tailed.cursor
  }

  remove(key: string, listener: LogListener): void {
    const tailed = this.#streams.get(key)
    if (!tailed) return
    tailed.listeners.delete(listener)
    if (tailed.listeners.size > 0) return
    this.#streams.delete(key)
    this.#unsubscribed.delete(key)
    this.#subscriber.sunsubscribe(key).catch((err: unknown) => this.#log.debug({ err }, 'event tail unsubscribe failed'))
  }

  pause(key: string): void {
    const tailed = this.#streams.get(key)
    if (tailed) tailed.paused++
  }

  resume(key: string): void {
    const tailed = this.#streams.get(key)
    if (!tailed || tailed.paused === 0) return
    if (--tailed.paused === 0) this.#read(key)
  }

  async close(): Promise<void> {
    this.#closed = true
    clearInterval(this.#sweep)
    this.#streams.clear()
    await closeRedis(this.#subscriber)
  }

  /** Subscribed first, then read: an entry appended before the subscription took is read too. */
  #subscribe(key: string): void {
    this.#unsubscribed.delete(key)
    this.#subscriber.ssubscribe(key).then(
      () => this.#read(key),
      (err: unknown) => {
        this.#log.debug({ err }, 'event tail subscribe failed')
        if (this.#streams.has(key)) this.#unsubscribed.add(key)
      },
    )
  }

  #readAll(): void {
    for (const key of [...this.#unsubscribed]) this.#subscribe(key)
    for (const key of this.#streams.keys()) this.#read(key)
  }

  #read(key: string): void {
    const tailed = this.#streams.get(key)
    if (this.#closed || !tailed || tailed.paused > 0) return
    if (this.#reading.has(key)) {
      this.#rungAgain.add(key)
      return
    }
    this.#reading.add(key)
    this.#commands
      .xread('COUNT', BATCH, 'STREAMS', key, `${tailed.cursor}-0`)
      .then(
        (reply) => {
          const entries = ((reply ?? []) as Array<[string, StreamEntries]>)[0]?.[1] ?? []
          deliverEntries(this.#streams, key, tailed, entries, this.#log)
          // A full batch: more is waiting.
          if (entries.length === BATCH) this.#rungAgain.add(key)
        },
        // The sweep reads it again.
        (err: unknown) => this.#log.debug({ err }, 'event tail read failed'),
      )
      .finally(() => {
        this.#reading.delete(key)
        if (this.#rungAgain.delete(key)) this.#read(key)
      })
  }
}
