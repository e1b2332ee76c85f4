import t, { type Test } from 'tap'
import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Config } from '../../src/config.ts'
import { startApp, signToken } from '../helpers/app.ts'
import { createFakeUpstream, textSteps } from '../helpers/fake-upstream.ts'
import { redisBackend, useRedis } from '../helpers/redis.ts'
import type { SessionRecord, SessionRef } from '../../src/store/types.ts'

const refOf = (session: SessionRecord): SessionRef => ({ owner: session.owner, id: session.id, gen: session.gen })
import { bearer, connect, type Frame } from '../helpers/ws-client.ts'
import { pair as twoInstances, words } from '../store/redis/pair.ts'

/** Two instances on one Redis prefix (./../store/redis/pair.ts), for one user of this test only. */
async function pair(t: Test, config: Partial<Config> = {}) {
  const p = await twoInstances(t, config)
  return p && { ...p, user: p.user('user') }
}

/** The run's frames (seq'd ones) are contiguous, and its tokens add up to its complete. */
function checkRun(t: Test, frames: Frame[], firstSeq = 1): void {
  const sequenced = frames.filter((frame) => frame.seq !== undefined)
  t.same(
    sequenced.map((frame) => frame.seq),
    sequenced.map((_, i) => firstSeq + i),
    'every seq once, in order, none missing',
  )
  const complete = sequenced.at(-1)!
  t.equal(complete.type, 'complete')
  t.equal(sequenced.filter((frame) => frame.type === 'token').map((frame) => frame.content).join(''), complete.content, 'text intact')
}

t.test('a client that moves from A to B mid-run gets every event exactly once', async (t) => {
  const p = await pair(t)
  if (!p) return
  const token = signToken(p.user)
  const onA = await connect(t, p.a.wsUrl, bearer(token))
  onA.send({ type: 'chat', content: 'tell me a long story', id: 'q1' })
  await onA.next((frame) => frame.type === 'token' && frame.seq! >= 5)
  onA.close()
  await onA.closed
  const seen = onA.frames.filter((frame) => frame.seq !== undefined)
  const lastSeq = seen.at(-1)!.seq!

  const onB = await connect(t, p.b.wsUrl, bearer(token))
  onB.send({ type: 'resume', session_id: seen[0]!.session_id, last_seq: lastSeq })
  const resumed = await onB.next((frame) => frame.type === 'status' && frame.content === 'resumed')
  t.equal(typeof resumed.metadata?.active_run, 'string', 'the run is still going on A')
  await onB.nextOfType('complete')
  checkRun(t, [...seen, ...onB.frames])
  t.equal(p.upstream.requests.length, 1, 'one upstream request')
})

t.test('a chat retried on B with the same id attaches to the run on A', async (t) => {
  const p = await pair(t)
  if (!p) return
  const token = signToken(p.user)
  const onA = await connect(t, p.a.wsUrl, bearer(token))
  onA.send({ type: 'chat', session_id: 'retry', content: 'hi', id: 'q1' })
  await onA.next((frame) => frame.type === 'token' && frame.seq! >= 3)
  const onB = await connect(t, p.b.wsUrl, bearer(token))
  onB.send({ type: 'chat', session_id: 'retry', content: 'hi', id: 'q1' })
  await Promise.all([onA.nextOfType('complete'), onB.nextOfType('complete')])
  checkRun(t, onB.frames)
  t.same(onB.raw, onA.raw, 'the same bytes as A got')
  t.equal(p.upstream.requests.length, 1, 'never billed twice')
})

t.test('cancel sent to B aborts the run on A and closes its upstream request', async (t) => {
  const p = await pair(t)
  if (!p) return
  p.upstream.script(() => ({ steps: [{ text: 'Hel' }, { text: 'lo' }, { stall: true }] }))
  const token = signToken(p.user)
  const onA = await connect(t, p.a.wsUrl, bearer(token))
  onA.send({ type: 'chat', session_id: 'cancel-me', content: 'hi' })
  const request = await p.upstream.nextRequest()
  await onA.next((frame) => frame.type === 'token' && String(frame.content).endsWith('lo'))
  const onB = await connect(t, p.b.wsUrl, bearer(token))
  const sent = performance.now()
  onB.send({ type: 'cancel', session_id: 'cancel-me' })
  await request.closed
  t.ok(request.closedByClient, 'A closed the upstream request')
  t.ok(request.closedAt! - sent < 200, `within 200 ms (${Math.round(request.closedAt! - sent)} ms)`)
  const complete = await onA.nextOfType('complete')
  t.match(complete, { content: 'Hello', metadata: { finish_reason: 'cancelled' } })
})

