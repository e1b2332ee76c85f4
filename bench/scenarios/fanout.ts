/**
 * (c) Token fan-out from an instant upstream: `fanoutSessions` concurrent sessions, each
 * running chats back to back, from the offline mock model (MOCK_TOKEN_DELAY_MS=0, in
 * process) and from the OpenAI-format upstream (a flood of one-word chunks, in its own
 * process). Tokens delivered per second and server CPU µs per token frame.
 */
import type { ServerKind } from '../children.ts'
import { HANDSHAKE_TIMEOUT_MS, measureWindow, sideOrder, throughput, withServer, type BenchContext, type ThroughputFigures } from '../context.ts'
import { floodPrompt, mockPrompt } from '../prompts.ts'
import { row, type Row, type ScenarioResult } from '../report.ts'

/** Words the mock adds around the echoed prompt. */
const MOCK_FRAMING_WORDS = 17
/** Above this many upstream tokens per frame, the project is coalescing. */
const COALESCING_THRESHOLD = 1.05

const PROVIDERS = ['mock', 'openai'] as const

export async function fanout(ctx: BenchContext): Promise<ScenarioResult> {
  const { sizes } = ctx
  const figures: Record<string, Record<ServerKind, ThroughputFigures>> = {}
  for (const [u, provider] of PROVIDERS.entries()) {
    const prompt = provider === 'mock' ? mockPrompt(Math.max(1, sizes.fanoutTokens - MOCK_FRAMING_WORDS)) : floodPrompt(sizes.fanoutTokens)
    for (const kind of sideOrder(u)) {
      await withServer(ctx, kind, { provider }, async (server) => {
        let open = 0
        for (const sessions of sizes.fanoutSessions) {
          ctx.progress(`fanout: ${kind}, ${provider} upstream, ${sessions} sessions`)
          open += (await ctx.pool.open(server.url, sessions - open, sizes.handshakeInflight, HANDSHAKE_TIMEOUT_MS)).opened
          await ctx.pool.run([{ count: sessions, prompt, stamped: false, cancelAfterTokens: null, maxRuns: null, gapMs: 0 }])
          const window = await measureWindow(ctx, server)
          await ctx.pool.halt()
          ;(figures[`${provider}, ${sessions} sessions`] ??= {} as Record<ServerKind, ThroughputFigures>)[kind] = throughput(window)
        }
      })
    }
  }
  const rows = Object.entries(figures).flatMap(([label, { project, baseline }]) => fanoutRows(label, project, baseline))
  return { scenario: 'fanout', rows, details: figures, histograms: [] }
}

export function fanoutRows(label: string, project: ThroughputFigures, baseline: ThroughputFigures): Row[] {
  const coalescing = project.coalescing ?? 1
  const coalesces = coalescing > COALESCING_THRESHOLD
  return [
    row({ scenario: 'fanout', case: label, metric: 'tokens per second', unit: '1/s', project: project.tokensPerSecond, baseline: baseline.tokensPerSecond, target: { kind: 'ratio-at-least', value: 0.8 } }),
    row({ scenario: 'fanout', case: label, metric: 'server CPU per token frame', unit: 'µs', project: project.cpuUsPerFrame, baseline: baseline.cpuUsPerFrame, target: { kind: 'none' } }),
    row({ scenario: 'fanout', case: label, metric: 'server CPU share of one core', unit: 'ratio', project: project.cpuShare, baseline: baseline.cpuShare, target: { kind: 'none' } }),
    // Coalescing carries several upstream tokens per frame; its target is against the baseline's one-frame rate.
    row({
      scenario: 'fanout',
      case: label,
      metric: 'tokens per second, coalesced, vs baseline one frame per token',
      unit: '1/s',
      project: coalesces ? project.tokensPerSecond : null,
      baseline: baseline.framesPerSecond,
      target: { kind: 'ratio-at-least', value: 1.5 },
      ...(coalesces ? {} : { note: `n/a: the project sent one frame per token (${coalescing.toFixed(2)} tokens per frame)` }),
    }),
  ]
}
