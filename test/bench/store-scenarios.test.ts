/**
 * The bench's Redis scenarios against the real Redis (127.0.0.1:6379) and Redis Cluster
 * (127.0.0.1:7001): the store probes, and quick runs of redis-fanout, redis-cycles and
 * cluster-fanout. Each test skips with the reason when its store is not reachable, and fails
 * instead under CI=true (the test helpers' rule).
 */
import t from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import type { BenchContext } from '../../bench/context.ts'
import { QUICK } from '../../bench/options.ts'
import { openCluster, openStandalone, type StoreProbe } from '../../bench/redis.ts'
import { clusterFanout } from '../../bench/scenarios/cluster-fanout.ts'
import { freePort } from '../helpers/free-port.ts'
import { useRedis } from '../helpers/redis.ts'
import { useRedisCluster } from '../helpers/redis-cluster.ts'
import { checkReport, readQuickReport, runCli } from './cli.ts'

/** Every `agwbench:` key on a node: the bench must leave none of its own behind. */
async function benchKeys(node: Redis): Promise<string[]> {
  const keys: string[] = []
  let cursor = '0'
  do {
    const [next, batch] = await node.scan(cursor, 'MATCH', 'agwbench:*', 'COUNT', 1000)
    cursor = next
    keys.push(...batch)
  } while (cursor !== '0')
  return keys.sort()
}

t.test('standalone store probe: prefixes, command counters, cleanup', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const store = (await openStandalone(r.url)) as StoreProbe
  t.teardown(() => store.close())
  t.equal(store.label, r.url)
  const choice = store.choice('fanout4')
  t.match(choice, { url: r.url, cluster: false, prefix: /^agwbench:[0-9a-f]{8}:fanout4:$/ })
  const before = await store.commandCounts()
  await r.redis.set(`${choice.prefix}a`, '1')
  await r.redis.set(`${store.choice('other').prefix}b`, '1')
  const after = await store.commandCounts()
  t.ok(after.calls - before.calls >= 2, 'the SETs are counted')
  t.ok((after.byCommand.set ?? 0) - (before.byCommand.set ?? 0) >= 2)
  t.equal(await store.clear(), 2, "every key of the scenario's prefix")
  t.same(await r.redis.exists(`${choice.prefix}a`), 0)
  t.equal(await store.clear(), 0)
  t.match(await openCluster(new URL(r.url).host), /^no Redis Cluster reachable at .* \(None of startup nodes is available\)$/, 'a standalone Redis is no cluster')
})

t.test('cluster store probe: masters summed, keys of every slot cleared', async (t) => {
  const c = await useRedisCluster(t)
  if (!c) return
  const seed = `${c.seed.host}:${c.seed.port}`
  const store = (await openCluster(seed)) as StoreProbe
  t.teardown(() => store.close())
  t.equal(store.label, `cluster ${seed}`)
  const choice = store.choice('x')
  t.match(choice, { url: `redis://${seed}`, cluster: true, prefix: /^agwbench:[0-9a-f]{8}:x:$/ })
  const before = await store.commandCounts()
  // Hash tags on three slots, so (almost surely) on more than one master.
  for (const tag of ['a', 'b', 'c', 'd', 'e', 'f']) await c.cluster.set(`${choice.prefix}{${tag}}`, '1')
  const after = await store.commandCounts()
  t.ok((after.byCommand.set ?? 0) - (before.byCommand.set ?? 0) >= 6, 'SETs on every master are counted')
  t.equal(await store.clear(), 6)
  t.equal(await store.clear(), 0)
})

t.test('cluster-fanout with the standalone Redis but no cluster: n/a, and the standalone probe closed', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const port = await freePort()
  const ctx = { sizes: QUICK, redis: { url: r.url, clusterSeed: `127.0.0.1:${port}` } } as unknown as BenchContext
  const result = await clusterFanout(ctx)
  t.ok(result.rows.every((row) => row.verdict === 'n/a' && row.note?.startsWith(`no Redis Cluster reachable at 127.0.0.1:${port}`)))
})

t.test('quick: redis-fanout and redis-cycles on the standalone Redis', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const out = await mkdtemp(join(tmpdir(), 'agw-bench-redis-'))
  t.teardown(() => rm(out, { recursive: true, force: true }))
  const left = await benchKeys(r.redis)
  const { code, stderr } = await runCli(t, ['--quick', '--only', 'redis-fanout,redis-cycles', '--redis', r.url, '--out', out, '--timeout', '80'])
  t.equal(code, 0, stderr)
  const { report } = await readQuickReport(out)
  checkReport(t, report, ['redis-fanout', 'redis-cycles'])
  const fanout = report.scenarios[0]?.details as Record<string, { redis: { atB: { tokensPerSecond: number }; redis: { calls: number } } }>
  for (const [label, figures] of Object.entries(fanout)) {
    t.ok(figures.redis.atB.tokensPerSecond > 0, `${label}: tokens reached the watchers on the other instance`)
    t.ok(figures.redis.redis.calls > 0, `${label}: Redis commands counted`)
  }
  t.same(await benchKeys(r.redis), left, 'no key of the run left behind')
})

t.test('quick: cluster-fanout, cluster vs standalone', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const c = await useRedisCluster(t)
  if (!c) return
  const out = await mkdtemp(join(tmpdir(), 'agw-bench-cluster-'))
  t.teardown(() => rm(out, { recursive: true, force: true }))
  const masters = c.cluster.nodes('master')
  const left = await Promise.all(masters.map(benchKeys))
  const seed = `${c.seed.host}:${c.seed.port}`
  const { code, stderr } = await runCli(t, ['--quick', '--only', 'cluster-fanout', '--redis', r.url, '--redis-cluster', seed, '--out', out, '--timeout', '80'])
  t.equal(code, 0, stderr)
  const { report } = await readQuickReport(out)
  checkReport(t, report, ['cluster-fanout'])
  t.same(await Promise.all(masters.map(benchKeys)), left, 'no key of the run left on any master')
})
