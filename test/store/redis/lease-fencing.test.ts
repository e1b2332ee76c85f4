/**
 * Defect: appends to a session's log were not fenced by the run's lease. An instance that
 * stalled past its run's lease (here: SIGSTOP) had its run ended as `interrupted` by another
 * instance, and on waking up went on logging that run's tokens (until its next lease renewal
 * noticed), after the `complete` and in the middle of the next run. The contract (protocol.md
 * §5, 1.1): once a run is ended that way, nothing more of it is ever logged.
 */
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { startApp, signToken } from '../../helpers/app.ts'
import { createFakeUpstream, textSteps } from '../../helpers/fake-upstream.ts'
import { useRedis } from '../../helpers/redis.ts'
import { bearer, connect, type Frame } from '../../helpers/ws-client.ts'
import { sharedEnv, startInstance } from '../../scale/instance.ts'
import { words } from './pair.ts'

const LEASE_MS = 1000
const isResumed = (frame: Frame) => frame.type === 'status' && frame.content === 'resumed'

t.test('appends are not fenced by the run lease', async (t) => {
  const redis = await useRedis(t)
  if (!redis) return
  // The old run streams steadily, so that A holds unread tokens when it wakes up.
  const upstream = await createFakeUpstream(() => ({ steps: textSteps(words(300), { delayMs: 20 }) }))
  t.teardown(() => upstream.close())
  const env = { ...sharedEnv(redis, upstream.baseURL), RUN_LEASE_MS: String(LEASE_MS) }
  const a = await startInstance(t, env)
  const b = await startApp(t, {
    REDIS_URL: redis.url,
    REDIS_KEY_PREFIX: redis.prefix,
    modelProvider: 'openai',
    OPENAI_BASE_URL: upstream.baseURL,
    OPENAI_API_KEY: 'test',
    RUN_LEASE_MS: LEASE_MS,
  })
  const token = signToken(`user-${randomUUID()}`)
  const sessionId = `fenced-${randomUUID()}`

  const onA = await connect(t, a.wsUrl, bearer(token))
  onA.send({ type: 'chat', session_id: sessionId, content: 'a long story' })
  await upstream.nextRequest()
  const oldRun = (await onA.next((frame) => frame.type === 'token' && frame.seq! >= 5)).metadata?.run_id as string
  const watcher = await connect(t, b.wsUrl, bearer(token))
  watcher.send({ type: 'resume', session_id: sessionId, last_seq: 0 })
  await watcher.next(isResumed)

  a.process.kill('SIGSTOP')
  let interrupted: Frame
  try {
    interrupted = await watcher.next((frame) => frame.type === 'complete', LEASE_MS + 8000)
    t.match(interrupted, { metadata: { run_id: oldRun, finish_reason: 'interrupted' } }, "B's sweeper ends the stalled run as interrupted")
    await sleep(3000 - LEASE_MS)
    // A new run on B, under way when A wakes up.
    upstream.script(() => ({ steps: textSteps(words(60).map((word) => `${word}-new`), { delayMs: 20 }) }))
    watcher.send({ type: 'chat', session_id: sessionId, content: 'something else', id: 'new-run' })
    await watcher.next((frame) => frame.type === 'token' && frame.metadata?.run_id !== oldRun)
  } finally {
    a.process.kill('SIGCONT')
  }
  const newComplete = await watcher.next((frame) => frame.type === 'complete', 15_000)
  t.match(newComplete, { metadata: { request_id: 'new-run', finish_reason: 'stop' } }, 'the new run ends')
  await sleep(1500)

  const reader = await connect(t, b.wsUrl, bearer(token))
  reader.send({ type: 'resume', session_id: sessionId, last_seq: 0 })
  const resumed = await reader.next(isResumed)
  const log = reader.frames.filter((frame) => frame.seq !== undefined && frame.seq <= resumed.metadata?.last_seq)
  const end = log.findIndex((frame) => frame.type === 'complete' && frame.metadata?.finish_reason === 'interrupted')
  t.ok(end >= 0, 'the log holds the interrupted complete')
  const afterEnd = log.slice(end + 1)
  t.same(
    afterEnd.filter((frame) => frame.metadata?.run_id === oldRun).map((frame) => `${frame.seq}:${frame.type}:${frame.content ?? ''}`),
    [],
    'nothing of the old run is logged after its interrupted complete',
  )
  const newRun = newComplete.metadata?.run_id as string
  t.match(afterEnd[0], { type: 'status', content: 'thinking', metadata: { run_id: newRun } }, 'the new run starts right after it')
  t.same(
    afterEnd.filter((frame) => frame.metadata?.run_id !== newRun).map((frame) => `${frame.seq}:${frame.type}:${frame.content ?? ''}`),
    [],
    "every frame after the new status:thinking has the new run's id (no interleaving)",
  )
  t.equal(afterEnd.at(-1)?.type, 'complete', 'and its complete is the last event logged')
})
