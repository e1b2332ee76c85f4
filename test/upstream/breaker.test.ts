import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { textSteps } from '../helpers/fake-upstream.ts'
import { chat, setupUpstream } from './setup.ts'

t.test('circuit breaker: after N failed runs new runs fail fast, until a probe succeeds', async (t) => {
  const cooldownMs = 500
  const { up, client } = await setupUpstream(t, { CIRCUIT_BREAKER_THRESHOLD: 2, CIRCUIT_BREAKER_COOLDOWN_MS: cooldownMs, UPSTREAM_MAX_RETRIES: 0 })
  up.script(() => ({ status: 500 }))
  for (let i = 0; i < 2; i++) {
    const failed = await chat(t, client, `fail ${i}`)
    t.equal(failed.error?.metadata.code, 'upstream_error')
  }
  t.equal(up.requests.length, 2)

  const fast = await chat(t, client, 'while open')
  t.same(fast.types, ['status:thinking', 'error', 'complete'])
  t.equal(fast.error?.metadata.code, 'upstream_error')
  t.equal(fast.error?.metadata.retryable, true)
  const retryAfter = fast.error?.metadata.retry_after_ms ?? 0
  t.ok(retryAfter > 0 && retryAfter <= cooldownMs, `retry_after_ms ${retryAfter} tells the client when to come back`)
  t.equal(fast.complete.metadata.finish_reason, 'error')
  t.equal(up.requests.length, 2, 'the upstream was not called')

  up.script(() => ({ steps: textSteps('back again') }))
  await sleep(retryAfter + 20)
  const probe = await chat(t, client, 'probe')
  t.equal(probe.complete.metadata.finish_reason, 'stop', 'the half-open probe went through')
  t.equal(probe.complete.content, 'back again')
  const after = await chat(t, client, 'closed again')
  t.equal(after.complete.metadata.finish_reason, 'stop')
  t.equal(up.requests.length, 4)
})
