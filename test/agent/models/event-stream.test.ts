import t from 'tap'
import { EventStreamParser, type ServerSentEvent } from '../../../src/agent/models/event-stream.ts'

/** Every event of `reads`, pushed one after another, then the end. */
function parse(...reads: string[]): ServerSentEvent[] {
  const parser = new EventStreamParser()
  return [...reads.flatMap((read) => parser.push(read)), ...parser.end()]
}

t.test('events end at a blank line; data lines join with \\n; one leading space is dropped', async (t) => {
  t.same(parse('data: a\n\ndata:b\ndata:  c\n\n'), [
    { event: null, data: 'a' },
    { event: null, data: 'b\n c' },
  ])
})

t.test('the event field names the next event only', async (t) => {
  t.same(parse('event: error\ndata: x\n\ndata: y\n\n'), [
    { event: 'error', data: 'x' },
    { event: null, data: 'y' },
  ])
})

t.test('comments, unknown fields, id and retry are ignored; a field without a colon has an empty value', async (t) => {
  t.same(parse(': keep-alive\n\nid: 7\nretry: 100\nfoo: bar\ndata\n\n'), [{ event: null, data: '' }])
})

t.test('an event without data is not dispatched', async (t) => {
  t.same(parse('event: ping\n\n\n\ndata: real\n\n'), [{ event: null, data: 'real' }])
})

t.test('CRLF, CR and LF all end lines', async (t) => {
  t.same(parse('data: a\r\n\r\ndata: b\r\rdata: c\n\n'), [
    { event: null, data: 'a' },
    { event: null, data: 'b' },
    { event: null, data: 'c' },
  ])
})

t.test('lines and events split across reads anywhere, a CRLF between two reads included', async (t) => {
  const stream = 'data: one\r\n\r\ndata: two\r\n\r\n'
  for (let cut = 0; cut <= stream.length; cut++) {
    t.same(parse(stream.slice(0, cut), stream.slice(cut)), [
      { event: null, data: 'one' },
      { event: null, data: 'two' },
    ], `cut at ${cut}`)
  }
  t.same(parse('data: x\r', '\n', '\r\n'), [{ event: null, data: 'x' }], 'the LF after a CR at the end of a read is not a second line end')
})

t.test('push returns what each read completed; the end flushes a last line and event without their line ends', async (t) => {
  const parser = new EventStreamParser()
  t.same(parser.push('data: a\n'), [])
  t.same(parser.push('\ndata: b'), [{ event: null, data: 'a' }])
  t.same(parser.end(), [{ event: null, data: 'b' }])
  t.same(parser.end(), [], 'nothing twice')
})
