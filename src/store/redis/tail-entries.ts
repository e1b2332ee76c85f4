import type { LogListener, LoggedEvent } from '../types.ts'
import type { RedisLog } from './connections.ts'

/**
 * As XREAD returns them: an event `<seq>-0` has the one field `f` (the frame); a deletion's
 * end mark `<last seq>-1` has the field `end`.
 */
export type StreamEntries = Array<[id: string, fields: [name: string, value: string]]>

/** One stream a tail reads for its listeners. */
export interface Tailed {
  /** The seq of the last entry dispatched (or the first listener's starting point). */
  cursor: number
  listeners: Set<LogListener>
  paused: number
}

/**
 * Hands a read's entries of one stream to its listeners, in order, the way every tail does:
 * `tailed` is what the read was issued for; removed meanwhile (or removed and added again from
 * another seq), the next read serves it. An end mark, or a gap (entries trimmed before the read:
 * the reader was paused too long), ends the stream for its listeners.
 */
export function deliverEntries(streams: Map<string, Tailed>, key: string, tailed: Tailed, entries: StreamEntries, log: RedisLog): void {
  if (streams.get(key) !== tailed) return
  for (const [id, fields] of entries) {
    // Paused meanwhile (by a listener, even mid-batch): the rest is read again on resume.
    if (tailed.paused > 0) return
    const seq = Number.parseInt(id, 10)
    if (!id.endsWith('-0') || seq !== tailed.cursor + 1) {
      streams.delete(key)
      tell(tailed, log, (listener) => listener.end(id.endsWith('-0') ? 'history_gone' : 'deleted'))
      return
    }
    tailed.cursor = seq
    const event: LoggedEvent = { seq, frame: fields[1] }
    tell(tailed, log, (listener) => listener.event(event))
  }
}

function tell(tailed: Tailed, log: RedisLog, call: (listener: LogListener) => void): void {
  for (const listener of [...tailed.listeners]) {
    try {
      call(listener)
    } catch (err) {
      log.error({ err }, 'event listener failed')
    }
  }
}
