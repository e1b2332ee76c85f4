/**
 * (e) Cancel latency: a probe session starts a long paced stream, and on its first token
 * sends `cancel`, stamping the time; the upstream stamps when it sees that request closed
 * (same monotonic clock). A few probes, one cancel at a time each, so "idle" stays idle;
 * then the same beside `loadSessions` flooding sessions (the load of `fanout`). A cancel
 * whose upstream request never closed is counted: the run would still be billed.
 */
import type { GroupSpec, ServerKind } from '../children.ts'
import { HANDSHAKE_TIMEOUT_MS, sideOrder, withServer, type BenchContext } from '../context.ts'
import type { CancelRecord } from '../load-client.ts'
import { floodPrompt, pacedPrompt, RUN_ID_PLACEHOLDER } from '../prompts.ts'
import { row, type Row, type ScenarioResult } from '../report.ts'
import { until } from '../until.ts'
import { pick, summarize, type Summary } from '../stats.ts'

const LOADS = [
  { name: 'idle', p99BelowUs: 10_000 },
  { name: 'under load', p99BelowUs: 50_000 },
] as const

/** Long enough never to finish before its cancel. */
const PROBE_TOKENS = 10_000
const PROBE_INTERVAL_MS = 5
/** How long the upstream's last `closed` events may take to arrive over IPC. */
const SETTLE_MS = 3000

export interface CancelFigures {
  latenciesUs: number[]
  /** Cancels sent whose upstream request was never seen closed. */
  unclosed: number
  summary: Summary | null
}

/** Pairs each cancel with its upstream close. */
export function joinCancels(cancels: readonly CancelRecord[], closedAt: ReadonlyMap<string, number>): CancelFigures {
  const latenciesUs: number[] = []
  let unclosed = 0
  for (const cancel of cancels) {
    const closed = closedAt.get(cancel.id)
    if (closed === undefined) unclosed++
    else latenciesUs.push((closed - cancel.sentNs) / 1000)
  }
  return { latenciesUs, unclosed, summary: summarize(latenciesUs) }
}

export async function cancel(ctx: BenchContext): Promise<ScenarioResult> {
  const { sizes } = ctx
  const probes: GroupSpec = {
    count: sizes.cancelProbes,
    prompt: pacedPrompt(PROBE_TOKENS, PROBE_INTERVAL_MS, RUN_ID_PLACEHOLDER),
    stamped: false,
    cancelAfterTokens: 1,
    maxRuns: sizes.cancelsPerProbe,
    gapMs: 20,
  }
  const flood: GroupSpec = { count: sizes.loadSessions, prompt: floodPrompt(sizes.fanoutTokens), stamped: false, cancelAfterTokens: null, maxRuns: null, gapMs: 0 }
  const figures: Record<string, Record<ServerKind, CancelFigures>> = {}
  for (const kind of sideOrder(0)) {
    await withServer(ctx, kind, { provider: 'openai' }, async (server) => {
      await ctx.pool.open(server.url, sizes.cancelProbes + sizes.loadSessions, sizes.handshakeInflight, HANDSHAKE_TIMEOUT_MS)
      for (const load of LOADS) {
        ctx.progress(`cancel: ${kind}, ${load.name}`)
        ctx.upstream.closedAt.clear()
        await ctx.pool.sample()
        await ctx.pool.run(load.name === 'idle' ? [probes] : [probes, flood])
        await ctx.pool.waitRuns(30_000)
        const { cancels } = await ctx.pool.sample()
        await until(() => cancels.every((c) => ctx.upstream.closedAt.has(c.id)), SETTLE_MS)
        await ctx.pool.halt()
        ;(figures[load.name] ??= {} as Record<ServerKind, CancelFigures>)[kind] = joinCancels(cancels, ctx.upstream.closedAt)
      }
    })
  }
  const rows: Row[] = []
  for (const load of LOADS) {
    const { project, baseline } = figures[load.name] as Record<ServerKind, CancelFigures>
    const label = load.name === 'idle' ? `${sizes.cancelProbes} sessions cancelling, idle` : `${sizes.cancelProbes} cancelling + ${sizes.loadSessions} flooding sessions`
    rows.push(
      row({ scenario: 'cancel', case: label, metric: 'cancel → upstream closed p50', unit: 'µs', project: pick(project.summary, 'p50'), baseline: pick(baseline.summary, 'p50'), target: { kind: 'none' } }),
      row({ scenario: 'cancel', case: label, metric: 'cancel → upstream closed p99', unit: 'µs', project: pick(project.summary, 'p99'), baseline: pick(baseline.summary, 'p99'), target: { kind: 'below', value: load.p99BelowUs } }),
      row({ scenario: 'cancel', case: label, metric: 'cancels that left the upstream open', unit: 'count', project: project.unclosed, baseline: baseline.unclosed, target: { kind: 'equals', value: 0 } }),
    )
  }
  const details = Object.fromEntries(
    Object.entries(figures).map(([load, bySide]) => [load, { project: { ...bySide.project, latenciesUs: undefined }, baseline: { ...bySide.baseline, latenciesUs: undefined } }]),
  )
  return { scenario: 'cancel', rows, details, histograms: [] }
}
