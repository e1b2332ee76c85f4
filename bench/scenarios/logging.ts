/**
 * What info-level logging costs the project: the project at LOG_LEVEL=info against itself
 * at LOG_LEVEL=warn (the bench's setting), on handshakes and on mock-model fan-out. Both
 * columns are the project; the ratio is info / warn (target: handshakes at info ≥ 0.8× warn).
 * Logs go to /dev/null, so this is the serialisation cost without the disk. Like the handshake
 * scenario: a warm-up before each measurement (a cold JIT swung one measurement by ±30%), the
 * median over `handshakeReps` repetitions that alternate which level goes first; the fan-out
 * is measured once per level, on a server of its own.
 */
import { alternating, HANDSHAKE_TIMEOUT_MS, measureWarmHandshakes, measureWindow, medianFigure, throughput, withServer, type BenchContext, type HandshakeFigures, type ThroughputFigures } from '../context.ts'
import { mockPrompt } from '../prompts.ts'
import { row, type ScenarioResult } from '../report.ts'

const LEVELS = ['info', 'warn'] as const
type Level = (typeof LEVELS)[number]

export async function logging(ctx: BenchContext): Promise<ScenarioResult> {
  const { sizes } = ctx
  const handshakeReps: Record<Level, HandshakeFigures[]> = { info: [], warn: [] }
  const fanouts = {} as Record<Level, ThroughputFigures>
  for (let rep = 0; rep < sizes.handshakeReps; rep++) {
    for (const level of alternating(rep, LEVELS)) {
      ctx.progress(`logging: project at LOG_LEVEL=${level} (repetition ${rep + 1})`)
      handshakeReps[level].push(await withServer(ctx, 'project', { logLevel: level }, (server) => measureWarmHandshakes(ctx, server, sizes.loggingHandshakes)))
    }
  }
  for (const level of LEVELS) {
    ctx.progress(`logging: project at LOG_LEVEL=${level}, mock fan-out`)
    fanouts[level] = await withServer(ctx, 'project', { logLevel: level }, async (server) => {
      await ctx.pool.open(server.url, sizes.loggingSessions, sizes.handshakeInflight, HANDSHAKE_TIMEOUT_MS)
      await ctx.pool.run([{ count: sizes.loggingSessions, prompt: mockPrompt(sizes.fanoutTokens), stamped: false, cancelAfterTokens: null, maxRuns: null, gapMs: 0 }])
      return throughput(await measureWindow(ctx, server))
    })
  }
  const med = (level: Level, pick: (figures: HandshakeFigures) => number | null) => medianFigure(handshakeReps[level], pick)
  const note = 'project at LOG_LEVEL=info (left) vs LOG_LEVEL=warn (right)'
  return {
    scenario: 'logging',
    rows: [
      row({ scenario: 'logging', case: `${sizes.loggingHandshakes} connects`, metric: 'handshakes per second', unit: '1/s', project: med('info', (f) => f.perSecond), baseline: med('warn', (f) => f.perSecond), target: { kind: 'ratio-at-least', value: 0.8 }, note }),
      row({ scenario: 'logging', case: `${sizes.loggingHandshakes} connects`, metric: 'server CPU per handshake', unit: 'µs', project: med('info', (f) => f.cpuUsPerHandshake), baseline: med('warn', (f) => f.cpuUsPerHandshake), target: { kind: 'none' }, note }),
      row({ scenario: 'logging', case: `mock, ${sizes.loggingSessions} sessions`, metric: 'tokens per second', unit: '1/s', project: fanouts.info.tokensPerSecond, baseline: fanouts.warn.tokensPerSecond, target: { kind: 'none' }, note }),
    ],
    details: { handshakes: handshakeReps, fanout: fanouts },
    histograms: [],
  }
}
