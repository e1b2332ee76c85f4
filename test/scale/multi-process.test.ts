import t from 'tap'
import { randomUUID } from 'node:crypto'
import { signToken } from '../helpers/app.ts'
import { createFakeUpstream, textSteps } from '../helpers/fake-upstream.ts'
import { useRedis } from '../helpers/redis.ts'
import { bearer, connect, type Frame } from '../helpers/ws-client.ts'
import { sharedEnv, startInstance, TEST_LEASE_MS } from './instance.ts'

/** RUN_LEASE_MS of the instances: a dead instance's run ends within this + 2 s. */
const LEASE_MS = TEST_LEASE_MS

const words = (count: number) => Array.from({ length: count }, (_, i) => ` w${i}`)
const isResumed = (frame: Frame) => frame.type === 'status' && frame.content === 'resumed'

t.test('two instances in separate processes, sharing one Redis', async (t) => {
  const redis = await useRedis(t)
  if (!redis) return
  const upstream = await createFakeUpstream(() => ({ steps: textSteps(words(60), { delayMs: 20 }) }))
  t.teardown(() => upstream.close())
  const env = sharedEnv(redis, upstream.baseURL)
  const [a, b] = await Promise.all([startInstance(t, env), startInstance(t, env)])
  const token = signToken(`user-${randomUUID()}`)

  t.test('a client that moves from A to B mid-run gets every event exactly once', async (t) => {
    const onA = await connect(t, a.wsUrl, bearer(token))
    onA.send({ type: 'chat', content: 'a long story please' })
    await upstream.nextRequest()
    await onA.next((frame) => frame.type === 'token' && frame.seq! >= 10)
    onA.socket.terminate()
    await onA.closed
    const before = onA.frames.filter((frame) => frame.seq !== undefined)
    const onB = await connect(t, b.wsUrl, bearer(token))
    onB.send({ type: 'resume', session_id: before[0]!.session_id, last_seq: before.at(-1)!.seq })
    const resumed = await onB.next(isResumed)
    t.equal(typeof resumed.metadata?.active_run, 'string', 'resumed mid-run: the run goes on, on A')
    await onB.nextOfType('complete')
    const frames = [...before, ...onB.frames.filter((frame) => frame.seq !== undefined)]
    t.same(
      frames.map((frame) => frame.seq),
      frames.map((_, i) => i + 1),
      'seq contiguous: every event once',
    )
    const complete = frames.at(-1)!
    t.equal(complete.content, words(60).join(''), 'the whole text')
    t.equal(frames.filter((frame) => frame.type === 'token').map((frame) => frame.content).join(''), complete.content, 'text intact')
  })

  t.test('cancel sent to B closes the upstream request of the run on A within 200 ms', async (t) => {
    upstream.script(() => ({ steps: [{ text: 'Hel' }, { text: 'lo' }, { stall: true }] }))
    const onA = await connect(t, a.wsUrl, bearer(token))
    onA.send({ type: 'chat', session_id: `cancel-${randomUUID()}`, content: 'hi' })
    const request = await upstream.nextRequest()
    const sessionId = (await onA.next((frame) => frame.type === 'token' && String(frame.content).endsWith('lo'))).session_id
    const onB = await connect(t, b.wsUrl, bearer(token))
    const sent = performance.now()
    onB.send({ type: 'cancel', session_id: sessionId })
    await request.closed
    const took = request.closedAt! - sent
    t.ok(request.closedByClient, 'A closed it')
    t.ok(took < 200, `within 200 ms (${Math.round(took)} ms)`)
    t.match(await onA.nextOfType('complete'), { content: 'Hello', metadata: { finish_reason: 'cancelled' } })
  })

  t.test('kill -9 of A mid-run: B ends the run as interrupted within the lease + 2 s; B keeps serving', async (t) => {
    upstream.script(() => ({ steps: [{ text: 'Half' }, { text: ' a' }, { stall: true }] }))
    const sessionId = `killed-${randomUUID()}`
    const onA = await connect(t, a.wsUrl, bearer(token))
    onA.send({ type: 'chat', session_id: sessionId, content: 'hi', id: 'q-killed' })
    await upstream.nextRequest()
    await onA.next((frame) => frame.type === 'token' && String(frame.content).endsWith(' a'))
    const lastSeq = onA.frames.at(-1)!.seq!
    await a.kill('SIGKILL')
    const killed = performance.now()

    const onB = await connect(t, b.wsUrl, bearer(token))
    onB.send({ type: 'resume', session_id: sessionId, last_seq: lastSeq })
    t.equal(typeof (await onB.next(isResumed)).metadata?.active_run, 'string', 'the dead run still holds the session')
    const complete = await onB.nextOfType('complete', LEASE_MS + 5000)
    const took = performance.now() - killed
    t.ok(took < LEASE_MS + 2000, `complete within the lease + 2 s (${Math.round(took)} ms)`)
    t.match(complete, { seq: lastSeq + 1, content: 'Half a', metadata: { finish_reason: 'interrupted', request_id: 'q-killed' } })

    upstream.script(() => ({ steps: textSteps('Still here.') }))
    onB.send({ type: 'chat', session_id: sessionId, content: 'are you there?' })
    t.match(await onB.nextOfType('complete'), { content: 'Still here.', metadata: { finish_reason: 'stop' } }, 'the session is free again')
    onB.send({ type: 'chat', content: 'and a new one' })
    t.match(await onB.nextOfType('complete'), { metadata: { finish_reason: 'stop' } }, 'new chats work')
  })
})
