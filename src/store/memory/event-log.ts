import type { UnsequencedRunEvent } from '../../protocol/index.ts'
import { serializeEvent } from '../../protocol/serialize.ts'
import { refKey, type EventLog, type LogEnd, type LoggedEvent, type LogListener, type LogSubscription, type ReadResult, type SessionRef } from '../types.ts'

interface Reader {
  listener: LogListener
  delivered: number
  paused: boolean
}

interface SessionLog {
  lastSeq: number
  /**
   * The frames held, oldest first; the last one's seq is lastSeq. Frames only, not LoggedEvent
   * objects: thousands are held per session, and each object more is one more for every
   * scavenge to copy and every mark to visit.
   */
  frames: string[]
  readers: Set<Reader>
}

/**
 * Each session generation's events in an array, trimmed to `maxEvents`. Appends come from
 * the memory store only, which fences them first (see MemorySessionStore).
 */
export class MemoryEventLog implements EventLog {
  readonly #logs = new Map<string, SessionLog>()
  readonly #maxEvents: number

  constructor(options: { maxEvents: number }) {
    this.#maxEvents = options.maxEvents
  }

  #log(ref: SessionRef): SessionLog {
    const key = refKey(ref)
    let log = this.#logs.get(key)
    if (!log) this.#logs.set(key, (log = { lastSeq: 0, frames: [], readers: new Set() }))
    return log
  }

  lastSeq(ref: SessionRef): number {
    return this.#logs.get(refKey(ref))?.lastSeq ?? 0
  }

  append(ref: SessionRef, event: UnsequencedRunEvent): LoggedEvent {
    const log = this.#log(ref)
    const seq = ++log.lastSeq
    const logged = { seq, frame: serializeEvent(event, seq) }
    log.frames.push(logged.frame)
    // Trim in batches so a full buffer does not shift the array on every append.
    if (log.frames.length > this.#maxEvents * 1.25) log.frames.splice(0, log.frames.length - this.#maxEvents)
    for (const reader of log.readers) if (!reader.paused) this.#deliver(log, reader, logged)
    return logged
  }

  /** The generation is over: its readers hear why, then nothing more. */
  end(ref: SessionRef, reason: LogEnd): void {
    const key = refKey(ref)
    const log = this.#logs.get(key)
    this.#logs.delete(key)
    for (const reader of log?.readers ?? []) reader.listener.end(reason)
  }

  async read(ref: SessionRef, afterSeq: number): Promise<ReadResult> {
    const log = this.#logs.get(refKey(ref))
    if (!log) return { events: [], gone: afterSeq > 0, lastSeq: 0 }
    return readHeld(log, afterSeq, this.#maxEvents)
  }

  async subscribe(ref: SessionRef, afterSeq: number, listener: LogListener): Promise<LogSubscription> {
    const log = this.#log(ref)
    // Paused until the caller has reacted to the resolved promise (it sends status:resumed first).
    const reader: Reader = { listener, delivered: afterSeq, paused: true }
    log.readers.add(reader)
    let closed = false
    const resume = () => {
      if (closed || !reader.paused) return
      reader.paused = false
      this.#catchUp(log, reader)
    }
    setImmediate(resume)
    return {
      close: () => {
        closed = true
        log.readers.delete(reader)
      },
      pause: () => (reader.paused = true),
      resume,
    }
  }

  /** Delivers what the reader missed while paused; a gap (trimmed meanwhile) ends its reading. */
  #catchUp(log: SessionLog, reader: Reader): void {
    const held = readHeld(log, reader.delivered, this.#maxEvents)
    if (held.gone) {
      log.readers.delete(reader)
      reader.listener.end('history_gone')
      return
    }
    for (const event of held.events) {
      if (reader.paused || !log.readers.has(reader)) return
      this.#deliver(log, reader, event)
    }
  }

  #deliver(log: SessionLog, reader: Reader, event: LoggedEvent): void {
    if (event.seq <= reader.delivered) return
    reader.delivered = event.seq
    reader.listener.event(event)
  }

  async close(): Promise<void> {
    this.#logs.clear()
  }
}

function readHeld(log: SessionLog, afterSeq: number, maxEvents: number): ReadResult {
  const frames = log.frames.length > maxEvents ? log.frames.slice(-maxEvents) : log.frames
  const oldest = log.lastSeq - frames.length + 1
  const gone = afterSeq > log.lastSeq || afterSeq < oldest - 1
  const start = Math.max(0, afterSeq - oldest + 1)
  return { events: gone ? [] : frames.slice(start).map((frame, i) => ({ seq: oldest + start + i, frame })), gone, lastSeq: log.lastSeq }
}
