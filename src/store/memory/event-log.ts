import type { UnsequencedRunEvent } from '../../protocol/index.ts'
import { serializeEvent } from '../../protocol/serialize.ts'
import { refKey, type EventLog, type LogEnd, type LoggedEvent, type LogListener, type LogSubscription, type ReadResult, type SessionRef } from '../types.ts'

interface Reader {
  listener: LogListener
  delivered: number
  paused: boolean
}

/** Any event but a token: its frame as first sent. */
interface HeldFrame {
  frame: string
}

/** Where a run's token events begin: what their frames share. */
interface TokenRun {
  seq: number
  sessionId: string
  runId: string
}

interface SessionLog {
  lastSeq: number
  /**
   * The events held, oldest first; the last one's seq is lastSeq. A token event (nearly all
   * of them) is held as its text alone, and its frame is made again when replayed: the same
   * bytes, from the same serializer and its run's ids. Its frame is about 150 bytes more,
   * sent and then dropped young, where held it was copied by every scavenge until promoted
   * and then marked by every mark-compact, hundreds of them per session. Any other event is
   * held as its frame.
   */
  held: Array<string | HeldFrame>
  /** The runs of the token events held, oldest first; the first may begin before them. */
  tokenRuns: TokenRun[]
  readers: Set<Reader>
}

/**
 * Each session generation's events in an array, trimmed to `maxEvents` (token events as
 * their text: SessionLog). Appends come from the memory store only, which fences them first
 * (see MemorySessionStore).
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
    if (!log) this.#logs.set(key, (log = { lastSeq: 0, held: [], tokenRuns: [], readers: new Set() }))
    return log
  }

  lastSeq(ref: SessionRef): number {
    return this.#logs.get(refKey(ref))?.lastSeq ?? 0
  }

  append(ref: SessionRef, event: UnsequencedRunEvent): LoggedEvent {
    const log = this.#log(ref)
    const seq = ++log.lastSeq
    const logged = { seq, frame: serializeEvent(event, seq) }
    if (event.type === 'token') {
      const run = log.tokenRuns.at(-1)
      if (run?.runId !== event.metadata.run_id || run.sessionId !== event.session_id) {
        log.tokenRuns.push({ seq, sessionId: event.session_id, runId: event.metadata.run_id })
      }
      log.held.push(event.content)
    } else {
      log.held.push({ frame: logged.frame })
    }
    // Trim in batches so a full buffer does not shift the array on every append.
    if (log.held.length > this.#maxEvents * 1.25) trim(log, log.held.length - this.#maxEvents)
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

/** Drops the oldest `count` events, and the token runs that only they were in. */
function trim(log: SessionLog, count: number): void {
  log.held.splice(0, count)
  const oldest = log.lastSeq - log.held.length + 1
  let firstNeeded = 0
  while (firstNeeded + 1 < log.tokenRuns.length && (log.tokenRuns[firstNeeded + 1] as TokenRun).seq <= oldest) firstNeeded++
  if (firstNeeded > 0) log.tokenRuns.splice(0, firstNeeded)
}

/** The held events after `afterSeq`, frames made again for token events. */
function readHeld(log: SessionLog, afterSeq: number, maxEvents: number): ReadResult {
  const count = Math.min(log.held.length, maxEvents)
  const oldest = log.lastSeq - count + 1
  const gone = afterSeq > log.lastSeq || afterSeq < oldest - 1
  if (gone) return { events: [], gone, lastSeq: log.lastSeq }
  const events: LoggedEvent[] = []
  const first = Math.max(afterSeq + 1, oldest)
  let run = 0
  for (let seq = first; seq <= log.lastSeq; seq++) {
    const entry = log.held[log.held.length - (log.lastSeq - seq) - 1] as string | HeldFrame
    if (typeof entry !== 'string') {
      events.push({ seq, frame: entry.frame })
      continue
    }
    while (run + 1 < log.tokenRuns.length && (log.tokenRuns[run + 1] as TokenRun).seq <= seq) run++
    const { sessionId, runId } = log.tokenRuns[run] as TokenRun
    events.push({ seq, frame: serializeEvent({ type: 'token', session_id: sessionId, content: entry, metadata: { run_id: runId } }, seq) })
  }
  return { events, gone, lastSeq: log.lastSeq }
}
