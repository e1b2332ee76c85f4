/**
 * (b) Handshake rate, JWT verification included: `handshakes` connections opened with
 * `handshakeInflight` in flight; connects/s and server CPU µs per handshake, median over
 * repetitions that alternate which server goes first. A short warm-up opens and closes a
 * few connections first, so the JIT is not measured. A third side, the framework floor
 * (floor-server.ts: Fastify, @fastify/websocket and @fastify/jwt with nothing of ours), is
 * measured the same way and reported for information: against the baseline it is what the
 * mandated stack costs, against the project what our own code adds.
 */
import type { SideKind } from '../children.ts'
import { measureWarmHandshakes, medianFigure, sideOrder, withServer, type BenchContext, type HandshakeFigures } from '../context.ts'
import { row, type ScenarioResult } from '../report.ts'

const FLOOR_VS_BASELINE = 'Fastify floor (left) vs baseline (right)'
const PROJECT_VS_FLOOR = 'project (left) vs Fastify floor (right)'

/** Project and baseline alternate which goes first; the floor goes last, then first. */
export function handshakeOrder(rep: number): SideKind[] {
  return rep % 2 === 0 ? [...sideOrder(rep), 'floor'] : ['floor', ...sideOrder(rep)]
}

export async function handshake(ctx: BenchContext): Promise<ScenarioResult> {
  const { sizes } = ctx
  const reps: Record<SideKind, HandshakeFigures[]> = { project: [], baseline: [], floor: [] }
  for (let rep = 0; rep < sizes.handshakeReps; rep++) {
    for (const kind of handshakeOrder(rep)) {
      ctx.progress(`handshake: ${kind}, ${sizes.handshakes} connections (repetition ${rep + 1})`)
      reps[kind].push(
        await withServer(ctx, kind, {}, (server) => measureWarmHandshakes(ctx, server, sizes.handshakes)),
      )
    }
  }
  const med = (kind: SideKind, pick: (figures: HandshakeFigures) => number | null) => medianFigure(reps[kind], pick)
  const label = `${sizes.handshakes} connects, ${sizes.handshakeInflight} in flight`
  return {
    scenario: 'handshake',
    rows: [
      row({ scenario: 'handshake', case: label, metric: 'handshakes per second', unit: '1/s', project: med('project', (f) => f.perSecond), baseline: med('baseline', (f) => f.perSecond), target: { kind: 'ratio-at-least', value: 0.8 } }),
      row({ scenario: 'handshake', case: label, metric: 'server CPU per handshake', unit: 'µs', project: med('project', (f) => f.cpuUsPerHandshake), baseline: med('baseline', (f) => f.cpuUsPerHandshake), target: { kind: 'none' } }),
      row({ scenario: 'handshake', case: label, metric: 'failed handshakes', unit: 'count', project: reps.project.reduce((sum, f) => sum + f.failed, 0), baseline: reps.baseline.reduce((sum, f) => sum + f.failed, 0), target: { kind: 'equals', value: 0 } }),
      row({ scenario: 'handshake', case: label, metric: 'handshakes per second', unit: '1/s', project: med('floor', (f) => f.perSecond), baseline: med('baseline', (f) => f.perSecond), target: { kind: 'none' }, note: FLOOR_VS_BASELINE }),
      row({ scenario: 'handshake', case: label, metric: 'server CPU per handshake', unit: 'µs', project: med('floor', (f) => f.cpuUsPerHandshake), baseline: med('baseline', (f) => f.cpuUsPerHandshake), target: { kind: 'none' }, note: FLOOR_VS_BASELINE }),
      row({ scenario: 'handshake', case: label, metric: 'handshakes per second', unit: '1/s', project: med('project', (f) => f.perSecond), baseline: med('floor', (f) => f.perSecond), target: { kind: 'none' }, note: PROJECT_VS_FLOOR }),
    ],
    details: reps,
    histograms: [],
  }
}
