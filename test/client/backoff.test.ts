import t from 'tap'
import { backoffDelay, DEFAULT_BACKOFF } from '../../src/client/backoff.ts'

const policy = { baseMs: 100, maxMs: 1000 }

t.test('the ceiling doubles with each attempt, up to maxMs', async (t) => {
  const justBelowOne = () => 1 - Number.EPSILON
  t.same(
    [0, 1, 2, 3, 4, 5, 10].map((attempt) => backoffDelay(attempt, policy, justBelowOne)),
    [99, 199, 399, 799, 999, 999, 999],
  )
})

t.test('full jitter: the delay is the random draw times the ceiling', async (t) => {
  t.equal(backoffDelay(0, policy, () => 0), 0)
  t.equal(backoffDelay(2, policy, () => 0.5), 200)
  t.equal(backoffDelay(3, policy, () => 0.25), 200)
  t.equal(backoffDelay(9, policy, () => 0.5), 500)
})

t.test('bounded whatever the attempt or the random source returns', async (t) => {
  for (const attempt of [-3, 0, 1, 30, 1024, Number.MAX_SAFE_INTEGER]) {
    for (const draw of [-1, 0, 0.3, 0.999, 1, 7]) {
      const delay = backoffDelay(attempt, policy, () => draw)
      t.ok(delay >= 0 && delay <= policy.maxMs, `attempt ${attempt}, draw ${draw}: ${delay}`)
    }
  }
})

t.test('jittered: draws spread over the window instead of landing together', async (t) => {
  const draws = [0.1, 0.4, 0.7, 0.95]
  const delays = draws.map((draw) => backoffDelay(4, policy, () => draw))
  t.same(delays, [100, 400, 700, 950])
  t.equal(new Set(delays).size, draws.length)
})

t.test('defaults: Math.random within the default policy', async (t) => {
  for (let i = 0; i < 50; i++) {
    const delay = backoffDelay(20)
    t.ok(delay >= 0 && delay < DEFAULT_BACKOFF.maxMs)
  }
  t.ok(backoffDelay(0) < DEFAULT_BACKOFF.baseMs)
})
