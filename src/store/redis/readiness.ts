import { Cluster } from 'ioredis'
import type { RedisClient } from './connections.ts'
import { LuaScript } from './scripts.ts'

/**
 * What an upgrade needs first (the connection count): a write by a script over two keys of one
 * hash slot. Redis refuses it with READONLY on a replica, CROSSSLOT or MOVED where the keys or
 * the client do not fit the topology, CLUSTERDOWN when the slot has no master.
 */
const probe = new LuaScript(`
redis.call('SET', KEYS[1], '1', 'PX', 10000)
redis.call('SET', KEYS[2], '1', 'PX', 10000)
return 1
`)

/** A store that cannot serve upgrades, and why (the readiness check shows and logs it). */
export class StoreRefused extends Error {
  override name = 'StoreRefused'
}

/**
 * Throws, naming the reason, unless the store accepts what upgrades need: on one Redis, that it
 * is a writable primary and not a cluster node (a standalone client there gets MOVED for most
 * keys); on a cluster, that every master the client knows answers and the cluster says every
 * slot is served (cluster_state:ok); on both, that the probe script runs.
 */
export async function checkStore(redis: RedisClient, prefix: string): Promise<void> {
  if (redis instanceof Cluster) await checkCluster(redis)
  else if (/^cluster_enabled:1/m.test(await redis.info('cluster'))) {
    throw new StoreRefused('REDIS_URL is a Redis Cluster node: set REDIS_CLUSTER=true')
  }
  try {
    await probe.run(redis, [`${prefix}{ready}:a`, `${prefix}{ready}:b`], [])
  } catch (err) {
    throw new StoreRefused(`store refuses writes: ${(err as Error).message}`)
  }
}

async function checkCluster(cluster: Cluster): Promise<void> {
  const masters = cluster.nodes('master')
  if (masters.length === 0) throw new StoreRefused('no reachable cluster master')
  const answers = await Promise.allSettled(masters.map((node) => node.ping()))
  const down = masters.filter((_, i) => answers[i]?.status === 'rejected').map(({ options }) => `${options.host}:${options.port}`)
  if (down.length > 0) throw new StoreRefused(`cluster master unreachable: ${down.join(', ')}`)
  const state = /^cluster_state:(\w+)/m.exec(await cluster.cluster('INFO'))?.[1]
  if (state !== 'ok') throw new StoreRefused(`cluster_state:${state ?? 'unknown'} (a hash slot has no reachable master)`)
}
