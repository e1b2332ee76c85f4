/**
 * (h) Issue #19's comparison: the fan-out of redis-fanout (chats on instance A, watchers on
 * instance B) on the 3-master Redis Cluster against the standalone Redis, one after the
 * other in the same run. No goal is set for the ratio; without a reachable cluster every row
 * is n/a with the reason (not a failure).
 */
import { alternating, type BenchContext } from '../context.ts'
import { openCluster, openStandalone, type StoreProbe } from '../redis.ts'
import { row, type Row, type ScenarioResult } from '../report.ts'
import { measureTwoInstances, type TwoInstanceFigures } from '../two-instances.ts'
import { watchFailures } from './redis-fanout.ts'

export interface ClusterFanoutFigures {
  cluster: TwoInstanceFigures
  standalone: TwoInstanceFigures
}

export async function clusterFanout(ctx: BenchContext): Promise<ScenarioResult> {
  const labels = ctx.sizes.redisSessions.map((sessions) => `${sessions} sessions`)
  const unavailable = (why: string): ScenarioResult => ({
    scenario: 'cluster-fanout',
    rows: labels.flatMap((label) => clusterFanoutRows(label, null, why)),
    details: { unavailable: why },
    histograms: [],
  })
  const standalone = await openStandalone(ctx.redis.url)
  if (typeof standalone === 'string') return unavailable(standalone)
  const cluster = await openCluster(ctx.redis.clusterSeed)
  if (typeof cluster === 'string') {
    await standalone.close()
    return unavailable(cluster)
  }
  const stores = { cluster, standalone }
  const figures: Record<string, ClusterFanoutFigures> = {}
  try {
    for (const [i, sessions] of ctx.sizes.redisSessions.entries()) {
      const measured: Partial<ClusterFanoutFigures> = {}
      for (const side of alternating(i, ['standalone', 'cluster'] as const)) {
        const store: StoreProbe = stores[side]
        ctx.progress(`cluster-fanout: ${store.label}, two instances, ${sessions} sessions`)
        measured[side] = await measureTwoInstances(ctx, store, `fanout${sessions}`, sessions)
      }
      figures[labels[i] as string] = measured as ClusterFanoutFigures
    }
  } finally {
    for (const store of [cluster, standalone]) {
      await store.clear()
      await store.close()
    }
  }
  return { scenario: 'cluster-fanout', rows: labels.flatMap((label) => clusterFanoutRows(label, figures[label] as ClusterFanoutFigures)), details: figures, histograms: [] }
}

export function clusterFanoutRows(label: string, figures: ClusterFanoutFigures | null, unavailable?: string): Row[] {
  const common = { scenario: 'cluster-fanout', case: label, target: { kind: 'none' } } as const
  const note = unavailable ?? 'Redis Cluster (left) vs standalone Redis (right), each with chats on instance A and the same users watching from instance B'
  const { cluster, standalone } = figures ?? {}
  return [
    row({ ...common, metric: 'tokens per second at the watching instance', unit: '1/s', project: cluster?.atB.tokensPerSecond ?? null, baseline: standalone?.atB.tokensPerSecond ?? null, note }),
    row({ ...common, metric: 'tokens per second at the chatting instance', unit: '1/s', project: cluster?.atA.tokensPerSecond ?? null, baseline: standalone?.atA.tokensPerSecond ?? null, note }),
    row({ ...common, metric: 'server CPU per upstream token, all instances', unit: 'µs', project: cluster?.atA.cpuUsPerToken ?? null, baseline: standalone?.atA.cpuUsPerToken ?? null, note }),
    row({
      ...common,
      metric: 'Redis commands per upstream token',
      unit: 'ratio',
      project: cluster?.commandsPerToken ?? null,
      baseline: standalone?.commandsPerToken ?? null,
      note: unavailable ?? 'INFO commandstats calls in the window, summed over the masters / tokens delivered at A',
    }),
    row({
      scenario: 'cluster-fanout',
      case: label,
      metric: 'watcher errors and connections closed by a server, cluster',
      unit: 'count',
      project: cluster ? watchFailures(cluster) : null,
      baseline: standalone ? watchFailures(standalone) : null,
      target: { kind: 'equals', value: 0 },
      ...(unavailable ? { note: unavailable } : {}),
    }),
  ]
}
