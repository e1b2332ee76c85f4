/** The bench's command line and its two sizes: the full run and the quick CI smoke. */
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export const SCENARIOS = ['idle', 'handshake', 'fanout', 'latency', 'cancel', 'logging', 'redis-fanout', 'redis-cycles', 'cluster-fanout'] as const
export type ScenarioName = (typeof SCENARIOS)[number]
/** The scenarios that need a Redis (their rows are n/a without one). */
export const STORE_SCENARIOS: readonly ScenarioName[] = ['redis-fanout', 'redis-cycles', 'cluster-fanout']

export interface Sizes {
  /** Keep servers across scenarios (quick: start-up would dominate) instead of fresh ones per scenario. */
  reuseServers: boolean
  /** Load-generator processes. */
  workers: number
  /** Source addresses 127.0.0.2 … for the clients. */
  sourceAddresses: number
  /** (a) Connection counts held idle, measured after each step. */
  idleSteps: number[]
  idleSettleMs: number
  idleHoldMs: number
  /** (b) Handshakes per repetition, in flight at once, repetitions (alternating which server goes first). */
  handshakes: number
  handshakeInflight: number
  handshakeReps: number
  /** Fan-out measurements per side, order alternating; the report gives their medians. */
  fanoutReps: number
  /** (c) Concurrent sessions, tokens per run, warm-up and measured window. */
  fanoutSessions: number[]
  fanoutTokens: number
  warmupMs: number
  windowMs: number
  /** (d) Paced probe sessions, their token interval and tokens per run; paced background sessions (heavy load). */
  latencyProbes: number
  latencyIntervalMs: number
  latencyTokens: number
  latencyBackground: number
  /** Flooding sessions: the saturating load of (d) and the load (c) under which (e) cancels. */
  loadSessions: number
  /** (e) Cancelling sessions (one cancel at a time each) and cancels each. */
  cancelProbes: number
  cancelsPerProbe: number
  /** Handshakes and sessions for the info-vs-warn logging cost. */
  loggingHandshakes: number
  loggingSessions: number
  /** Sessions of the Redis fan-out (chatting on one instance, watched from another). */
  redisSessions: number[]
  /** connect → chat → close cycles between the fresh and the used instance's probes, in flight at once, tokens per chat. */
  cycles: number
  cyclesInflight: number
  cycleTokens: number
  /** The probe whose cost is compared: sessions, runs each, tokens per run. */
  probeSessions: number
  probeRuns: number
  probeTokens: number
  /** After the cycles, before the second probe: closed sessions' runs end, timers fire. */
  cyclesSettleMs: number
}

export const FULL: Sizes = {
  reuseServers: false,
  workers: 2,
  sourceAddresses: 8,
  idleSteps: [5000, 19_500],
  idleSettleMs: 1000,
  idleHoldMs: 2000,
  handshakes: 5000,
  handshakeInflight: 100,
  handshakeReps: 5,
  fanoutReps: 3,
  fanoutSessions: [100, 1000],
  fanoutTokens: 500,
  warmupMs: 1000,
  windowMs: 4000,
  latencyProbes: 20,
  latencyIntervalMs: 10,
  latencyTokens: 100,
  latencyBackground: 100,
  loadSessions: 100,
  cancelProbes: 2,
  cancelsPerProbe: 150,
  loggingHandshakes: 2000,
  loggingSessions: 100,
  redisSessions: [100, 1000],
  cycles: 1000,
  cyclesInflight: 10,
  cycleTokens: 20,
  probeSessions: 20,
  probeRuns: 10,
  probeTokens: 500,
  cyclesSettleMs: 2000,
}

