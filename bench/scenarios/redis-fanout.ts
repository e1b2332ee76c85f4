/**
 * (f) The Redis backend's fan-out: two project instances on the standalone Redis, the runs
 * chatted on instance A, watched from instance B (two-instances.ts), against the memory
 * backend's fan-out on one instance, same upstream flood, same session count, same run.
 * Redis commands per upstream token come from the same window (INFO commandstats).
 */
import { HANDSHAKE_TIMEOUT_MS, alternating, measureWindow, throughput, withServer, type BenchContext, type ThroughputFigures } from '../context.ts'
import { floodPrompt } from '../prompts.ts'
import { openStandalone } from '../redis.ts'
import { formatNumber, row, type Row, type ScenarioResult } from '../report.ts'
import { total } from '../stats.ts'
import { measureTwoInstances, type TwoInstanceFigures } from '../two-instances.ts'

export interface RedisFanoutFigures {
  redis: TwoInstanceFigures
  memory: ThroughputFigures
}

/** The memory backend's fan-out on one instance: the chatting connections receive. */
async function memoryFanout(ctx: BenchContext, sessions: number): Promise<ThroughputFigures> {
  return withServer(ctx, 'project', { provider: 'openai' }, async (server) => {
    await ctx.pool.open(server.url, sessions, ctx.sizes.handshakeInflight, HANDSHAKE_TIMEOUT_MS)
    await ctx.pool.run([{ count: sessions, prompt: floodPrompt(ctx.sizes.fanoutTokens), stamped: false, cancelAfterTokens: null, maxRuns: null, gapMs: 0 }])
    const window = await measureWindow(ctx, server)
    await ctx.pool.halt()
    return throughput(window)
  })
}

export async function redisFanout(ctx: BenchContext): Promise<ScenarioResult> {
  const { sizes } = ctx
  const labels = sizes.redisSessions.map((sessions) => `${sessions} sessions`)
  const store = await openStandalone(ctx.redis.url)
  if (typeof store === 'string') {
    return { scenario: 'redis-fanout', rows: labels.flatMap((label) => redisFanoutRows(label, null, store)), details: { unavailable: store }, histograms: [] }
  }
  const figures: Record<string, RedisFanoutFigures> = {}
  try {
    for (const [i, sessions] of sizes.redisSessions.entries()) {
      const measured: Partial<RedisFanoutFigures> = {}
      for (const side of alternating(i, ['memory', 'redis'] as const)) {
        ctx.progress(`redis-fanout: ${side === 'memory' ? 'memory backend, one instance' : `Redis ${store.label}, two instances`}, ${sessions} sessions`)
        if (side === 'memory') measured.memory = await memoryFanout(ctx, sessions)
        else measured.redis = await measureTwoInstances(ctx, store, `fanout${sessions}`, sessions)
      }
      figures[labels[i] as string] = measured as RedisFanoutFigures
    }
  } finally {
    await store.clear()
    await store.close()
  }
  return { scenario: 'redis-fanout', rows: labels.flatMap((label) => redisFanoutRows(label, figures[label] as RedisFanoutFigures)), details: figures, histograms: [] }
}

/** Errors at the watchers plus connections a server closed: what should never happen. */
export function watchFailures(figures: TwoInstanceFigures): number {
  return figures.watchErrors + total(figures.unexpectedCloses)
}

/** The rows of one session count; without figures (no Redis), every row is n/a with `unavailable` as its note. */
export function redisFanoutRows(label: string, figures: RedisFanoutFigures | null, unavailable?: string): Row[] {
  const common = { scenario: 'redis-fanout', case: label } as const
  const sides = unavailable ?? 'Redis, chats on instance A, the same users watching from instance B (left); memory backend, one instance (right)'
  const redis = figures?.redis
  const memory = figures?.memory
  return [
    row({ ...common, metric: 'tokens per second at the watching instance', unit: '1/s', project: redis?.atB.tokensPerSecond ?? null, baseline: memory?.tokensPerSecond ?? null, target: { kind: 'ratio-at-least', value: 0.5 }, note: sides }),
    row({ ...common, metric: 'tokens per second at the chatting instance', unit: '1/s', project: redis?.atA.tokensPerSecond ?? null, baseline: memory?.tokensPerSecond ?? null, target: { kind: 'none' }, note: sides }),
    row({ ...common, metric: 'upstream tokens per token frame at the watching instance', unit: 'ratio', project: redis?.atB.tokensPerFrame ?? null, baseline: memory?.tokensPerFrame ?? null, target: { kind: 'none' }, note: sides }),
    row({ ...common, metric: 'server CPU per upstream token, all instances', unit: 'µs', project: redis?.atA.cpuUsPerToken ?? null, baseline: memory?.cpuUsPerToken ?? null, target: { kind: 'none' }, note: sides }),
    row({
      ...common,
      metric: 'Redis commands per upstream token',
      unit: 'ratio',
      project: redis?.commandsPerToken ?? null,
      baseline: null,
      target: { kind: 'at-most', value: 0.25 },
      note: redis ? `INFO commandstats calls in the window (scripts' inner commands included) / tokens delivered at A; ${formatNumber(redis.idleCommandsPerSecond)} calls/s before any run` : sides,
    }),
    row({ ...common, metric: 'watcher errors and connections closed by a server', unit: 'count', project: redis ? watchFailures(redis) : null, baseline: null, target: { kind: 'equals', value: 0 }, ...(unavailable ? { note: unavailable } : {}) }),
  ]
}
