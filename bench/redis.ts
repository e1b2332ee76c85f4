/**
 * The Redis scenarios' own view of the store: is it reachable, how many commands did it
 * execute (INFO commandstats), and deleting the keys of the run's prefix afterwards. The
 * project instances connect by themselves (REDIS_URL, REDIS_KEY_PREFIX, REDIS_CLUSTER).
 */
import { randomBytes } from 'node:crypto'
import { Cluster, Redis } from 'ioredis'
import type { StoreChoice } from './children.ts'

const CONNECT_TIMEOUT_MS = 2000

export interface CommandCounts {
  /** Calls of every command but the bench's own reads and replication's, scripts' inner commands included as Redis counts them. */
  calls: number
  /** Redis's time in them, µs. */
  usec: number
  byCommand: Record<string, number>
}

const STAT_LINE = /^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/
/** INFO: the bench's own reads; REPLCONF: a cluster's replicas acknowledging to their masters. */
const NOT_THE_SERVICE = new Set(['info', 'replconf'])

export function parseCommandStats(info: string): CommandCounts {
  const counts: CommandCounts = { calls: 0, usec: 0, byCommand: {} }
  for (const line of info.split('\n')) {
    const match = STAT_LINE.exec(line)
    if (!match || NOT_THE_SERVICE.has(match[1] as string)) continue
    const calls = Number(match[2])
    counts.calls += calls
    counts.usec += Number(match[3])
    counts.byCommand[match[1] as string] = calls
  }
  return counts
}

export function addCounts(a: CommandCounts, b: CommandCounts): CommandCounts {
  const byCommand = { ...a.byCommand }
  for (const [name, calls] of Object.entries(b.byCommand)) byCommand[name] = (byCommand[name] ?? 0) + calls
  return { calls: a.calls + b.calls, usec: a.usec + b.usec, byCommand }
}

/** after − before; commands that did not move are left out. */
export function diffCounts(after: CommandCounts, before: CommandCounts): CommandCounts {
  const byCommand: Record<string, number> = {}
  for (const [name, calls] of Object.entries(after.byCommand)) {
    const delta = calls - (before.byCommand[name] ?? 0)
    if (delta !== 0) byCommand[name] = delta
  }
  return { calls: after.calls - before.calls, usec: after.usec - before.usec, byCommand }
}

export const ZERO_COUNTS: CommandCounts = { calls: 0, usec: 0, byCommand: {} }

export interface StoreProbe {
  /** `redis://127.0.0.1:6379` or `cluster 127.0.0.1:7001`, for labels. */
  label: string
  /** Where the project connects, under a prefix of this scenario's own (`name` tells measurements apart). */
  choice(name: string): StoreChoice
  /** INFO commandstats, summed over the masters of a cluster. */
  commandCounts(): Promise<CommandCounts>
  /** Deletes every key of this scenario's prefix; how many there were. */
  clear(): Promise<number>
  close(): Promise<void>
}

/** `agwbench:<random>:`: each scenario's keys apart from everyone else's on a shared Redis. */
export function newPrefix(): string {
  return `agwbench:${randomBytes(4).toString('hex')}:`
}

async function scan(node: Redis, pattern: string): Promise<string[]> {
  const keys: string[] = []
  let cursor = '0'
  do {
    const [next, batch] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
    cursor = next
    keys.push(...batch)
  } while (cursor !== '0')
  return keys
}

const UNLINK_BATCH = 500

/**
 * Deletes `keys` in batches, through `unlink` (one key per call on a cluster: a multi-key UNLINK
 * across slots is refused, and the cluster client routes each key to its current master, after
 * a failover too); how many existed. A failed call rejects: keys are never left silently.
 */
async function unlinkAll(keys: readonly string[], unlink: (batch: string[]) => Promise<number>): Promise<number> {
  let removed = 0
  for (let i = 0; i < keys.length; i += UNLINK_BATCH) removed += await unlink(keys.slice(i, i + UNLINK_BATCH))
  return removed
}

/** Throws unless CLUSTER INFO says the cluster serves every slot (a failover under way does not). */
export function assertClusterOk(info: string): void {
  const state = /^cluster_state:(\w+)/m.exec(info)?.[1]
  if (state !== 'ok') throw new Error(`cluster_state ${state ?? 'missing'}`)
}

export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

function connectOptions() {
  return { lazyConnect: true, connectTimeout: CONNECT_TIMEOUT_MS, maxRetriesPerRequest: 0, retryStrategy: () => null }
}

/** A reason it cannot be used, or null. */
async function refusal(client: Redis): Promise<string | null> {
  try {
    await client.connect()
    await client.ping()
    return null
  } catch (err) {
    client.disconnect()
    return (err as Error).message
  }
}

/** The standalone Redis at `url`, or why it cannot be used. */
export async function openStandalone(url: string): Promise<StoreProbe | string> {
  const client = new Redis(url, connectOptions())
  client.on('error', () => {})
  const why = await refusal(client)
  if (why !== null) return `no Redis reachable at ${url} (${why})`
  const base = newPrefix()
  return {
    label: url,
    choice: (name) => ({ url, cluster: false, prefix: `${base}${name}:` }),
    commandCounts: async () => parseCommandStats(await client.info('commandstats')),
    clear: async () => unlinkAll(await scan(client, `${base}*`), (batch) => client.unlink(...batch)),
    close: async () => {
      client.disconnect()
    },
  }
}

/** The Redis Cluster of seed `host:port` (cluster_state ok), or why it cannot be used. */
export async function openCluster(seed: string): Promise<StoreProbe | string> {
  const [host = '', port = ''] = seed.split(':')
  const cluster = new Cluster([{ host, port: Number(port) }], {
    lazyConnect: true,
    clusterRetryStrategy: () => null,
    redisOptions: { connectTimeout: CONNECT_TIMEOUT_MS, maxRetriesPerRequest: 0 },
  })
  cluster.on('error', () => {})
  try {
    // A standalone Redis is refused here too (no cluster slots).
    await within(cluster.connect(), 10_000, 'connect')
    assertClusterOk((await cluster.cluster('INFO')) as string)
  } catch (err) {
    cluster.disconnect()
    return `no Redis Cluster reachable at ${seed} (${(err as Error).message})`
  }
  const base = newPrefix()
  const url = `redis://${seed}`
  const masters = () => cluster.nodes('master')
  return {
    label: `cluster ${seed}`,
    choice: (name) => ({ url, cluster: true, prefix: `${base}${name}:` }),
    commandCounts: async () => {
      const counts = await Promise.all(masters().map(async (node) => parseCommandStats(await node.info('commandstats'))))
      return counts.reduce(addCounts, ZERO_COUNTS)
    },
    clear: async () => {
      // The masters of now: a failover during the run (someone's test) moves slots to a replica.
      await new Promise<void>((resolve) => cluster.refreshSlotsCache(() => resolve()))
      const keys = new Set<string>()
      for (const node of masters()) for (const key of await scan(node, `${base}*`)) keys.add(key)
      const unlinkEach = async (batch: string[]) => (await Promise.all(batch.map((key) => cluster.unlink(key)))).reduce((sum, n) => sum + n, 0)
      return unlinkAll([...keys], unlinkEach)
    },
    close: async () => {
      cluster.disconnect()
    },
  }
}
