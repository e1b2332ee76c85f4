/**
 * What info-level logging costs the project: the project at LOG_LEVEL=info against itself
 * at LOG_LEVEL=warn (the bench's setting), on handshakes and on mock-model fan-out. Both
 * columns are the project; the ratio is info / warn (target: handshakes at info ≥ 0.8× warn).
 * Logs go to /dev/null, so this is the serialisation cost without the disk.
 */
import { HANDSHAKE_TIMEOUT_MS, measureHandshakes, measureWindow, throughput, withServer, type BenchContext, type HandshakeFigures, type ThroughputFigures } from '../context.ts'
import { mockPrompt } from '../prompts.ts'
import { row, type ScenarioResult } from '../report.ts'

const LEVELS = ['info', 'warn'] as const
type Level = (typeof LEVELS)[number]

export async function logging(ctx: BenchContext): Promise<ScenarioResult> {
  const { sizes } = ctx
  const figures = {} as Record<Level, { handshakes: HandshakeFigures; fanout: ThroughputFigures }>
  for (const level of LEVELS) {
    ctx.progress(`logging: project at LOG_LEVEL=${level}`)
    figures[level] = await withServer(ctx, 'project', { logLevel: level }, async (server) => {
      const handshakes = await measureHandshakes(ctx, server, sizes.loggingHandshakes)
      await ctx.pool.closeAll()
      await ctx.pool.open(server.url, sizes.loggingSessions, sizes.handshakeInflight, HANDSHAKE_TIMEOUT_MS)
      await ctx.pool.run([{ count: sizes.loggingSessions, prompt: mockPrompt(sizes.fanoutTokens), stamped: false, cancelAfterTokens: null, maxRuns: null, gapMs: 0 }])
      const fanout = throughput(await measureWindow(ctx, server))
      return { handshakes, fanout }
    })
  }
  const { info, warn } = figures
  const note = 'project at LOG_LEVEL=info (left) vs LOG_LEVEL=warn (right)'
  return {
    scenario: 'logging',
    rows: [
      row({ scenario: 'logging', case: `${sizes.loggingHandshakes} connects`, metric: 'handshakes per second', unit: '1/s', project: info.handshakes.perSecond, baseline: warn.handshakes.perSecond, target: { kind: 'ratio-at-least', value: 0.8 }, note }),
      row({ scenario: 'logging', case: `${sizes.loggingHandshakes} connects`, metric: 'server CPU per handshake', unit: 'µs', project: info.handshakes.cpuUsPerHandshake, baseline: warn.handshakes.cpuUsPerHandshake, target: { kind: 'none' }, note }),
      row({ scenario: 'logging', case: `mock, ${sizes.loggingSessions} sessions`, metric: 'tokens per second', unit: '1/s', project: info.fanout.tokensPerSecond, baseline: warn.fanout.tokensPerSecond, target: { kind: 'none' }, note }),
    ],
    details: figures,
    histograms: [],
  }
}
