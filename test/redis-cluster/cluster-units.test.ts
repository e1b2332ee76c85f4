import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { ClusterStreamTail } from '../../src/store/redis/cluster-tail.ts'
import { closeRedis, openCluster, whenReady } from '../../src/store/redis/connections.ts'
import type { Backend, LoggedEvent, LogListener, SessionRef } from '../../src/store/types.ts'
import { redisBackend } from '../helpers/redis.ts'
import { useRedisCluster, type TestCluster } from '../helpers/redis-cluster.ts'

const silent = { info() {}, warn() {}, error() {}, debug() {} }
const RUN = 'run-1'

/** Collects what a listener gets; `until(n)` waits (bounded) for the n-th event. */
function collector() {
  const seqs: number[] = []
  const listener: LogListener = { event: (event: LoggedEvent) => void seqs.push(event.seq), end: () => {} }
  return {
    seqs,
    listener,
    async until(count: number): Promise<number[]> {
      for (let i = 0; seqs.length < count; i++) {
        if (i > 300) throw new Error(`waited for ${count} events, got ${seqs.join()}`)
        await sleep(10)
      }
      return seqs
    },
  }
}

/** A session of `backend` with a run going: `append` writes through the store's fence (and rings the stream). */
async function session(backend: Backend, id: string) {
  const opened = await backend.sessions.open('alice', id, 1000)
  if (opened.kind !== 'open') throw new Error('too many')
  const ref: SessionRef = { owner: 'alice', id, gen: opened.session.gen }
  await backend.sessions.beginRun(ref, { runId: RUN, instanceId: 'i', leaseMs: 60_000, input: { kind: 'message', message: { role: 'user', content: 'hi' } }, maxMessages: 10 })
  return {
    ref,
    append: async (text: string) => {
      const logged = await backend.sessions.append(ref, RUN, { type: 'token', session_id: id, content: text, metadata: { run_id: RUN } })
      if (!logged) throw new Error('fenced')
      return logged
    },
  }
}

const backendOn = (t: Parameters<typeof redisBackend>[0], cluster: TestCluster) =>
  redisBackend(t, { url: cluster.url, prefix: cluster.prefix }, { cluster: [cluster.seed] })

t.test('on a cluster: a stream is not read while any subscription on it is paused', async (t) => {
  const cluster = await useRedisCluster(t)
  if (!cluster) return
  const writer = await backendOn(t, cluster)
  const reader = await backendOn(t, cluster)
  const s = await session(writer, 'paused')
  const first = collector()
  const second = collector()
  const one = await reader.events.subscribe(s.ref, 0, first.listener)
  const two = await reader.events.subscribe(s.ref, 0, second.listener)
  await s.append('a')
  t.same(await first.until(1), [1])
  t.same(await second.until(1), [1])

  one.pause()
  two.pause()
  await s.append('b')
  await sleep(150)
  t.same([first.seqs, second.seqs], [[1], [1]], 'both paused: the ring is not read')
  one.resume()
  await s.append('c')
  await sleep(150)
  t.same([first.seqs, second.seqs], [[1], [1]], 'one still paused: the stream stays unread for both')
  two.resume()
  t.same(await first.until(3), [1, 2, 3], 'the last resume reads the stream')
  t.same(await second.until(3), [1, 2, 3])
  one.close()
  two.close()
})

t.test('on a cluster: pause and resume of a stream the tail does not hold, or of an unpaused one, do nothing', async (t) => {
  const cluster = await useRedisCluster(t)
  if (!cluster) return
  const target = { url: cluster.url, cluster: [cluster.seed] }
  const commands = openCluster(target, 'units-commands', silent)
  t.teardown(() => closeRedis(commands))
  const tail = new ClusterStreamTail({ subscriber: openCluster(target, 'units-tail', silent, { shardedSubscribers: true }), commands, log: silent, sweepMs: 50 })
  t.teardown(() => tail.close())
  t.equal(await whenReady(commands, 5000), true)

  const key = `${cluster.prefix}{units}:events`
  tail.pause(key)
  tail.resume(key)
  tail.resume(key)
  const got = collector()
  t.equal(tail.add(key, 0, got.listener), 0, 'tailed from the start')
  await cluster.cluster.xadd(key, '1-0', 'f', 'one')
  t.same(await got.until(1), [1], 'the earlier pause of an untailed stream left nothing paused')

  tail.resume(key)
  await cluster.cluster.xadd(key, '2-0', 'f', 'two')
  t.same(await got.until(2), [1, 2], 'resuming an unpaused stream changes nothing')
  await sleep(150)
  t.same(got.seqs, [1, 2], 'each entry once')

  tail.pause(key)
  await cluster.cluster.xadd(key, '3-0', 'f', 'three')
  await sleep(150)
  t.same(got.seqs, [1, 2], 'paused: not even the sweep reads it')
  tail.resume(key)
  t.same(await got.until(3), [1, 2, 3], 'resumed: read at once')
  tail.remove(key, got.listener)
  tail.remove(key, got.listener)
  tail.resume('never-tailed')
  t.pass('removing from, or resuming, a stream no longer tailed does nothing')
})

t.test('on a cluster: a backlog longer than one read is read in full batches, in order', async (t) => {
  const cluster = await useRedisCluster(t)
  if (!cluster) return
  const target = { url: cluster.url, cluster: [cluster.seed] }
  const commands = openCluster(target, 'units-commands', silent)
  t.teardown(() => closeRedis(commands))
  const tail = new ClusterStreamTail({ subscriber: openCluster(target, 'units-tail', silent, { shardedSubscribers: true }), commands, log: silent })
  t.teardown(() => tail.close())
  t.equal(await whenReady(commands, 5000), true)
  const key = `${cluster.prefix}{batches}:events`
  const count = 1200
  const pipeline = cluster.cluster.pipeline()
  for (let seq = 1; seq <= count; seq++) pipeline.xadd(key, `${seq}-0`, 'f', `frame ${seq}`)
  await pipeline.exec()
  const got = collector()
  tail.add(key, 0, got.listener)
  const seqs = await got.until(count)
  t.equal(seqs.length, count)
  t.ok(seqs.every((seq, i) => seq === i + 1), 'every entry once, in order')
  tail.remove(key, got.listener)
})
