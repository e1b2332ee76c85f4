import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Cluster, Redis } from 'ioredis'
import { acquireExclusiveLock } from './exclusive-lock.ts'
import { scanKeys } from './redis.ts'

const run = promisify(execFile)

/** The 3-master / 3-replica cluster .ci/redis-cluster.sh starts (.ci/run calls it). */
export const TEST_REDIS_CLUSTER = process.env.TEST_REDIS_CLUSTER ?? '127.0.0.1:7001'
const CLUSTER_SCRIPT = join(import.meta.dirname, '../../.ci/redis-cluster.sh')

interface Tap {
  teardown(fn: () => unknown): void
  plan(count: number, comment?: string): void
  fail(message: string): void
}

export interface TestCluster {
  /** `redis://host:port` of the seed node (REDIS_URL), and the seed (REDIS_CLUSTER). */
  url: string
  seed: { host: string; port: number }
  /** Unique to the test; its keys are deleted at teardown. */
  prefix: string
  /** A cluster client of the test's own. */
  cluster: Cluster
  /** SIGKILLs the master serving `key` and waits (bounded) until its replica took over. */
  killMasterOf(key: string): Promise<{ port: number }>
}

const [host = '127.0.0.1', portText = '7001'] = TEST_REDIS_CLUSTER.split(':')
const seed = { host, port: Number(portText) }

async function clusterOk(port: number): Promise<boolean> {
  const probe = new Redis({ host, port, lazyConnect: true, retryStrategy: () => null, connectTimeout: 1000, maxRetriesPerRequest: 0 })
  probe.on('error', () => {})
  try {
    await probe.connect()
    return /^cluster_state:ok/m.test((await probe.cluster('INFO')) as string)
  } catch {
    return false
  } finally {
    probe.disconnect()
  }
}

/** Bounded: a cluster the script just healed may take a moment to say ok on every node. */
async function clusterOkWithin(ms: number): Promise<boolean> {
  const deadline = Date.now() + ms
  for (;;) {
    if (await clusterOk(seed.port)) return true
    if (Date.now() > deadline) return false
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
}

/**
 * The cluster for one test, or undefined when skipped (not reachable, and not CI). A test holds
 * the cluster alone, across tap's worker processes: the failover test kills a master, and a test
 * of another file running meanwhile would find the cluster failing over.
 */
export async function useRedisCluster(t: Tap): Promise<TestCluster | undefined> {
  const release = await acquireExclusiveLock(`agw-redis-cluster-${seed.port}`, 100_000)
  if (!(await clusterOkWithin(process.env.CI === 'true' ? 10_000 : 0))) {
    await release()
    const why = `no Redis Cluster reachable at ${TEST_REDIS_CLUSTER} (start one: .ci/redis-cluster.sh)`
    if (process.env.CI === 'true') t.fail(`${why}: CI=true requires the Redis Cluster tests to run`)
    else t.plan(0, `skipped: ${why} (under CI=true this fails)`)
    return undefined
  }
  const prefix = `agwtest:${randomBytes(6).toString('hex')}:`
  const cluster = new Cluster([seed], { redisOptions: { maxRetriesPerRequest: 0 } })
  let killed = false
  // Registered first, so it runs last (tap runs teardowns last-in first-out): the test's apps
  // are closed before the cluster is handed on.
  t.teardown(async () => {
    try {
      // A killed master comes back as a replica of its successor: the next test finds a healthy cluster.
      if (killed) await run(CLUSTER_SCRIPT, [], { env: { ...process.env, REDIS_CLUSTER_BASE_PORT: String(seed.port) } })
      for (const node of cluster.nodes('master')) {
        for (const key of await scanKeys(node, prefix)) await node.unlink(key).catch(() => {})
      }
      cluster.disconnect()
    } finally {
      await release()
    }
  })
  await new Promise((resolve, reject) => {
    cluster.once('ready', resolve)
    cluster.once('error', reject)
  })

  async function killMasterOf(key: string): Promise<{ port: number }> {
    const slot = Number(await cluster.cluster('KEYSLOT', key))
    const node = cluster.slots[slot]?.[0]
    const port = Number(node?.split(':')[1])
    const victim = new Redis({ host, port, maxRetriesPerRequest: 0 })
    const pid = Number(/process_id:(\d+)/.exec(await victim.info('server'))?.[1])
    victim.disconnect()
    killed = true
    process.kill(pid, 'SIGKILL')
    const other = [0, 1, 2, 3, 4, 5].map((i) => seed.port + i).find((p) => p !== port)!
    const watcher = new Redis({ host, port: other, maxRetriesPerRequest: 0 })
    try {
      // Bounded: node timeout 2 s, then the election.
      for (let i = 0; i < 400; i++) {
        const nodes = (await watcher.cluster('NODES')) as string
        // Flags are comma-separated: the watcher's own line says `myself,master` when it was promoted.
        const isMaster = (line: string) => (line.split(' ')[2] ?? '').split(',').includes('master') && !line.includes('fail')
        const owner = nodes.split('\n').find((line) => !line.includes(`:${port}@`) && isMaster(line) && servesSlot(line, slot))
        if (owner && /^cluster_state:ok/m.test((await watcher.cluster('INFO')) as string)) return { port }
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
      throw new Error(`no replica took over slot ${slot} within 40 s`)
    } finally {
      watcher.disconnect()
    }
  }

  return { url: `redis://${host}:${seed.port}`, seed, prefix, cluster, killMasterOf }
}

function servesSlot(line: string, slot: number): boolean {
  return line
    .split(' ')
    .slice(8)
    .some((range) => {
      const [from, to = from] = range.split('-').map(Number)
      return from !== undefined && to !== undefined && slot >= from && slot <= to
    })
}
