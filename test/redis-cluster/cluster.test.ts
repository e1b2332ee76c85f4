import t, { type Test } from 'tap'
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import type { Config } from '../../src/config.ts'
import { checkStore } from '../../src/store/redis/readiness.ts'
import { sessionKeys } from '../../src/store/redis/keys.ts'
import { startApp, signToken, type StartedApp } from '../helpers/app.ts'
import { createFakeUpstream, textSteps, type FakeUpstream } from '../helpers/fake-upstream.ts'
import { useRedisCluster, type TestCluster } from '../helpers/redis-cluster.ts'
import { bearer, connect, type Frame } from '../helpers/ws-client.ts'

const words = (count: number) => Array.from({ length: count }, (_, i) => ` w${i}`)

interface Pair {
  a: StartedApp
  b: StartedApp
  upstream: FakeUpstream
  cluster: TestCluster
  user: string
}

/** Two gateway instances on the Redis Cluster (REDIS_CLUSTER=true), one scriptable upstream. */
async function pair(t: Test, config: Partial<Config> = {}): Promise<Pair | undefined> {
  const cluster = await useRedisCluster(t)
  if (!cluster) return undefined
  const upstream = await createFakeUpstream(() => ({ steps: textSteps(words(40), { delayMs: 15 }) }))
  t.teardown(() => upstream.close())
  const shared: Partial<Config> = {
    REDIS_URL: cluster.url,
    REDIS_CLUSTER: 'true',
    redisCluster: [cluster.seed],
    REDIS_KEY_PREFIX: cluster.prefix,
    modelProvider: 'openai',
    OPENAI_BASE_URL: upstream.baseURL,
    OPENAI_API_KEY: 'test',
    ...config,
  }
  const [a, b] = await Promise.all([startApp(t, shared), startApp(t, shared)])
  return { a: a!, b: b!, upstream, cluster, user: `user-${randomUUID()}` }
}

/** Seq'd frames are contiguous from `firstSeq`: no gap, no duplicate. */
function contiguous(frames: Frame[], firstSeq = 1): boolean {
  const seqs = frames.filter((frame) => frame.seq !== undefined).map((frame) => frame.seq)
  return seqs.every((seq, i) => seq === firstSeq + i)
}

t.test('on a cluster: a client that moves from A to B mid-run gets every event exactly once', async (t) => {
  const p = await pair(t)
  if (!p) return
  const token = signToken(p.user)
  const onA = await connect(t, p.a.wsUrl, bearer(token))
  onA.send({ type: 'chat', content: 'tell me a long story', id: 'q1' })
  await onA.next((frame) => frame.type === 'token' && frame.seq! >= 5)
  onA.close()
  await onA.closed
  const seen = onA.frames.filter((frame) => frame.seq !== undefined)
  const onB = await connect(t, p.b.wsUrl, bearer(token))
  onB.send({ type: 'resume', session_id: seen[0]!.session_id, last_seq: seen.at(-1)!.seq })
  await onB.next((frame) => frame.type === 'status' && frame.content === 'resumed')
  const complete = await onB.nextOfType('complete')
  const all = [...seen, ...onB.frames]
  t.ok(contiguous(all), 'every seq once, in order')
  t.equal(all.filter((frame) => frame.type === 'token').map((frame) => frame.content).join(''), complete.content, 'text intact')
})

t.test('on a cluster: cancel sent to B (sharded pub/sub) stops the run on A', async (t) => {
  const p = await pair(t)
  if (!p) return
  p.upstream.script(() => ({ steps: [{ text: 'Hel' }, { text: 'lo' }, { stall: true }] }))
  const token = signToken(p.user)
  const onA = await connect(t, p.a.wsUrl, bearer(token))
  onA.send({ type: 'chat', session_id: 'cancel-me', content: 'hi' })
  const request = await p.upstream.nextRequest()
  await onA.next((frame) => frame.type === 'token' && String(frame.content).endsWith('lo'))
  const onB = await connect(t, p.b.wsUrl, bearer(token))
  onB.send({ type: 'cancel', session_id: 'cancel-me' })
  await request.closed
  t.ok(request.closedByClient, 'A closed the upstream request')
  t.match(await onA.nextOfType('complete'), { content: 'Hello', metadata: { finish_reason: 'cancelled' } })
})

