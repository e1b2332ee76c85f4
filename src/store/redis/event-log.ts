import type { EventLog, LogEnd, LoggedEvent, LogListener, LogSubscription, ReadResult, SessionRef } from '../types.ts'
import type { SharedRedis } from './connections.ts'
import { sessionKeys } from './keys.ts'
import { readEvents } from './scripts.ts'
import type { Tail } from './stream-tail.ts'

/** As XRANGE returns it: the one field `f` holds the frame. */
type StreamEntry = [id: string, fields: [name: string, frame: string]]

export interface RedisEventLogOptions {
  commands: SharedRedis
  tail: Tail
  prefix: string
}

function logged([id, fields]: StreamEntry): LoggedEvent {
  return { seq: Number.parseInt(id, 10), frame: fields[1] }
}

/**
 * Each session generation's events in a Redis Stream whose entry ids are the seqs
 * (`<seq>-0`), written by the store's fenced scripts; live tails share the instance's one
 * blocking reader (StreamTail).
 */
export class RedisEventLog implements EventLog {
  readonly #commands: SharedRedis
  readonly #tail: Tail
  readonly #prefix: string
  #closed = false

  constructor(options: RedisEventLogOptions) {
    this.#commands = options.commands
    this.#tail = options.tail
    this.#prefix = options.prefix
  }

  async read(ref: SessionRef, afterSeq: number): Promise<ReadResult> {
    const keys = sessionKeys(this.#prefix, ref)
    const [lastSeq, gone, entries] = (await readEvents.run(this.#commands.client, [keys.seq, keys.events], [afterSeq])) as [
      number,
      number,
      StreamEntry[],
    ]
    return { events: entries.map(logged), gone: gone === 1, lastSeq }
  }

  async subscribe(ref: SessionRef, afterSeq: number, listener: LogListener): Promise<LogSubscription> {
    const key = sessionKeys(this.#prefix, ref).events
    let delivered = afterSeq
    let ready = false
    let closed = false
    let paused = false
    /** The tail dropped the stream (it ended): nothing of ours is paused there any more. */
    let dropped = false
    // What is due to the listener, in order: the held backlog, then what the tail handed over.
    const queue: Array<() => void> = []
    const drain = () => {
      while (ready && !closed && !paused && queue.length > 0) queue.shift()!()
    }
    const deliver = (event: LoggedEvent) => {
      if (event.seq <= delivered) return
      delivered = event.seq
      listener.event(event)
    }
    const end = (reason: LogEnd) => {
      closed = true
      this.#tail.remove(key, onLog)
      listener.end(reason)
    }
    const onLog: LogListener = {
      event: (event) => {
        queue.push(() => deliver(event))
        drain()
      },
      end: (reason) => {
        dropped = true
        queue.push(() => end(reason))
        drain()
      },
    }
    // From here on the tail hands over every entry after `tailFrom`; this reads those before it.
    const tailFrom = this.#tail.add(key, afterSeq, onLog)
    let backlog: StreamEntry[] = []
    try {
      if (tailFrom > afterSeq) backlog = (await this.#commands.client.xrange(key, `${afterSeq + 1}-0`, `${tailFrom}-0`)) as StreamEntry[]
    } catch (err) {
      this.#tail.remove(key, onLog)
      throw err
    }
    // The tail had passed entries no longer held: as a reader that fell behind, it cannot be served.
    if (tailFrom > afterSeq && backlog[0]?.[0] !== `${afterSeq + 1}-0`) queue.unshift(() => end('history_gone'))
    else queue.unshift(...backlog.map((entry) => () => deliver(logged(entry))))
    // Held events, then what arrived meanwhile, once the caller has reacted to the resolved
    // promise (it sends status:resumed first): the same contract as the memory log.
    setImmediate(() => {
      ready = true
      drain()
    })
    return {
      close: () => {
        if (closed) return
        closed = true
        if (paused && !dropped) this.#tail.resume(key)
        this.#tail.remove(key, onLog)
      },
      // One pause of the stream per subscription, undone by its resume or its close.
      pause: () => {
        if (closed || paused) return
        paused = true
        if (!dropped) this.#tail.pause(key)
      },
      resume: () => {
        if (closed || !paused) return
        paused = false
        if (!dropped) this.#tail.resume(key)
        drain()
      },
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await this.#tail.close()
    await this.#commands.release()
  }
}
