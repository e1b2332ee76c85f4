/**
 * Defect: when the Redis of a running run restarted empty, the run's lease renewal found the
 * run gone and stopped it silently (as if another instance had ended it): nothing more was
 * logged, nothing was sent, and its watcher waited forever. The contract (protocol.md §5): a
 * run whose store lost its state ends for its local watchers with `error` `internal` then
 * `complete` `finish_reason: "error"`, or their sockets close 1011; nobody waits forever.
 */
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { startApp, signToken } from '../../helpers/app.ts'
import { createFakeUpstream, textSteps } from '../../helpers/fake-upstream.ts'
import { startPrivateRedis } from '../../helpers/redis.ts'
import { bearer, connect } from '../../helpers/ws-client.ts'
import { words } from './pair.ts'

/** Generous: the watcher must hear of it well within this, whatever the machine's load. */
const DEADLINE_MS = 10_000

t.test('a run whose Redis restarted empty leaves its reader waiting forever', async (t) => {
  const redis = await startPrivateRedis(t)
  if (!redis) return
  const upstream = await createFakeUpstream(() => ({ steps: textSteps(words(400), { delayMs: 50 }) }))
  t.teardown(() => upstream.close())
  const app = await startApp(t, {
    REDIS_URL: redis.url,
    modelProvider: 'openai',
    OPENAI_BASE_URL: upstream.baseURL,
    OPENAI_API_KEY: 'test',
    RUN_LEASE_MS: 1000,
  })
  const client = await connect(t, app.wsUrl, bearer(signToken(`user-${randomUUID()}`)))
  client.send({ type: 'chat', session_id: 'amnesia', content: 'a long story' })
  await client.next((frame) => frame.type === 'token' && frame.seq! >= 4)

  await redis.stop()
  await sleep(200)
  await redis.start()
  const restarted = client.frames.length

  // Either ending counts: a complete, or the socket closed (then next() stops waiting at once).
  const complete = await client.next((frame) => frame.type === 'complete', DEADLINE_MS).catch(() => undefined)
  const closed = complete ? undefined : await Promise.race([client.closed, sleep(100).then(() => undefined)])
  t.ok(complete ?? closed, `the watcher is not left waiting (within ${DEADLINE_MS} ms)`)
  if (closed) {
    t.equal(closed.code, 1011, 'its socket is closed 1011')
  } else if (complete) {
    const ending = client.frames.slice(restarted).filter((frame) => frame.type === 'error' || frame.type === 'complete')
    t.match(ending[0], { type: 'error', metadata: { code: 'internal' } }, 'error internal first')
    t.match(complete, { metadata: { finish_reason: 'error' } }, 'then complete finish_reason error')
  }
})
