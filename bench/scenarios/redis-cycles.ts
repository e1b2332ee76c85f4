/**
 * (g) What a session leaves behind: one project instance on the standalone Redis runs a
 * fixed probe (sessions × runs × flood tokens, to completion) while fresh, then serves
 * `cycles` connect → chat → close cycles (cycles.ts: each a new user and session, half of
 * them closed mid-run), then runs the same probe again. Per-session state that outlives its
 * connection (timers, tails, subscriptions, map entries scanned on the hot path) makes the
 * second probe cost more. The target is on server CPU per upstream token; Redis commands and
 * time per run and the heap after GC are reported beside it.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { ServerHandle } from '../children.ts'
import { HANDSHAKE_TIMEOUT_MS, type BenchContext } from '../context.ts'
import type { CycleResult } from '../cycles.ts'
import { floodPrompt } from '../prompts.ts'
import { diffCounts, openStandalone, type StoreProbe } from '../redis.ts'
import { formatNumber, row, type Row, type ScenarioResult } from '../report.ts'
import { perUnit } from '../stats.ts'

/** Budget of one cycle, handshake to close. */
const CYCLE_TIMEOUT_MS = 10_000
/** Budget of one probe (all its runs). */
const PROBE_TIMEOUT_MS = 60_000

export interface ProbeFigures {
  runs: number
  tokens: number
  seconds: number
  cpuUsPerToken: number | null
  redisCallsPerRun: number | null
  redisUsecPerRun: number | null
  /** Runs still going when the probe's budget ran out (should be 0). */
  unfinished: number
  /** The server's heap after a forced GC, just before the probe. */
  heapUsed: number
}

export interface CyclesFigures {
  fresh: ProbeFigures
  used: ProbeFigures
  cycles: CycleResult
}

/** The probe: every probe session runs `probeRuns` flooding chats back to back, to completion. */
async function probe(ctx: BenchContext, server: ServerHandle, store: StoreProbe): Promise<ProbeFigures> {
  const { sizes } = ctx
  const { heapUsed } = await server.stats({ gc: true })
  await ctx.pool.sample()
  const before = { cpuUs: server.cpuUs(), atNs: process.hrtime.bigint(), counts: await store.commandCounts() }
  await ctx.pool.run([{ count: sizes.probeSessions, prompt: floodPrompt(sizes.probeTokens), stamped: false, cancelAfterTokens: null, maxRuns: sizes.probeRuns, gapMs: 0 }])
  const unfinished = await ctx.pool.waitRuns(PROBE_TIMEOUT_MS)
  const cpuUs = server.cpuUs() - before.cpuUs
  const seconds = Number(process.hrtime.bigint() - before.atNs) / 1e9
  const counts = diffCounts(await store.commandCounts(), before.counts)
  const { counters } = await ctx.pool.sample()
  return {
    runs: counters.completes,
    tokens: counters.tokens,
    seconds,
    cpuUsPerToken: perUnit(cpuUs, counters.tokens),
    redisCallsPerRun: perUnit(counts.calls, counters.completes),
    redisUsecPerRun: perUnit(counts.usec, counters.completes),
    unfinished,
    heapUsed,
  }
}

async function measureCycles(ctx: BenchContext, server: ServerHandle, store: StoreProbe): Promise<CyclesFigures> {
  const { sizes } = ctx
  await ctx.pool.open(server.url, sizes.probeSessions, sizes.handshakeInflight, HANDSHAKE_TIMEOUT_MS)
  ctx.progress('redis-cycles: warm-up probe, then the fresh instance’s probe')
  // Unmeasured: lazily compiled code and first-use caches are not the fresh instance's cost.
  await probe(ctx, server, store)
  const fresh = await probe(ctx, server, store)
  ctx.progress(`redis-cycles: ${sizes.cycles} connect → chat → close cycles, ${sizes.cyclesInflight} in flight`)
  const cycles = await ctx.pool.cycles({ url: server.url, count: sizes.cycles, inflight: sizes.cyclesInflight, prompt: floodPrompt(sizes.cycleTokens), timeoutMs: CYCLE_TIMEOUT_MS })
  await sleep(sizes.cyclesSettleMs)
  ctx.progress('redis-cycles: the used instance’s probe')
  const used = await probe(ctx, server, store)
  return { fresh, used, cycles }
}

export async function redisCycles(ctx: BenchContext): Promise<ScenarioResult> {
  const store = await openStandalone(ctx.redis.url)
  const label = `${ctx.sizes.cycles} cycles; probe ${ctx.sizes.probeSessions} sessions × ${ctx.sizes.probeRuns} runs × ${ctx.sizes.probeTokens} tokens`
  if (typeof store === 'string') return { scenario: 'redis-cycles', rows: redisCyclesRows(label, null, store), details: { unavailable: store }, histograms: [] }
  let figures: CyclesFigures
  try {
    const server = await ctx.servers.fresh('project', { provider: 'openai', logLevel: 'warn', store: store.choice('cycles') })
    try {
      figures = await measureCycles(ctx, server, store)
    } finally {
      await ctx.pool.halt()
      await ctx.pool.closeAll()
      await server.stop()
    }
  } finally {
    await store.clear()
    await store.close()
  }
  return { scenario: 'redis-cycles', rows: redisCyclesRows(label, figures), details: { ...figures }, histograms: [] }
}

export function redisCyclesRows(label: string, figures: CyclesFigures | null, unavailable?: string): Row[] {
  const common = { scenario: 'redis-cycles', case: label } as const
  const note = unavailable ?? 'after the cycles (left) vs fresh (right), the same instance'
  const { fresh, used } = figures ?? {}
  const heapNote = figures
    ? `${note}; ${formatNumber(perUnit(figures.used.heapUsed - figures.fresh.heapUsed, figures.cycles.completed + figures.cycles.failed))} bytes retained per cycle`
    : note
  return [
    row({ ...common, metric: 'server CPU per upstream token', unit: 'µs', project: used?.cpuUsPerToken ?? null, baseline: fresh?.cpuUsPerToken ?? null, target: { kind: 'ratio-at-most', value: 1.2 }, note }),
    row({ ...common, metric: 'Redis commands per run', unit: 'calls', project: used?.redisCallsPerRun ?? null, baseline: fresh?.redisCallsPerRun ?? null, target: { kind: 'none' }, note }),
    row({ ...common, metric: 'Redis time per run', unit: 'µs', project: used?.redisUsecPerRun ?? null, baseline: fresh?.redisUsecPerRun ?? null, target: { kind: 'none' }, note }),
    row({
      ...common,
      metric: 'heap after GC',
      unit: 'bytes',
      project: used?.heapUsed ?? null,
      baseline: fresh?.heapUsed ?? null,
      target: { kind: 'none' },
      note: heapNote,
    }),
    row({
      ...common,
      metric: 'failed cycles and unfinished probe runs',
      unit: 'count',
      project: figures ? figures.cycles.failed + figures.fresh.unfinished + figures.used.unfinished : null,
      baseline: null,
      target: { kind: 'equals', value: 0 },
      ...(unavailable ? { note: unavailable } : {}),
    }),
  ]
}