t.test('a client that reads complete and chats at once on the other instance is never busy', async (t) => {
  const redis = await useRedis(t)
  if (!redis) return
  const upstream = await createFakeUpstream(() => ({ steps: textSteps(['ok']) }))
  t.teardown(() => upstream.close())
  // The store logs `complete` and frees the session in one step (finishRun): nothing can lag behind it.
  const config: Partial<Config> = { modelProvider: 'openai', OPENAI_BASE_URL: upstream.baseURL, OPENAI_API_KEY: 'test' }
  const apps = [
    await startApp(t, config, { backend: await redisBackend(t, redis) }),
    await startApp(t, config, { backend: await redisBackend(t, redis) }),
  ]
  const token = signToken(`user-${randomUUID()}`)
  const clients = [await connect(t, apps[0]!.wsUrl, bearer(token)), await connect(t, apps[1]!.wsUrl, bearer(token))]
  for (let i = 0; i < 6; i++) {
    const client = clients[i % 2]!
    client.send({ type: 'chat', session_id: 'pingpong', content: `go ${i}`, id: `c${i}` })
    const answer = await client.next((frame) => ['complete', 'error'].includes(frame.type) && frame.metadata?.request_id === `c${i}`)
    t.equal(answer.type, 'complete', `chat ${i} started at once`)
  }
})

t.test('runs of a dead instance end as interrupted, by the first instance that notices', async (t) => {
  const p = await pair(t)
  if (!p) return
  const token = signToken(p.user)
  // A "dead instance": a run recorded in Redis that nobody executes or renews.
  const ghost = await redisBackend(t, p.redis)
  const refs = new Map<string, SessionRef>()
  const startGhostRun = async (sessionId: string, leaseMs: number) => {
    const opened = await ghost.sessions.open(p.user, sessionId, 100)
    if (opened.kind !== 'open') throw new Error('could not open')
    const ref = { owner: p.user, id: sessionId, gen: opened.session.gen }
    refs.set(sessionId, ref)
    const runId = `ghost-${sessionId}`
    await ghost.sessions.beginRun(ref, { runId, requestId: 'q-ghost', instanceId: 'ghost', leaseMs, input: { kind: 'message', message: { role: 'user', content: 'hi' } }, maxMessages: 50 })
    await ghost.sessions.append(ref, runId, { type: 'status', session_id: sessionId, content: 'thinking', metadata: { run_id: runId } })
    for (const text of ['Hel', 'lo']) await ghost.sessions.append(ref, runId, { type: 'token', session_id: sessionId, content: text, metadata: { run_id: runId } })
  }

  t.test('on resume, once the lease has expired', async (t) => {
    await startGhostRun('expired', 100)
    await sleep(150)
    const client = await connect(t, p.a.wsUrl, bearer(token))
    client.send({ type: 'resume', session_id: 'expired', last_seq: 0 })
    const resumed = await client.next((frame) => frame.type === 'status' && frame.content === 'resumed')
    t.same(resumed.metadata, { last_seq: 3, active_run: null, pending: [] })
    const complete = await client.nextOfType('complete')
    t.match(complete, { seq: 4, content: 'Hello', metadata: { run_id: 'ghost-expired', finish_reason: 'interrupted', request_id: 'q-ghost' } })
    const history = await ghost.sessions.get(p.user, 'expired')
    t.same(history?.messages.at(-1), { role: 'assistant', content: 'Hello' }, 'what the user saw stays in the history')
  })

  t.test('while a client watches: when the lease runs out', async (t) => {
    await startGhostRun('watched', 1500)
    const started = performance.now()
    const onA = await connect(t, p.a.wsUrl, bearer(token))
    const onB = await connect(t, p.b.wsUrl, bearer(token))
    for (const client of [onA, onB]) client.send({ type: 'resume', session_id: 'watched', last_seq: 3 })
    for (const client of [onA, onB]) {
      const resumed = await client.next((frame) => frame.type === 'status' && frame.content === 'resumed')
      t.equal(resumed.metadata?.active_run, 'ghost-watched')
    }
    const completes = await Promise.all([onA, onB].map((client) => client.nextOfType('complete', 5000)))
    t.ok(performance.now() - started < 1500 + 2000, 'within lease + 2 s')
    for (const complete of completes) t.match(complete, { seq: 4, metadata: { finish_reason: 'interrupted' } })
    await sleep(1200)
    t.equal(onA.frames.filter((frame) => frame.type === 'complete').length, 1, 'ended once, though two instances watched')
  })

  t.test('on a new chat: the dead run ends, the new one starts', async (t) => {
    await startGhostRun('chat', 100)
    await sleep(150)
    p.upstream.script(() => ({ steps: textSteps(['fresh']) }))
    const client = await connect(t, p.b.wsUrl, bearer(token))
    client.send({ type: 'chat', session_id: 'chat', content: 'again' })
    const first = await client.next((frame) => frame.seq !== undefined)
    t.match(first, { seq: 5, type: 'status', content: 'thinking' }, 'the new run follows the interrupted one (seq 4)')
    t.match(await client.nextOfType('complete'), { content: 'fresh', metadata: { finish_reason: 'stop' } })
    const held = await ghost.events.read(refs.get('chat')!, 3)
    t.match(JSON.parse(held.events[0]!.frame), { type: 'complete', metadata: { finish_reason: 'interrupted' } })
  })
})

