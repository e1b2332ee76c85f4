import t from 'tap'
import { retryDelayMs, withRetry } from '../../src/agent/resilience/retry.ts'
import { UpstreamError } from '../../src/agent/upstream-error.ts'
import { answers, capturingLogger, collect, fails, fakeModel, stop, text } from './fake-model.ts'

const options = { maxRetries: 2, baseDelayMs: 100, maxDelayMs: 1000 }
const serverError = () => new UpstreamError('server', 'the model server failed (500)', { status: 500 })

t.test('retryDelayMs: which failures are retried, and how long to wait', async (t) => {
  const half = { ...options, random: () => 0.5 }
  t.equal(retryDelayMs(serverError(), 0, half), 50, 'full jitter below the base')
  t.equal(retryDelayMs(serverError(), 1, half), 100, 'the ceiling doubles per retry')
  t.equal(retryDelayMs(serverError(), 1, { ...half, maxRetries: 5, baseDelayMs: 1500 }), 500, 'the ceiling is capped at maxDelayMs')
  t.equal(retryDelayMs(serverError(), 2, half), undefined, 'no retry past maxRetries')
  t.equal(retryDelayMs(new UpstreamError('rate_limited', '429', { retryAfterMs: 700 }), 0, half), 700, 'retry-after wins over backoff')
  t.equal(retryDelayMs(new UpstreamError('rate_limited', '429', { retryAfterMs: 1001 }), 0, half), undefined, 'a retry-after past the cap is not waited for')
  t.equal(retryDelayMs(new UpstreamError('auth', '401'), 0, half), undefined, 'not retryable')
  t.equal(retryDelayMs(new UpstreamError('bad_request', '400'), 0, half), undefined, 'not retryable')
  t.equal(retryDelayMs(new UpstreamError('circuit_open', 'open', { retryAfterMs: 10 }), 0, half), undefined, 'an open circuit is not hammered')
  const delays = Array.from({ length: 200 }, () => retryDelayMs(serverError(), 1, options)!)
  t.ok(delays.every((delay) => delay >= 0 && delay < 200), 'default jitter stays below the ceiling')
  t.ok(new Set(delays).size > 1, 'and is random')
})

t.test('failures before the first chunk are retried; the answer reaches the caller once', async (t) => {
  const { log, lines } = capturingLogger()
  const model = fakeModel([fails(serverError()), fails(new UpstreamError('connection', 'reset')), answers(text('Hi'), stop)])
  const chunks = await collect(withRetry(model, { ...options, baseDelayMs: 5 }, log))
  t.same(chunks, [text('Hi'), stop])
  t.equal(model.calls.length, 3)
  t.same(
    lines.filter((line) => line.msg.includes('retrying')).map((line) => [line.level, line.retry, line.failure]),
    [
      [40, 1, 'server'],
      [40, 2, 'connection'],
    ],
    'each retry logged at warn',
  )
})

t.test('bounded: after maxRetries the last failure is thrown', async (t) => {
  const model = fakeModel([fails(serverError())])
  await t.rejects(collect(withRetry(model, { ...options, baseDelayMs: 1 }, capturingLogger().log)), { name: 'UpstreamError', failure: 'server' })
  t.equal(model.calls.length, 3)
})

t.test('maxRetries 0 never retries', async (t) => {
  const model = fakeModel([fails(serverError())])
  await t.rejects(collect(withRetry(model, { ...options, maxRetries: 0 }, capturingLogger().log)), { name: 'UpstreamError', failure: 'server' })
  t.equal(model.calls.length, 1)
})

t.test('a failure after the first chunk is never retried (no duplicate answer)', async (t) => {
  const model = fakeModel([fails(serverError(), text('Hel')), answers(text('Hello'), stop)])
  const seen: unknown[] = []
  const stream = withRetry(model, options, capturingLogger().log).stream({ messages: [], tools: [], signal: new AbortController().signal })
  await t.rejects(
    (async () => {
      for await (const batch of stream) seen.push(...batch)
    })(),
    { name: 'UpstreamError', failure: 'server' },
  )
  t.same(seen, [text('Hel')])
  t.equal(model.calls.length, 1)
})

t.test('errors that are not upstream failures (bugs) and non-retryable failures pass straight through', async (t) => {
  const bug = fakeModel([fails(new TypeError('oops'))])
  await t.rejects(collect(withRetry(bug, options, capturingLogger().log)), TypeError)
  t.equal(bug.calls.length, 1)
  const auth = fakeModel([fails(new UpstreamError('auth', '401', { status: 401 }))])
  await t.rejects(collect(withRetry(auth, options, capturingLogger().log)), { name: 'UpstreamError', failure: 'auth' })
  t.equal(auth.calls.length, 1)
})

t.test('a cancel during the backoff ends the wait at once with the signal reason', async (t) => {
  const controller = new AbortController()
  const model = fakeModel([fails(new UpstreamError('rate_limited', '429', { retryAfterMs: 1000 }))])
  const started = performance.now()
  setTimeout(() => controller.abort(new Error('cancelled')), 30)
  await t.rejects(collect(withRetry(model, options, capturingLogger().log), controller.signal), { message: 'cancelled' })
  t.ok(performance.now() - started < 900, 'did not sit out the retry-after')
  t.equal(model.calls.length, 1)
})

t.test('a failure while the signal is aborted is not retried', async (t) => {
  const controller = new AbortController()
  const model = fakeModel([
    async function* () {
      controller.abort(new Error('cancelled'))
      throw serverError()
    },
  ])
  await t.rejects(collect(withRetry(model, options, capturingLogger().log), controller.signal), { name: 'UpstreamError', failure: 'server' })
  t.equal(model.calls.length, 1)
})

t.test('a wait that would outlast the first-token budget is not started: the failure is thrown with its retry-after', async (t) => {
  const model = fakeModel([fails(serverError()), fails(new UpstreamError('rate_limited', '429', { retryAfterMs: 300 })), answers(stop)])
  const started = performance.now()
  await t.rejects(collect(withRetry(model, { ...options, baseDelayMs: 1, budgetMs: 250 }, capturingLogger().log)), {
    name: 'UpstreamError',
    failure: 'rate_limited',
    retryAfterMs: 300,
  })
  t.equal(model.calls.length, 2, 'the backoff fitted, the retry-after did not')
  t.ok(performance.now() - started < 200, 'no wait started')
})
