/** One server-sent event: its `event` field (null when it had none) and its data lines joined by `\n`. */
export interface ServerSentEvent {
  event: string | null
  data: string
}

const LF = 10
const CR = 13

/**
 * The `text/event-stream` format, parsed one network read at a time: `push` takes whatever
 * text arrived and returns every event it completed, synchronously, so a read holding hundreds
 * of events costs one call, not one promise per event. Lines end in CRLF, LF or CR (a CR at the
 * end of one read and an LF at the start of the next are one line end); `:` lines are comments;
 * an event is dispatched by a blank line, and only when it has data.
 * @see https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
 */
export class EventStreamParser {
  /** The start of a line the last read did not finish. */
  #partial = ''
  /** The last read ended in CR: an LF first in the next one ends no line of its own. */
  #afterCR = false
  #event: string | null = null
  #data: string[] = []

  push(text: string): ServerSentEvent[] {
    const events: ServerSentEvent[] = []
    const input = this.#partial + text
    let start = this.#afterCR && input.charCodeAt(0) === LF ? 1 : 0
    this.#afterCR = false
    // Most servers send no CR at all: then only LFs are looked for.
    let cr = input.indexOf('\r', start)
    for (;;) {
      if (cr !== -1 && cr < start) cr = input.indexOf('\r', start)
      const lf = input.indexOf('\n', start)
      const end = cr === -1 ? lf : lf === -1 ? cr : Math.min(cr, lf)
      if (end === -1) break
      this.#line(input.slice(start, end), events)
      if (input.charCodeAt(end) === CR) {
        if (end + 1 === input.length) this.#afterCR = true
        start = input.charCodeAt(end + 1) === LF ? end + 2 : end + 1
      } else {
        start = end + 1
      }
    }
    this.#partial = input.slice(start)
    return events
  }

  /** The body ended: a last line without its line end, and an event without its blank line, still count. */
  end(): ServerSentEvent[] {
    const events: ServerSentEvent[] = []
    if (this.#partial) this.#line(this.#partial, events)
    this.#partial = ''
    this.#line('', events)
    return events
  }

  #line(line: string, events: ServerSentEvent[]): void {
    if (line === '') {
      if (this.#data.length > 0) events.push({ event: this.#event, data: this.#data.join('\n') })
      this.#event = null
      this.#data = []
      return
    }
    const colon = line.indexOf(':')
    if (colon === 0) return
    const field = colon === -1 ? line : line.slice(0, colon)
    let value = colon === -1 ? '' : line.slice(colon + 1)
    if (value.charCodeAt(0) === 32) value = value.slice(1)
    if (field === 'data') this.#data.push(value)
    else if (field === 'event') this.#event = value
  }
}
