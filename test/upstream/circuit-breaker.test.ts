import t from 'tap'
import { CircuitBreaker, withCircuitBreaker } from '../../src/agent/resilience/circuit-breaker.ts'
import { UpstreamError } from '../../src/agent/upstream-error.ts'
import { answers, capturingLogger, closable, collect, fails, fakeModel, stalls, stop, text } from './fake-model.ts'

const outage = () => new UpstreamError('server', 'the model server failed (503)', { status: 503 })

function clockedBreaker(threshold = 2, cooldownMs = 1000) {
  let now = 10_000
  const { log, lines } = capturingLogger()
  const breaker = new CircuitBreaker({ threshold, cooldownMs, now: () => now }, log)
  return { breaker, lines, advance: (ms: number) => (now += ms) }
}

t.test('closed → open after N consecutive failures → half-open probe → closed', async (t) => {
  const { breaker, lines, advance } = clockedBreaker()
  breaker.failed(breaker.admit(), outage())
  t.equal(breaker.state, 'closed', 'one failure is not an outage')
  breaker.failed(breaker.admit(), outage())
  t.equal(breaker.state, 'open')
  t.ok(lines.some((line) => line.level === 50 && line.msg.includes('circuit open')), 'opening is logged at error')
  advance(400)
  t.throws(() => breaker.admit(), { name: 'UpstreamError', failure: 'circuit_open', code: 'upstream_error', retryable: true, retryAfterMs: 600 }, 'fails fast with the time left')
  advance(600)
  const probe = breaker.admit()
  t.same(probe, { probe: true }, 'after the cooldown one probe goes through')
  t.equal(breaker.state, 'half_open')
  t.throws(() => breaker.admit(), { name: 'UpstreamError', failure: 'circuit_open', retryAfterMs: 1000 }, 'only one probe at a time')
  breaker.succeeded(probe)
  t.equal(breaker.state, 'closed')
  t.same(breaker.admit(), { probe: false })
  breaker.failed(breaker.admit(), outage())
  t.equal(breaker.state, 'closed', 'the count started over')
})

t.test('a failed probe opens the circuit for another cooldown', async (t) => {
  const { breaker, advance } = clockedBreaker(1)
  breaker.failed(breaker.admit(), outage())
  advance(1000)
  breaker.failed(breaker.admit(), outage())
  t.equal(breaker.state, 'open')
  advance(999)
  t.throws(() => breaker.admit(), { name: 'UpstreamError', retryAfterMs: 1 })
  advance(1)
  t.same(breaker.admit(), { probe: true })
})

t.test('a probe released without a verdict lets the next caller probe', async (t) => {
  const { breaker, advance } = clockedBreaker(1)
  breaker.failed(breaker.admit(), outage())
  advance(1000)
  breaker.released(breaker.admit())
  t.same(breaker.admit(), { probe: true })
})

t.test('calls admitted before the circuit opened: a late failure keeps it open, a late success closes it', async (t) => {
  const { breaker, advance } = clockedBreaker(1)
  const early = breaker.admit()
  const late = breaker.admit()
  breaker.failed(breaker.admit(), outage())
  t.equal(breaker.state, 'open')
  advance(500)
  breaker.failed(late, outage())
  t.throws(() => breaker.admit(), { name: 'UpstreamError', retryAfterMs: 500 }, 'a late failure does not restart the cooldown')
  breaker.succeeded(early)
  t.equal(breaker.state, 'closed', 'the upstream answered')
})

t.test('threshold 0 never opens', async (t) => {
  const { breaker } = clockedBreaker(0)
  for (let i = 0; i < 20; i++) breaker.failed(breaker.admit(), outage())
  t.equal(breaker.state, 'closed')
})

