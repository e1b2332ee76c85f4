import { setTimeout as sleep } from 'node:timers/promises'
import type { Redis } from 'ioredis'
import type { LogListener } from '../types.ts'
import { whenReady, type RedisLog } from './connections.ts'
import { deliverEntries, type StreamEntries, type Tailed } from './tail-entries.ts'

type Listener = LogListener

/** What an event log needs from a tail (an interface, so its ordering can be tested alone). */
export interface Tail {
  /**
   * Dispatches the stream's entries to `listener` from now on. Returns the seq up to which
   * entries are NOT dispatched to it: those are the caller's to read (XRANGE).
   */
  add(key: string, afterSeq: number, listener: Listener): number
  remove(key: string, listener: Listener): void
  /** Leaves the stream out of the reads until resumed as often (a reader's socket is backed up). */
  pause(key: string): void
  resume(key: string): void
  close(): Promise<void>
}

/** Longest wait of one XREAD by default; a new stream interrupts it through the wake stream. */
const BLOCK_MS = 5000
/** Entries per stream per read. */
const BATCH = 500
const WAKE_TTL_MS = 60_000
const RECOVER_WAIT_MS = 5000
const ERROR_PAUSE_MS = 250

export interface StreamTailOptions {
  /** This tail's own connection: XREAD BLOCK holds it. */
  blocking: Redis
  /** For wake-ups and clean-up. */
  commands: Redis
  /** A stream only this tail reads (keys.ts wakeKey). */
  wakeKey: string
  log: RedisLog
  /** XREAD BLOCK timeout. */
  blockMs?: number
}

/**
 * Every session stream this instance has subscribers for, read by ONE blocking XREAD on one
 * connection (not one per subscriber). When a stream joins while a read is blocked, an entry
 * added to the instance's wake stream (part of every read) ends the read at once; it is then
 * re-issued with the new set. Race-free: the wake stream is read from an explicit id, so an
 * entry added before the read reached Redis still ends it.
 * @see https://redis.io/docs/latest/commands/xread/
 */
export class StreamTail implements Tail {
  readonly #blocking: Redis
  readonly #commands: Redis
  readonly #wakeKey: string
  readonly #log: RedisLog
  readonly #blockMs: number
  readonly #streams = new Map<string, Tailed>()
  readonly #stop = new AbortController()
  #wakeCursor = '0-0'
  /** The streams of the read in flight, if one is. */
  #reading: ReadonlyMap<string, Tailed> | undefined
  /** Set while the loop waits for a first stream. */
  #idle: (() => void) | undefined
  #closed = false
  readonly #loop: Promise<void>

  constructor(options: StreamTailOptions) {
    this.#blocking = options.blocking
    this.#commands = options.commands
    this.#wakeKey = options.wakeKey
    this.#log = options.log
    this.#blockMs = options.blockMs ?? BLOCK_MS
    this.#loop = this.#run()
  }

  add(key: string, afterSeq: number, listener: Listener): number {
    let tailed = this.#streams.get(key)
    if (!tailed) {
      tailed = { cursor: afterSeq, listeners: new Set(), paused: 0 }
      this.#streams.set(key, tailed)
      this.#wake()
    }
    tailed.listeners.add(listener)
    return tailed.cursor
  }

  remove(key: string, listener: Listener): void {
    const tailed = this.#streams.get(key)
    if (!tailed) return
    tailed.listeners.delete(listener)
    // Dropped from the next read; a read in flight is not interrupted for it.
    if (tailed.listeners.size === 0) this.#streams.delete(key)
  }

  pause(key: string): void {
    const tailed = this.#streams.get(key)
    if (tailed) tailed.paused++
  }

  resume(key: string): void {
    const tailed = this.#streams.get(key)
    if (!tailed || tailed.paused === 0) return
    if (--tailed.paused === 0) this.#wake()
  }

  async close(): Promise<void> {
    this.#closed = true
    this.#stop.abort()
    this.#idle?.()
    this.#streams.clear()
    // QUIT would queue behind the blocked XREAD; dropping the socket ends it now.
    this.#blocking.disconnect()
    await this.#loop
    await this.#commands.del(this.#wakeKey).catch(() => {})
  }

  /** A stream joined: the read in flight (which lacks it, or reads it for listeners now gone) must end. */
  #wake(): void {
    if (this.#idle) {
      this.#idle()
      return
    }
    if (!this.#reading) return
    this.#commands
      .multi()
      .xadd(this.#wakeKey, 'MAXLEN', 1, '*', 'w', '1')
      .pexpire(this.#wakeKey, WAKE_TTL_MS)
      .exec()
      // A failed wake means Redis is down: the read fails too and is re-issued with every stream.
      .catch((err: unknown) => this.#log.debug({ err }, 'event tail wake-up failed'))
  }

  async #run(): Promise<void> {
    while (!this.#closed) {
      const streams = [...this.#streams].filter(([, tailed]) => tailed.paused === 0)
      if (streams.length === 0) {
        await new Promise<void>((resolve) => (this.#idle = resolve))
        this.#idle = undefined
        continue
      }
      const keys = streams.map(([key]) => key)
      const reading = new Map(streams)
      this.#reading = reading
      let reply: Array<[key: string, entries: StreamEntries]> | null
      try {
        reply = (await this.#blocking.xread(
          'COUNT',
          BATCH,
          'BLOCK',
          this.#blockMs,
          'STREAMS',
          this.#wakeKey,
          ...keys,
          this.#wakeCursor,
          ...streams.map(([, tailed]) => `${tailed.cursor}-0`),
        )) as Array<[string, StreamEntries]> | null
      } catch (err) {
        this.#reading = undefined
        if (this.#closed) return
        this.#log.debug({ err }, 'event tail read failed')
        await this.#recover()
        continue
      }
      this.#reading = undefined
      for (const [key, entries] of reply ?? []) this.#dispatch(reading, key, entries)
    }
  }

  #dispatch(reading: ReadonlyMap<string, Tailed>, key: string, entries: StreamEntries): void {
    if (key === this.#wakeKey) {
      for (const [id] of entries) this.#wakeCursor = id
      return
    }
    const tailed = reading.get(key)
    if (tailed) deliverEntries(this.#streams, key, tailed, entries, this.#log)
  }

  /** Down: wait for the reconnect. Up (a command error): pause, so no error can spin the loop. */
  async #recover(): Promise<void> {
    if (this.#blocking.status !== 'ready') {
      await whenReady(this.#blocking, RECOVER_WAIT_MS, this.#stop.signal)
      return
    }
    await sleep(ERROR_PAUSE_MS, undefined, { signal: this.#stop.signal }).catch(() => {})
  }
}
