/**
 * (c) Token fan-out from an instant upstream: `fanoutSessions` concurrent sessions, each
 * running chats back to back, from the offline mock model (MOCK_TOKEN_DELAY_MS=0, in
 * process) and from the OpenAI-format upstream (a flood of one-word chunks, in its own
 * process). Upstream tokens delivered per second (counted in the frames: a coalesced frame
 * carries several), tokens per frame and server CPU µs per upstream token: the medians of
 * `fanoutReps` repetitions, each a fresh server per side, the order alternating.
 */
import type { ServerKind } from '../children.ts'
import { HANDSHAKE_TIMEOUT_MS, measureWindow, medianThroughput, sideOrder, throughput, withServer, type BenchContext, type ThroughputFigures } from '../context.ts'
import { floodPrompt, mockPrompt } from '../prompts.ts'
import { row, type Row, type ScenarioResult } from '../report.ts'

/** Words the mock adds around the echoed prompt. */
const MOCK_FRAMING_WORDS = 17

const PROVIDERS = ['mock', 'openai'] as const
type Provider = (typeof PROVIDERS)[number]

export async function fanout(ctx: BenchContext): Promise<ScenarioResult> {
  const { sizes } = ctx
  const repetitions: Record<string, Record<ServerKind, ThroughputFigures[]>> = {}
  const largest = Math.max(...sizes.fanoutSessions)
  for (let rep = 0; rep < sizes.fanoutReps; rep++) {
    for (const [u, provider] of PROVIDERS.entries()) {
      const prompt = provider === 'mock' ? mockPrompt(Math.max(1, sizes.fanoutTokens - MOCK_FRAMING_WORDS)) : floodPrompt(sizes.fanoutTokens)
      for (const kind of sideOrder(u + rep)) {
        await withServer(ctx, kind, { provider }, async (server) => {
          let open = 0
          for (const sessions of sizes.fanoutSessions) {
            ctx.progress(`fanout: ${kind}, ${provider} upstream, ${sessions} sessions (repetition ${rep + 1})`)
            open += (await ctx.pool.open(server.url, sessions - open, sizes.handshakeInflight, HANDSHAKE_TIMEOUT_MS)).opened
            await ctx.pool.run([{ count: sessions, prompt, stamped: false, cancelAfterTokens: null, maxRuns: null, gapMs: 0 }])
            const window = await measureWindow(ctx, server)
            await ctx.pool.halt()
            ;((repetitions[`${provider}, ${sessions} sessions`] ??= { project: [], baseline: [] })[kind]).push(throughput(window))
          }
        })
      }
    }
  }
  const rows: Row[] = []
  const medians: Record<string, Record<ServerKind, ThroughputFigures>> = {}
  for (const provider of PROVIDERS) {
    for (const sessions of sizes.fanoutSessions) {
      const label = `${provider}, ${sessions} sessions`
      const { project, baseline } = repetitions[label] as Record<ServerKind, [ThroughputFigures, ...ThroughputFigures[]]>
      const median = (medians[label] = { project: medianThroughput(project), baseline: medianThroughput(baseline) })
      rows.push(...fanoutRows(label, median.project, median.baseline, fanoutTargets(provider, sessions === largest)))
    }
  }
  return { scenario: 'fanout', rows, details: { medians, repetitions }, histograms: [] }
}

export interface FanoutTargets {
  /** Tokens per second, project / baseline, at least. */
  tokensRatio: number
  /** Judge the coalesced rate against the baseline's one-frame-per-token rate. */
  coalesced: boolean
}

/**
 * The goals: the OpenAI-format upstream ≥ 0.8× at every count and coalesced ≥ 1.5×
 * (its flood is what one upstream read merges); the mock ≥ 0.9× at 1000 sessions (the largest
 * count), ≥ 0.8× below.
 */
export function fanoutTargets(provider: Provider, largest: boolean): FanoutTargets {
  return provider === 'openai' ? { tokensRatio: 0.8, coalesced: true } : { tokensRatio: largest ? 0.9 : 0.8, coalesced: false }
}

export function fanoutRows(label: string, project: ThroughputFigures, baseline: ThroughputFigures, targets: FanoutTargets): Row[] {
  const perFrame = project.tokensPerFrame ?? 1
  const rows = [
    row({ scenario: 'fanout', case: label, metric: 'tokens per second', unit: '1/s', project: project.tokensPerSecond, baseline: baseline.tokensPerSecond, target: { kind: 'ratio-at-least', value: targets.tokensRatio } }),
    row({ scenario: 'fanout', case: label, metric: 'upstream tokens per token frame', unit: 'ratio', project: project.tokensPerFrame, baseline: baseline.tokensPerFrame, target: { kind: 'none' } }),
    row({ scenario: 'fanout', case: label, metric: 'server CPU per upstream token', unit: 'µs', project: project.cpuUsPerToken, baseline: baseline.cpuUsPerToken, target: { kind: 'none' } }),
    row({ scenario: 'fanout', case: label, metric: 'server CPU in the kernel per token frame', unit: 'µs', project: project.systemUsPerFrame, baseline: baseline.systemUsPerFrame, target: { kind: 'none' } }),
    row({ scenario: 'fanout', case: label, metric: 'server CPU share of one core', unit: 'ratio', project: project.cpuShare, baseline: baseline.cpuShare, target: { kind: 'none' } }),
  ]
  if (targets.coalesced) {
    // The project's upstream tokens per second against the baseline's frames per second (one token each).
    rows.push(
      row({
        scenario: 'fanout',
        case: label,
        metric: 'coalesced fan-out: tokens per second vs baseline one frame per token',
        unit: '1/s',
        project: project.tokensPerSecond,
        baseline: baseline.framesPerSecond,
        target: { kind: 'ratio-at-least', value: 1.5 },
        note: `${perFrame.toFixed(2)} upstream tokens per project frame`,
      }),
    )
  }
  return rows
}