export const QUICK: Sizes = {
  reuseServers: true,
  workers: 2,
  sourceAddresses: 2,
  idleSteps: [20, 50],
  idleSettleMs: 50,
  idleHoldMs: 100,
  handshakes: 40,
  handshakeInflight: 8,
  handshakeReps: 1,
  fanoutReps: 1,
  fanoutSessions: [4, 8],
  fanoutTokens: 40,
  warmupMs: 50,
  windowMs: 200,
  latencyProbes: 2,
  latencyIntervalMs: 5,
  latencyTokens: 20,
  latencyBackground: 4,
  loadSessions: 4,
  cancelProbes: 1,
  cancelsPerProbe: 3,
  loggingHandshakes: 30,
  loggingSessions: 4,
  redisSessions: [4],
  cycles: 20,
  cyclesInflight: 2,
  cycleTokens: 5,
  probeSessions: 2,
  probeRuns: 2,
  probeTokens: 20,
  cyclesSettleMs: 100,
}

export interface BenchOptions {
  mode: 'quick' | 'full'
  only: ScenarioName[]
  outDir: string
  /** Everything is killed and the run fails past this. */
  hardTimeoutMs: number
  /** Run both servers under --cpu-prof, profiles into <outDir>/profiles/{project,baseline}. */
  profile: boolean
  /** Exit 1 when a row misses its target. */
  strict: boolean
  /** The standalone Redis and the Redis Cluster seed (host:port) of the Redis scenarios. */
  redisURL: string
  clusterSeed: string
  sizes: Sizes
}

/** Outside the tracked tree: a reference run is committed with `--out docs/bench`. */
export function defaultOutDir(): string {
  return join(tmpdir(), 'agent-gateway-bench')
}

export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379'
export const DEFAULT_CLUSTER_SEED = '127.0.0.1:7001'

export class UsageError extends Error {
  override name = 'UsageError'
}

export const USAGE = `usage: node bench/run.ts [--quick] [--only <scenario>[,<scenario>…]] [--out <dir>] [--timeout <seconds>] [--profile] [--strict]
                          [--redis <url>] [--redis-cluster <host:port>]
scenarios: ${SCENARIOS.join(', ')}
--out defaults to ${defaultOutDir()}; --strict exits 1 when a target is missed`

function isScenario(name: string): name is ScenarioName {
  return (SCENARIOS as readonly string[]).includes(name)
}

export function parseArgs(argv: readonly string[], outDirDefault = defaultOutDir()): BenchOptions {
  let quick = false
  let profile = false
  let strict = false
  let only: ScenarioName[] = [...SCENARIOS]
  let outDir = outDirDefault
  let redisURL = DEFAULT_REDIS_URL
  let clusterSeed = DEFAULT_CLUSTER_SEED
  let timeoutSeconds: number | undefined
  const args = [...argv]
  while (args.length > 0) {
    const arg = args.shift() as string
    const value = () => {
      const next = args.shift()
      if (next === undefined) throw new UsageError(`${arg} needs a value`)
      return next
    }
    if (arg === '--quick') quick = true
    else if (arg === '--profile') profile = true
    else if (arg === '--strict') strict = true
    else if (arg === '--out') outDir = value()
    else if (arg === '--redis') redisURL = value()
    else if (arg === '--redis-cluster') {
      clusterSeed = value()
      if (!/^[^:\s]+:\d+$/.test(clusterSeed)) throw new UsageError('--redis-cluster needs host:port')
    }
    else if (arg === '--only') {
      const names = value().split(',').filter(Boolean)
      const unknown = names.filter((name) => !isScenario(name))
      if (unknown.length > 0 || names.length === 0) throw new UsageError(`unknown scenario ${unknown.join(', ')}`)
      only = names as ScenarioName[]
    } else if (arg === '--timeout') {
      timeoutSeconds = Number(value())
      if (!(timeoutSeconds > 0)) throw new UsageError('--timeout needs a positive number of seconds')
    } else throw new UsageError(`unknown argument ${arg}`)
  }
  return {
    mode: quick ? 'quick' : 'full',
    only,
    outDir,
    profile,
    strict,
    redisURL,
    clusterSeed,
    hardTimeoutMs: (timeoutSeconds ?? (quick ? 90 : 900)) * 1000,
    sizes: quick ? QUICK : FULL,
  }
}