t.test('a run on A outlives a watcher that left B only by the grace, counted across instances', async (t) => {
  const p = await pair(t, { RESUME_GRACE_MS: 200 })
  if (!p) return
  p.upstream.script(() => ({ steps: [{ text: 'slow' }, { stall: true }] }))
  const token = signToken(p.user)
  const onA = await connect(t, p.a.wsUrl, bearer(token))
  onA.send({ type: 'chat', session_id: 'grace', content: 'hi' })
  const request = await p.upstream.nextRequest()
  await onA.nextOfType('token')
  const onB = await connect(t, p.b.wsUrl, bearer(token))
  onB.send({ type: 'resume', session_id: 'grace', last_seq: 2 })
  await onB.next((frame) => frame.type === 'status' && frame.content === 'resumed')
  onA.close()
  await sleep(600)
  t.equal(request.closedAt, undefined, 'B still watches: the run goes on')
  const left = performance.now()
  onB.close()
  await request.closed
  t.ok(request.closedByClient, 'nobody watches anywhere: aborted after the grace')
  t.ok(request.closedAt! - left >= 150, 'not before the grace')
})

t.test('a run ended elsewhere while its instance stalled stops at the next lease renewal, adding nothing', async (t) => {
  const p = await pair(t)
  if (!p) return
  p.upstream.script(() => ({ steps: [{ text: 'Hel' }, { stall: true }] }))
  const onA = await connect(t, p.a.wsUrl, bearer(signToken(p.user)))
  onA.send({ type: 'chat', session_id: 'stolen', content: 'hi' })
  const request = await p.upstream.nextRequest()
  const runId = (await onA.nextOfType('token')).metadata?.run_id as string
  // What an instance that found the lease expired does (here: without waiting for it).
  const other = await redisBackend(t, p.redis)
  const ref = refOf((await other.sessions.get(p.user, 'stolen'))!)
  const interrupted = await other.sessions.finishRun(ref, {
    runId,
    instanceId: 'other',
    leaseMs: 60_000,
    event: { type: 'complete', session_id: 'stolen', content: 'Hel', metadata: { run_id: runId, finish_reason: 'interrupted' } },
    messages: [],
    maxMessages: 50,
  })
  t.ok(interrupted)
  await request.closed
  t.ok(request.closedByClient, 'the upstream request is closed when the renewal finds the run gone')
  await sleep(200)
  const held = await other.events.read(ref, 0)
  t.equal(held.lastSeq, interrupted!.event.seq, 'nothing logged after the interruption (no cancelled, no second complete)')
  t.equal(onA.frames.filter((frame) => frame.type === 'complete').length, 1)
})
