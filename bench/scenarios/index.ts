import type { BenchContext } from '../context.ts'
import type { ScenarioName } from '../options.ts'
import type { ScenarioResult } from '../report.ts'
import { cancel } from './cancel.ts'
import { clusterFanout } from './cluster-fanout.ts'
import { fanout } from './fanout.ts'
import { handshake } from './handshake.ts'
import { idle } from './idle.ts'
import { latency } from './latency.ts'
import { logging } from './logging.ts'
import { redisCycles } from './redis-cycles.ts'
import { redisFanout } from './redis-fanout.ts'

export const scenarios: Record<ScenarioName, (ctx: BenchContext) => Promise<ScenarioResult>> = {
  idle,
  handshake,
  fanout,
  latency,
  cancel,
  logging,
  'redis-fanout': redisFanout,
  'redis-cycles': redisCycles,
  'cluster-fanout': clusterFanout,
}
