/**
 * (d) Added latency: the upstream stamps each token with its hrtime at emission
 * (CLOCK_MONOTONIC, one clock for every process on the machine); the client subtracts it
 * from its own at receipt. Paced probe sessions alone (light load); beside paced background
 * sessions (heavy load, below saturation); beside flooding sessions (saturated: the server
 * cannot keep up, latency is queueing, reported for information). Both servers pay the same
 * two loopback hops, so the difference between them is what the server adds.
 */
import type { GroupSpec, ServerHandle, ServerKind } from '../children.ts'
import { HANDSHAKE_TIMEOUT_MS, measureWindow, sideOrder, withServer, type BenchContext, type WindowProbe } from '../context.ts'
import { floodPrompt, pacedPrompt } from '../prompts.ts'
import { row, type HistogramSeries, type Row, type ScenarioResult, type Target } from '../report.ts'
import type { ServerStats } from '../server-stats.ts'
import { pick, summarize } from '../stats.ts'

/** The targets: project p99 at most the baseline's plus this (µs), at light and at heavy load. */
const ADDED_P99_BUDGET_US = { light: 1000, heavy: 5000 }

interface Load {
  name: string
  label: string
  groups: GroupSpec[]
  p99Target: Target
}

interface LatencySide {
  samples: number[]
  cpuShare: number
  /** Milliseconds per second of the window the server's event loop spent runnable, waiting for a CPU. */
  cpuWaitMsPerS: number | null
  loop: Pick<ServerStats, 'loopDelayP99Us' | 'loopDelayMaxUs' | 'gcPauseTotalUs' | 'gcPauseMaxUs'>
}

function loads(ctx: BenchContext): Load[] {
  const { sizes } = ctx
  const paced = (count: number, stamped: boolean): GroupSpec => ({
    count,
    prompt: pacedPrompt(sizes.latencyTokens, sizes.latencyIntervalMs),
    stamped,
    cancelAfterTokens: null,
    maxRuns: null,
    gapMs: 0,
  })
  const probes = paced(sizes.latencyProbes, true)
  const flood: GroupSpec = { count: sizes.loadSessions, prompt: floodPrompt(sizes.fanoutTokens), stamped: false, cancelAfterTokens: null, maxRuns: null, gapMs: 0 }
  const background = sizes.latencyBackground
  const budget = (value: number): Target => ({ kind: 'plus-at-most', value })
  return [
    { name: 'light load', label: `${probes.count} paced sessions`, groups: [probes], p99Target: budget(ADDED_P99_BUDGET_US.light) },
    { name: 'heavy load', label: `${probes.count} + ${background} paced sessions`, groups: [probes, paced(background, false)], p99Target: budget(ADDED_P99_BUDGET_US.heavy) },
    { name: 'saturated', label: `${probes.count} paced + ${flood.count} flooding sessions`, groups: [probes, flood], p99Target: { kind: 'none' } },
  ]
}

/** Milliseconds of wait per second of the window, from two readings in µs; null if either is missing. */
export function waitMsPerS(startUs: number | null, endUs: number | null, seconds: number): number | null {
  return startUs === null || endUs === null ? null : (endUs - startUs) / 1000 / seconds
}

/**
 * The server's run-queue wait over the window. On a machine shared with the load generator and
 * the upstream, a runnable server waits for a CPU, and every token it holds waits with it: the
 * row says how much of a latency is the machine's.
 */
function cpuWaitProbe(server: ServerHandle): WindowProbe & { msPerS(seconds: number): number | null } {
  let start: number | null = null
  let end: number | null = null
  return {
    begin: async () => void (start = server.runQueueWaitUs()),
    end: async () => void (end = server.runQueueWaitUs()),
    msPerS: (seconds) => waitMsPerS(start, end, seconds),
  }
}

export async function latency(ctx: BenchContext): Promise<ScenarioResult> {
  const { sizes } = ctx
  const levels = loads(ctx)
  const measured: Record<string, Partial<Record<ServerKind, LatencySide>>> = {}
  for (const kind of sideOrder(1)) {
    await withServer(ctx, kind, { provider: 'openai' }, async (server) => {
      await ctx.pool.open(server.url, sizes.latencyProbes + Math.max(sizes.latencyBackground, sizes.loadSessions), sizes.handshakeInflight, HANDSHAKE_TIMEOUT_MS)
      for (const load of levels) {
        ctx.progress(`latency: ${kind}, ${load.name}`)
        await ctx.pool.run(load.groups)
        await server.stats({ gc: false })
        const cpuWait = cpuWaitProbe(server)
        const window = await measureWindow(ctx, server, cpuWait)
        const { loopDelayP99Us, loopDelayMaxUs, gcPauseTotalUs, gcPauseMaxUs } = await server.stats({ gc: false })
        await ctx.pool.halt()
        const loop = { loopDelayP99Us, loopDelayMaxUs, gcPauseTotalUs, gcPauseMaxUs }
        const cpuWaitMsPerS = cpuWait.msPerS(window.seconds)
        ;(measured[load.name] ??= {})[kind] = { samples: window.sample.latenciesUs, cpuShare: window.cpuShare, cpuWaitMsPerS, loop }
      }
    })
  }
  const rows: Row[] = []
  const histograms: HistogramSeries[] = []
  const details: Record<string, unknown> = {}
  for (const load of levels) {
    const { project, baseline } = measured[load.name] as Record<ServerKind, LatencySide>
    const summary = { project: summarize(project.samples), baseline: summarize(baseline.samples) }
    const common = { scenario: 'latency', case: `${load.name}: ${load.label}`, unit: 'µs' } as const
    rows.push(
      row({ ...common, metric: 'added latency p50', project: pick(summary.project, 'p50'), baseline: pick(summary.baseline, 'p50'), target: { kind: 'none' } }),
      row({ ...common, metric: 'added latency p99', project: pick(summary.project, 'p99'), baseline: pick(summary.baseline, 'p99'), target: load.p99Target }),
      row({ ...common, metric: 'server event-loop delay p99', project: project.loop.loopDelayP99Us, baseline: baseline.loop.loopDelayP99Us, target: { kind: 'none' } }),
      row({ ...common, metric: 'server longest GC pause', project: project.loop.gcPauseMaxUs, baseline: baseline.loop.gcPauseMaxUs, target: { kind: 'none' } }),
      row({ ...common, unit: 'ms/s', metric: 'server event loop runnable, waiting for a CPU', project: project.cpuWaitMsPerS, baseline: baseline.cpuWaitMsPerS, target: { kind: 'none' } }),
    )
    histograms.push({ panel: common.case, side: 'project', samples: project.samples }, { panel: common.case, side: 'baseline', samples: baseline.samples })
    details[load.name] = {
      project: { summary: summary.project, cpuShare: project.cpuShare, cpuWaitMsPerS: project.cpuWaitMsPerS, ...project.loop },
      baseline: { summary: summary.baseline, cpuShare: baseline.cpuShare, cpuWaitMsPerS: baseline.cpuWaitMsPerS, ...baseline.loop },
    }
  }
  return { scenario: 'latency', rows, details, histograms }
}
