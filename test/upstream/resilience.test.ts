import t from 'tap'
import { resilienceOptions, withResilience, type ResilienceOptions } from '../../src/agent/resilience/index.ts'
import { UpstreamError, type UpstreamFailure } from '../../src/agent/upstream-error.ts'
import { testConfig } from '../helpers/app.ts'
import { answers, capturingLogger, collect, fails, fakeModel, stalls, stop, text } from './fake-model.ts'

function options(overrides: { retry?: Partial<ResilienceOptions['retry']>; watchdog?: Partial<ResilienceOptions['watchdog']>; breaker?: Partial<ResilienceOptions['breaker']> } = {}): ResilienceOptions {
  return {
    retry: { maxRetries: 2, baseDelayMs: 5, maxDelayMs: 1000, budgetMs: 2000, ...overrides.retry },
    watchdog: { firstTokenTimeoutMs: 2000, idleTimeoutMs: 1000, runTimeoutMs: 10_000, ...overrides.watchdog },
    breaker: { threshold: 1, cooldownMs: 60_000, ...overrides.breaker },
  }
}

t.test('resilienceOptions: config names map onto the layers', async (t) => {
  const config = testConfig({
    UPSTREAM_MAX_RETRIES: 4,
    UPSTREAM_FIRST_TOKEN_TIMEOUT_MS: 1111,
    UPSTREAM_IDLE_TIMEOUT_MS: 2222,
    UPSTREAM_TIMEOUT_MS: 3333,
    CIRCUIT_BREAKER_THRESHOLD: 7,
    CIRCUIT_BREAKER_COOLDOWN_MS: 4444,
  })
  t.match(resilienceOptions(config), {
    retry: { maxRetries: 4, budgetMs: 1111 },
    watchdog: { firstTokenTimeoutMs: 1111, idleTimeoutMs: 2222, runTimeoutMs: 3333 },
    breaker: { threshold: 7, cooldownMs: 4444 },
  })
  const defaults = resilienceOptions(testConfig())
  t.match(defaults, { retry: { maxRetries: 2 }, watchdog: { firstTokenTimeoutMs: 60_000, idleTimeoutMs: 30_000, runTimeoutMs: 120_000 }, breaker: { threshold: 5, cooldownMs: 30_000 } })
  t.ok(defaults.retry.maxDelayMs < defaults.watchdog.firstTokenTimeoutMs, 'the longest wait fits in the first-token budget')
})

t.test('a healthy model streams through all three layers unchanged', async (t) => {
  const model = fakeModel([answers(text('Hi'), stop)])
  t.same(await collect(withResilience(model, options(), capturingLogger().log)), [text('Hi'), stop])
})

t.test('the breaker sees one verdict per call: retries inside it do not trip it early', async (t) => {
  const retried: UpstreamFailure[] = []
  const model = fakeModel([fails(new UpstreamError('server', '500', { status: 500 }))])
  const resilient = withResilience(model, options({ retry: { onRetry: (failure) => retried.push(failure) }, breaker: { threshold: 2 } }), capturingLogger().log)
  await t.rejects(collect(resilient), { name: 'UpstreamError', failure: 'server' })
  t.equal(model.calls.length, 3, 'one call, three attempts')
  t.same(retried, ['server', 'server'], 'onRetry told of each retry')
  await t.rejects(collect(resilient), { name: 'UpstreamError', failure: 'server' })
  t.equal(model.calls.length, 6)
  await t.rejects(collect(resilient), { name: 'UpstreamError', failure: 'circuit_open' }, 'two failed calls opened it')
  t.equal(model.calls.length, 6, 'fail fast: the model was not called')
})

t.test('the first-token budget spans the retries: a stalled upstream is asked once, then the run times out', async (t) => {
  const model = fakeModel([stalls()])
  const resilient = withResilience(model, options({ watchdog: { firstTokenTimeoutMs: 100 } }), capturingLogger().log)
  await t.rejects(collect(resilient), { name: 'UpstreamError', failure: 'timeout', code: 'upstream_timeout' })
  t.equal(model.calls.length, 1)
  t.equal(model.calls[0]?.signal.aborted, true, 'the stalled request was aborted')
})

t.test('a timeout counts as a failure for the breaker', async (t) => {
  const model = fakeModel([stalls()])
  const resilient = withResilience(model, options({ watchdog: { firstTokenTimeoutMs: 50 } }), capturingLogger().log)
  await t.rejects(collect(resilient), { name: 'UpstreamError', failure: 'timeout' })
  await t.rejects(collect(resilient), { name: 'UpstreamError', failure: 'circuit_open' })
})
