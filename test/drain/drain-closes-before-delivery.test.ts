// Regression: a drain closed the sockets (1012) as soon as its runs had *logged* their final
// events, before a log tail that lags (a loaded Redis, an instance busy with many sockets) had
// *delivered* them: a client lost its run's `complete`. Seen on CI as test/drain/drain-redis
// ending a client's frames at `status:cancelled`. Here the tail lags by design.
import t from 'tap'
import { createMemoryBackend } from '../../src/store/memory/index.ts'
import type { Backend } from '../../src/store/types.ts'
import { textSteps } from '../helpers/fake-upstream.ts'
import { startWithUpstream } from '../runs/helpers.ts'

const TAIL_LAG_MS = 300

/** A memory backend whose log tails hand every event over TAIL_LAG_MS late (in order). */
function laggingBackend(): Backend {
  const backend = createMemoryBackend({ ttlSeconds: 60, maxEvents: 1000 })
  const subscribe = backend.events.subscribe.bind(backend.events)
  backend.events.subscribe = (ref, afterSeq, listener) =>
    subscribe(ref, afterSeq, {
      event: (event) => void setTimeout(() => listener.event(event), TAIL_LAG_MS),
      end: (reason) => void setTimeout(() => listener.end(reason), TAIL_LAG_MS),
    })
  return backend
}

t.test('drain-closes-before-delivery: every client gets its run\'s complete before the 1012 close, even from a lagging tail', async (t) => {
  const backend = laggingBackend()
  t.teardown(() => backend.close())
  const { app, client } = await startWithUpstream(t, () => ({ steps: textSteps(Array.from({ length: 200 }, (_, i) => `w${i} `), { delayMs: 10 }) }), { SHUTDOWN_GRACE_MS: 100 }, { backend })
  const alice = await client()
  alice.send({ type: 'chat', content: 'talk for a while' })
  await alice.nextOfType('token', 5000)
  await app.drain()
  t.match(await alice.closed, { code: 1012 })
  t.match(alice.frames.at(-1), { type: 'complete', metadata: { finish_reason: 'cancelled', reason: 'shutdown' } }, 'the complete came before the close')
})
