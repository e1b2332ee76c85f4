// on_busy across instances (protocol.md §2, 1.1): the interrupting frame reaches the instance
// that does not hold the run; a queued run starts on whichever instance is alive when the run
// before it ends, also when the instance that held it was killed.
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { startApp, signToken } from '../../helpers/app.ts'
import { createFakeUpstream, textSteps } from '../../helpers/fake-upstream.ts'
import { useRedis } from '../../helpers/redis.ts'
import { bearer, connect, type Frame } from '../../helpers/ws-client.ts'
import { sharedEnv, startInstance } from '../../scale/instance.ts'
import { pair, words } from './pair.ts'

const sequencedRuns = (frames: Frame[]) =>
  frames.filter((frame) => frame.seq !== undefined && frame.content !== 'queued').map((frame) => frame.metadata?.run_id as string)

t.test('an interrupt sent to the other instance supersedes the run; the two never interleave', async (t) => {
  const p = await pair(t)
  if (!p) return
  p.upstream.script(() => ({ steps: textSteps(words(400), { delayMs: 10 }) }))
  const token = signToken(p.user('alice'))
  const onA = await connect(t, p.a.wsUrl, bearer(token))
  onA.send({ type: 'chat', session_id: 'i', content: 'long', id: 'first' })
  const first = await p.upstream.nextRequest()
  await onA.next((frame) => frame.type === 'token')
  p.upstream.script(() => ({ steps: textSteps('redirected') }))
  const onB = await connect(t, p.b.wsUrl, bearer(token))
  onB.send({ type: 'chat', session_id: 'i', content: 'stop, do this', id: 'second', on_busy: 'interrupt' })
  for (const client of [onA, onB]) {
    const superseded = await client.next((frame) => frame.type === 'complete' && frame.metadata?.request_id === 'first')
    t.match(superseded.metadata, { finish_reason: 'cancelled', reason: 'superseded' })
  }
  await first.closed
  t.ok(first.closedByClient, 'the superseded upstream request is closed')
  const answers = await Promise.all([onA, onB].map((client) => client.next((frame) => frame.type === 'complete' && frame.metadata?.request_id === 'second')))
  for (const answer of answers) t.match(answer, { content: 'redirected', metadata: { finish_reason: 'stop' } })
  const runs = sequencedRuns(onA.frames)
  const [firstRun, secondRun] = [...new Set(runs)] as [string, string]
  t.equal(new Set(runs).size, 2)
  t.ok(runs.lastIndexOf(firstRun) < runs.indexOf(secondRun), 'all of the first run, then all of the second')
})

t.test('a queued run starts on the instance that is alive when the instance holding the run before it was killed', async (t) => {
  const redis = await useRedis(t)
  if (!redis) return
  const upstream = await createFakeUpstream(() => ({ steps: textSteps(words(600), { delayMs: 20 }) }))
  t.teardown(() => upstream.close())
  const leaseMs = 1000
  const a = await startInstance(t, { ...sharedEnv(redis, upstream.baseURL), RUN_LEASE_MS: String(leaseMs) })
  const b = await startApp(t, {
    REDIS_URL: redis.url,
    REDIS_KEY_PREFIX: redis.prefix,
    modelProvider: 'openai',
    OPENAI_BASE_URL: upstream.baseURL,
    OPENAI_API_KEY: 'test',
    RUN_LEASE_MS: leaseMs,
  })
  const token = signToken(`user-${randomUUID()}`)
  const onA = await connect(t, a.wsUrl, bearer(token))
  onA.send({ type: 'chat', session_id: 'k', content: 'long', id: 'held-by-a' })
  await upstream.nextRequest()
  await onA.next((frame) => frame.type === 'token')
  upstream.script(() => ({ steps: textSteps('picked up by B') }))
  const onB = await connect(t, b.wsUrl, bearer(token))
  onB.send({ type: 'chat', session_id: 'k', content: 'next', id: 'queued', on_busy: 'enqueue' })
  t.match(await onB.next((frame) => frame.content === 'queued'), { metadata: { position: 1, request_id: 'queued' } })
  await a.kill('SIGKILL')
  const interrupted = await onB.next((frame) => frame.type === 'complete', leaseMs + 8000)
  t.match(interrupted.metadata, { request_id: 'held-by-a', finish_reason: 'interrupted' })
  const next = await onB.next((frame) => frame.type === 'complete' && frame.metadata?.request_id === 'queued', 10_000)
  t.match(next, { content: 'picked up by B', metadata: { finish_reason: 'stop' } })
  const thinking = onB.frames.find((frame) => frame.content === 'thinking' && frame.metadata?.request_id === 'queued')
  t.ok(thinking && thinking.seq! > interrupted.seq!, 'it started after the interrupted run ended')
})
