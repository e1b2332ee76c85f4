/**
 * (a) Idle authenticated connections: held open at each step of `idleSteps`; RSS and heap
 * per connection are the least-squares slopes over (connections, bytes) after a forced GC.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { ServerKind } from '../children.ts'
import { HANDSHAKE_TIMEOUT_MS, sideOrder, withServer, type BenchContext } from '../context.ts'
import { row, type ScenarioResult } from '../report.ts'
import { slope } from '../stats.ts'

interface IdlePoint {
  connections: number
  rss: number
  heapUsed: number
}

interface IdleSide {
  points: IdlePoint[]
  rssPerConnection: number | null
  heapPerConnection: number | null
  /** Connections short of the target at the end: failed handshakes plus ones the server closed. */
  failures: number
  failedHandshakes: number
  closedByServer: Record<string, number>
  held: number
  errors: string[]
}

export async function idle(ctx: BenchContext): Promise<ScenarioResult> {
  const { sizes } = ctx
  const target = sizes.idleSteps.at(-1) as number
  const sides = {} as Record<ServerKind, IdleSide>
  for (const kind of sideOrder(0)) {
    ctx.progress(`idle: ${kind}, up to ${target} connections`)
    sides[kind] = await withServer(ctx, kind, {}, async (server) => {
      // A few connections first, so lazily compiled code and first-use caches are not
      // counted as the first step's connections.
      await ctx.pool.open(server.url, Math.ceil((sizes.idleSteps[0] as number) / 50), sizes.handshakeInflight, HANDSHAKE_TIMEOUT_MS)
      await ctx.pool.closeAll()
      const first = await server.stats({ gc: true })
      const points: IdlePoint[] = [{ connections: 0, rss: first.rss, heapUsed: first.heapUsed }]
      let opened = 0
      let failed = 0
      const errors: string[] = []
      for (const step of sizes.idleSteps) {
        const result = await ctx.pool.open(server.url, step - opened, sizes.handshakeInflight, HANDSHAKE_TIMEOUT_MS)
        opened += result.opened
        failed += result.failed
        errors.push(...result.errors)
        await sleep(sizes.idleSettleMs)
        const stats = await server.stats({ gc: true })
        points.push({ connections: opened, rss: stats.rss, heapUsed: stats.heapUsed })
      }
      await sleep(sizes.idleHoldMs)
      const status = await ctx.pool.status()
      return {
        points,
        rssPerConnection: slope(points.map((p) => ({ x: p.connections, y: p.rss }))),
        heapPerConnection: slope(points.map((p) => ({ x: p.connections, y: p.heapUsed }))),
        failures: target - status.open,
        failedHandshakes: failed,
        closedByServer: status.unexpectedCloses,
        held: status.open,
        errors: errors.slice(0, 5),
      }
    })
  }
  const label = `${target} connections`
  const { project, baseline } = sides
  return {
    scenario: 'idle',
    rows: [
      row({ scenario: 'idle', case: label, metric: 'RSS per connection', unit: 'bytes', project: project.rssPerConnection, baseline: baseline.rssPerConnection, target: { kind: 'ratio-at-most', value: 1.5 } }),
      row({ scenario: 'idle', case: label, metric: 'heap per connection', unit: 'bytes', project: project.heapPerConnection, baseline: baseline.heapPerConnection, target: { kind: 'none' } }),
      row({ scenario: 'idle', case: label, metric: 'failed or dropped connections', unit: 'count', project: project.failures, baseline: baseline.failures, target: { kind: 'equals', value: 0 } }),
    ],
    details: sides,
    histograms: [],
  }
}