t.test('withCircuitBreaker: outages count, answers reset, cancels and bugs count for nothing', async (t) => {
  const { log } = capturingLogger()
  const breaker = new CircuitBreaker({ threshold: 2, cooldownMs: 60_000 }, log)
  const model = fakeModel([
    fails(outage()),
    fails(new UpstreamError('bad_request', '400', { status: 400 })),
    fails(outage()),
    fails(new TypeError('bug')),
    stalls(),
    fails(new UpstreamError('timeout', 'idle'), text('partial')),
    answers(text('never'), stop),
  ])
  const wrapped = withCircuitBreaker(model, breaker)
  await t.rejects(collect(wrapped), { name: 'UpstreamError', failure: 'server' })
  await t.rejects(collect(wrapped), { name: 'UpstreamError', failure: 'bad_request' })
  t.equal(breaker.state, 'closed', 'a 400 is an answer from a live server: the count restarted')
  await t.rejects(collect(wrapped), { name: 'UpstreamError', failure: 'server' })
  await t.rejects(collect(wrapped), TypeError)
  const cancel = new AbortController()
  setTimeout(() => cancel.abort(new Error('cancelled')), 10)
  await t.rejects(collect(wrapped, cancel.signal), { message: 'cancelled' })
  t.equal(breaker.state, 'closed', 'neither a bug nor a cancel is an outage')
  await t.rejects(collect(wrapped), { name: 'UpstreamError', failure: 'timeout' }, 'a failure after the first chunk still counts')
  t.equal(breaker.state, 'open')
  await t.rejects(collect(wrapped), { name: 'UpstreamError', failure: 'circuit_open' })
  t.equal(model.calls.length, 6, 'the open circuit did not call the model')
})

t.test('withCircuitBreaker: a probe decided at its first chunk; a later failure is an ordinary one', async (t) => {
  let now = 0
  const breaker = new CircuitBreaker({ threshold: 2, cooldownMs: 100, now: () => now }, capturingLogger().log)
  const model = fakeModel([fails(outage()), fails(outage()), fails(outage(), text('probe ok')), answers(stop), answers(text('x'), stop)])
  const wrapped = withCircuitBreaker(model, breaker)
  await t.rejects(collect(wrapped))
  await t.rejects(collect(wrapped))
  t.equal(breaker.state, 'open')
  now = 100
  await t.rejects(collect(wrapped), { name: 'UpstreamError', failure: 'server' })
  t.equal(breaker.state, 'closed', 'the probe answered, its later failure is one failure of a closed circuit')
  t.same(await collect(wrapped), [stop], 'a stream with no content is still an answer')
  t.same(await collect(wrapped), [text('x'), stop])
  t.equal(breaker.state, 'closed')
})

t.test('withCircuitBreaker: a caller that stops early releases the probe', async (t) => {
  let now = 0
  const breaker = new CircuitBreaker({ threshold: 1, cooldownMs: 100, now: () => now }, capturingLogger().log)
  const model = fakeModel([fails(outage()), stalls()])
  const wrapped = withCircuitBreaker(model, breaker)
  await t.rejects(collect(wrapped))
  now = 100
  const cancel = new AbortController()
  setTimeout(() => cancel.abort(new Error('cancelled')), 10)
  await t.rejects(collect(wrapped, cancel.signal))
  t.equal(breaker.state, 'half_open')
  t.same(breaker.admit(), { probe: true }, 'the probe slot is free again')
})

t.test('withCircuitBreaker: a caller that breaks off closes the inner stream; one that never asked admits nothing', async (t) => {
  let now = 0
  const breaker = new CircuitBreaker({ threshold: 1, cooldownMs: 100, now: () => now }, capturingLogger().log)
  const inner = closable(text('a'), text('b'))
  const model = fakeModel([fails(outage()), inner.behaviour])
  const wrapped = withCircuitBreaker(model, breaker)
  await t.rejects(collect(wrapped))
  now = 100
  const unasked = wrapped.stream({ messages: [], tools: [], signal: new AbortController().signal })[Symbol.asyncIterator]()
  t.same(await unasked.return?.(), { done: true, value: undefined })
  t.equal(model.calls.length, 1, 'never asked: the model was not called')
  for await (const batch of wrapped.stream({ messages: [], tools: [], signal: new AbortController().signal })) {
    t.same(batch, [text('a')])
    break
  }
  t.ok(inner.closed(), 'the inner stream was closed')
  t.equal(breaker.state, 'closed', 'the probe answered before the caller broke off')
})

t.test('withCircuitBreaker: once over, the stream answers done and gives no second verdict', async (t) => {
  const breaker = new CircuitBreaker({ threshold: 1, cooldownMs: 100 }, capturingLogger().log)
  const iterator = withCircuitBreaker(fakeModel([answers(stop)]), breaker).stream({ messages: [], tools: [], signal: new AbortController().signal })[Symbol.asyncIterator]()
  t.same(await iterator.next(), { done: false, value: [stop] })
  t.same(await iterator.next(), { done: true, value: undefined })
  t.same(await iterator.next(), { done: true, value: undefined }, 'asked again: still done')
  t.same(await iterator.return?.(), { done: true, value: undefined }, 'and a late return() is harmless')
  t.equal(breaker.state, 'closed')
})