t.test('on a cluster: many sessions over every master, read live', async (t) => {
  const p = await pair(t, { LOG_LEVEL: 'error' })
  if (!p) return
  p.upstream.script(() => ({ steps: textSteps(words(10), { delayMs: 5 }) }))
  const token = signToken(p.user)
  const onA = await connect(t, p.a.wsUrl, bearer(token))
  const ids = Array.from({ length: 12 }, (_, i) => `s${i}`)
  for (const id of ids) onA.send({ type: 'chat', session_id: id, content: 'hi' })
  const slots = new Set(await Promise.all(ids.map((id) => p.cluster.cluster.cluster('KEYSLOT', `{${p.user}:${id}}`))))
  t.ok(slots.size > 1, 'the sessions span hash slots')
  const deadline = Date.now() + 15_000
  const done = (frames: Frame[]) => ids.every((id) => frames.some((frame) => frame.type === 'complete' && frame.session_id === id))
  // As a client does with a retryable refusal: while the cluster client (re)opens a node's
  // connection after a topology change it fails fast ("Connection is closed"), answered `internal`.
  const retried = new Set<Frame>()
  while (!done(onA.frames) && Date.now() < deadline) {
    for (const frame of onA.frames) {
      if (frame.type !== 'error' || frame.seq !== undefined || !frame.metadata?.retryable || retried.has(frame)) continue
      retried.add(frame)
      onA.send({ type: 'chat', session_id: frame.session_id, content: 'hi' })
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  t.ok(retried.size <= ids.length * 3, `${retried.size} retryable refusals retried`)
  const missing = ids.filter((id) => !onA.frames.some((frame) => frame.type === 'complete' && frame.session_id === id))
  t.same(missing, [], `A saw every run complete (${JSON.stringify(onA.frames.filter((frame) => missing.includes(frame.session_id as string) || !frame.session_id).slice(0, 4))})`)
  for (const id of ids) t.ok(contiguous(onA.frames.filter((frame) => frame.session_id === id)), `${id}: contiguous on A`)
})

t.test('readiness: a standalone client on a cluster node is refused, and says why', async (t) => {
  const cluster = await useRedisCluster(t)
  if (!cluster) return
  const standalone = new Redis(cluster.url, { maxRetriesPerRequest: 0 })
  t.teardown(() => standalone.disconnect())
  await t.rejects(checkStore(standalone, cluster.prefix), /REDIS_URL is a Redis Cluster node: set REDIS_CLUSTER=true/)
  await t.resolves(checkStore(cluster.cluster, cluster.prefix), 'the cluster client passes')
})

/**
 * A reader as a real client is one: resumes the session from the last seq it holds, and when the
 * gateway closes the socket (1011 while the store fails over) reconnects and resumes again,
 * until the run's complete; bounded by `deadline`.
 */
async function follow(t: Test, url: string, token: string, sessionId: string, fromSeq: number, deadline: number) {
  const frames: Frame[] = []
  const closes: number[] = []
  while (Date.now() < deadline) {
    const last = frames.at(-1)?.seq ?? fromSeq
    let client
    try {
      client = await connect(t, url, bearer(token))
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 200))
      continue
    }
    client.send({ type: 'resume', session_id: sessionId, last_seq: last })
    try {
      for (;;) {
        const frame = await client.next((f) => f.session_id === sessionId && (f.seq !== undefined || f.type === 'error'), Math.max(1, deadline - Date.now()))
        if (frame.type === 'error') break
        frames.push(frame)
        if (frame.type === 'complete') return { frames, closes }
      }
    } catch {
      // Closed by the gateway (or the deadline): reconnect and resume.
    }
    closes.push((await Promise.race([client.closed, new Promise<{ code: number }>((resolve) => setTimeout(resolve, 100, { code: 0 }))])).code)
    client.close()
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  return { frames, closes }
}

// Last: it kills a master (the teardown brings it back as a replica).
t.test('failover: kill the master of a running session; the run continues or ends interrupted, readers see no gap', async (t) => {
  const p = await pair(t, { RUN_LEASE_MS: 3000 })
  if (!p) return
  p.upstream.script(() => ({ steps: textSteps(words(150), { delayMs: 20 }) }))
  const token = signToken(p.user)
  const starter = await connect(t, p.a.wsUrl, bearer(token))
  starter.send({ type: 'chat', session_id: 'failover', content: 'a long one' })
  await starter.next((frame) => frame.type === 'token' && frame.seq! >= 3)
  const deadline = Date.now() + 40_000
  const readers = [follow(t, p.a.wsUrl, token, 'failover', 0, deadline), follow(t, p.b.wsUrl, token, 'failover', 0, deadline)]
  await starter.next((frame) => frame.type === 'token' && frame.seq! >= 15)
  const key = sessionKeys(p.cluster.prefix, { owner: p.user, id: 'failover', gen: 'x' }).meta
  const killedAt = Date.now()
  const { port } = await p.cluster.killMasterOf(key)
  t.pass(`killed the master on ${port}; its replica took over in ${Date.now() - killedAt} ms`)
  const [onA, onB] = await Promise.all(readers)
  for (const [name, reader] of [['A', onA!], ['B', onB!]] as const) {
    const end = reader.frames.at(-1)
    t.equal(end?.type, 'complete', `${name}: the run ended (${end?.metadata?.finish_reason}), reconnects: ${reader.closes.length} (codes ${reader.closes.join(',')})`)
    t.match(end?.metadata?.finish_reason, /^(stop|interrupted)$/, `${name}: finished or interrupted`)
    t.ok(contiguous(reader.frames), `${name}: every seq once, in order (${reader.frames.length} frames)`)
  }
  t.equal(onA!.frames.at(-1)?.seq, onB!.frames.at(-1)?.seq, 'both readers reached the same end')
  let ready = 0
  for (let i = 0; i < 100 && ready !== 200; i++) {
    ready = (await fetch(`${p.a.baseUrl}/health/ready`)).status
    if (ready !== 200) await new Promise((resolve) => setTimeout(resolve, 100))
  }
  t.equal(ready, 200, 'A ready again after the failover')
  const again = await connect(t, p.b.wsUrl, bearer(token))
  p.upstream.script(() => ({ steps: textSteps(words(3), { delayMs: 5 }) }))
  again.send({ type: 'chat', session_id: 'failover', content: 'again' })
  t.ok(await again.nextOfType('complete', 15_000), 'a new run on the promoted master completes')
})
