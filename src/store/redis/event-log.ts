import type { UnsequencedRunEvent } from '../../protocol/index.ts'
import type { EventLog, LoggedEvent, LogSubscription, ReadResult } from '../types.ts'
import type { SharedRedis } from './connections.ts'
import { frameTemplate, frameWithSeq } from './frame-template.ts'
import { sessionKeys } from './keys.ts'
import { appendEvent, readEvents } from './scripts.ts'
import type { Tail } from './stream-tail.ts'

/** As XRANGE returns it: the one field `f` holds the frame. */
type StreamEntry = [id: string, fields: [name: string, frame: string]]

export interface RedisEventLogOptions {
  commands: SharedRedis
  tail: Tail
  prefix: string
  ttlSeconds: number
  /** Stream MAXLEN (exact): events held per session. */
  maxEvents: number
}

function logged([id, fields]: StreamEntry): LoggedEvent {
  return { seq: Number.parseInt(id, 10), frame: fields[1] }
}

/**
 * Each session's events in a Redis Stream whose entry ids are the seqs (`<seq>-0`). A Lua
 * script takes the next seq and adds the entry in one step, so two writers never collide;
 * live tails share the instance's one blocking reader (StreamTail).
 */
export class RedisEventLog implements EventLog {
  readonly #commands: SharedRedis
  readonly #tail: Tail
  readonly #prefix: string
  readonly #ttlMs: number
  readonly #maxEvents: number
  #closed = false

  constructor(options: RedisEventLogOptions) {
    this.#commands = options.commands
    this.#tail = options.tail
    this.#prefix = options.prefix
    this.#ttlMs = options.ttlSeconds * 1000
    this.#maxEvents = options.maxEvents
  }

  async append(sessionId: string, event: UnsequencedRunEvent): Promise<LoggedEvent> {
    const keys = sessionKeys(this.#prefix, sessionId)
    const template = frameTemplate(event)
    const seq = Number(
      await appendEvent.run(this.#commands.client, [keys.seq, keys.events], [this.#ttlMs, this.#maxEvents, template.head, template.tail]),
    )
    return { seq, frame: frameWithSeq(template, seq) }
  }

  async lastSeq(sessionId: string): Promise<number> {
    return Number((await this.#commands.client.get(sessionKeys(this.#prefix, sessionId).seq)) ?? 0)
  }

  async read(sessionId: string, afterSeq: number): Promise<ReadResult> {
    const keys = sessionKeys(this.#prefix, sessionId)
    const [lastSeq, gone, entries] = (await readEvents.run(this.#commands.client, [keys.seq, keys.events], [afterSeq])) as [
      number,
      number,
      StreamEntry[],
    ]
    return { events: entries.map(logged), gone: gone === 1, lastSeq }
  }

  async subscribe(sessionId: string, afterSeq: number, listener: (event: LoggedEvent) => void): Promise<LogSubscription> {
    const key = sessionKeys(this.#prefix, sessionId).events
    let delivered = afterSeq
    let ready = false
    let closed = false
    const pending: LoggedEvent[] = []
    const deliver = (event: LoggedEvent) => {
      if (closed || event.seq <= delivered) return
      delivered = event.seq
      listener(event)
    }
    const onEvent = (event: LoggedEvent) => (ready ? deliver(event) : pending.push(event))
    // From here on the tail hands over every entry after `tailFrom`; this reads those before it.
    const tailFrom = this.#tail.add(key, afterSeq, onEvent)
    let backlog: StreamEntry[] = []
    try {
      if (tailFrom > afterSeq) backlog = (await this.#commands.client.xrange(key, `${afterSeq + 1}-0`, `${tailFrom}-0`)) as StreamEntry[]
    } catch (err) {
      this.#tail.remove(key, onEvent)
      throw err
    }
    // Held events, then what arrived meanwhile, once the caller has reacted to the resolved
    // promise (it sends status:resumed first): the same contract as the memory log.
    setImmediate(() => {
      for (const entry of backlog) deliver(logged(entry))
      for (const event of pending) deliver(event)
      pending.length = 0
      ready = true
    })
    return {
      close: () => {
        closed = true
        this.#tail.remove(key, onEvent)
      },
    }
  }

  async delete(sessionId: string): Promise<void> {
    const keys = sessionKeys(this.#prefix, sessionId)
    await this.#commands.client.del(keys.seq, keys.events)
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await this.#tail.close()
    await this.#commands.release()
  }
}
