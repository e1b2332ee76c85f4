/** The orchestrator's handles on its child processes: upstream, servers, load workers. */
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ConfigSchema } from '../src/config.ts'
import { ChildHandle } from './ipc.ts'
import type { CycleArgs, CycleResult } from './cycles.ts'
import type { CancelRecord, Counters, LoadGroup, OpenResult, Sample, Status } from './load-client.ts'
import type { ServerStats } from './server-stats.ts'
import { sumCounts } from './stats.ts'

const here = import.meta.dirname
const START_TIMEOUT_MS = 20_000
const STOP_TIMEOUT_MS = 5000
/** Generous: a saturated child answers late (its IPC waits behind everything queued before it). */
const REQUEST_TIMEOUT_MS = 30_000

/** Signs the load clients' tokens and verifies them in both servers. */
export const BENCH_SECRET = 'bench-secret-bench-secret-bench-secret!'

/**
 * The orchestrator's environment without anything the service would read as config (a
 * developer's REDIS_URL or OPENAI_API_KEY must not leak into a server under test).
 */
export function cleanEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const clean = { ...env }
  for (const key of Object.keys(ConfigSchema.properties)) delete clean[key]
  return clean
}

export interface UpstreamHandle {
  baseURL: string
  /** hrtime (ns) at which the upstream saw each id-carrying request closed by its client. */
  closedAt: Map<string, number>
  stop(): Promise<void>
}

export async function startUpstream(): Promise<UpstreamHandle> {
  const child = new ChildHandle(join(here, 'upstream.ts'), { env: cleanEnv(), label: 'upstream' })
  const closedAt = new Map<string, number>()
  child.on('closed', (data) => {
    const { id, atNs } = data as { id: string; atNs: number }
    closedAt.set(id, atNs)
  })
  const { baseURL } = await child.once<{ baseURL: string }>('ready', START_TIMEOUT_MS)
  return { baseURL, closedAt, stop: () => child.stop(STOP_TIMEOUT_MS) }
}

export type ServerKind = 'project' | 'baseline'

/** Every server the bench starts: the two sides, and the handshake scenario's framework floor (floor-server.ts). */
export type SideKind = ServerKind | 'floor'

const SERVER_FILES: Record<SideKind, string> = { project: 'project-server.ts', baseline: 'baseline-server.ts', floor: 'floor-server.ts' }

/** Where the project keeps its sessions: in memory (absent), or on a Redis under a key prefix of the run's own. */
export interface StoreChoice {
  url: string
  /** A Redis Cluster: `url` is the seed node (REDIS_CLUSTER=true). */
  cluster: boolean
  prefix: string
}

export interface ServerOptions {
  provider: 'mock' | 'openai'
  upstreamURL: string
  logLevel: 'warn' | 'info'
  /** The project's session store; the baseline has none. */
  store?: StoreChoice
  /** When profiling: --cpu-prof profiles go to <profileDir>/<kind>/. */
  profileDir?: string
}

/**
 * The project's config for the bench: the shipped defaults except what a load test must
 * lift (per-user caps: every client is its own user anyway), an instant mock, history kept
 * short (the baseline keeps none, and history would grow every upstream request), and no
 * grace periods (runs of dropped clients end at once, shutdown is immediate).
 */
export function serverEnv(kind: SideKind, options: ServerOptions): NodeJS.ProcessEnv {
  const common = {
    JWT_SECRET: BENCH_SECRET,
    MODEL_PROVIDER: options.provider,
    MOCK_TOKEN_DELAY_MS: '0',
    OPENAI_BASE_URL: options.upstreamURL,
    PORT: '0',
  }
  if (kind !== 'project') return { ...cleanEnv(), ...common }
  const store = options.store
  return {
    ...cleanEnv(),
    ...common,
    ...(store ? { REDIS_URL: store.url, REDIS_KEY_PREFIX: store.prefix, ...(store.cluster ? { REDIS_CLUSTER: 'true' } : {}) } : {}),
    NODE_ENV: 'production',
    HOST: '127.0.0.1',
    LOG_LEVEL: options.logLevel,
    OPENAI_API_KEY: 'bench',
    HISTORY_MAX_MESSAGES: '2',
    MAX_CONNECTIONS_PER_USER: '1000',
    RATE_LIMIT_MESSAGES: '100000000',
    RESUME_GRACE_MS: '0',
    SHUTDOWN_GRACE_MS: '0',
  }
}

/** Kernel clock ticks per second, the unit of /proc/<pid>/stat times. */
const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim())

/** utime and stime (clock ticks) from a /proc/<pid>/stat line; the command name may hold spaces and parentheses. */
export function cpuTicks(stat: string): { user: number; system: number } {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // After the name: state is field 3 of the man page, utime 14, stime 15.
  return { user: Number(fields[11]), system: Number(fields[12]) }
}

export interface CpuTimes {
  /** User + system. */
  totalUs: number
  /** In the kernel: system calls (a socket write is most of it), page faults. */
  systemUs: number
}

/** CPU time the process has used, µs, at clock-tick resolution. */
export function cpuTimesUs(pid: number): CpuTimes {
  const { user, system } = cpuTicks(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  return { totalUs: ((user + system) * 1e6) / CLOCK_TICKS, systemUs: (system * 1e6) / CLOCK_TICKS }
}

/** CPU time (user + system) the process has used, µs. */
export function cpuTimeUs(pid: number): number {
  return cpuTimesUs(pid).totalUs
}

/** The run-queue wait (µs) in a /proc/<pid>/schedstat line: its second field, in ns; null if malformed. */
export function schedstatWaitUs(line: string): number | null {
  const waitedNs = /^\d+ (\d+)/.exec(line)?.[1]
  return waitedNs === undefined ? null : Number(waitedNs) / 1000
}

/**
 * How long the process's main thread (the event loop) has waited on a run queue for a CPU, µs.
 * Null where the kernel does not report it.
 */
export function runQueueWaitUs(pid: number): number | null {
  try {
    return schedstatWaitUs(readFileSync(`/proc/${pid}/schedstat`, 'utf8'))
  } catch {
    return null
  }
}

export interface ServerHandle {
  kind: SideKind
  url: string
  pid: number
  /** Memory as the server reports it (IPC: ask when it is idle). */
  stats(options: { gc: boolean }): Promise<ServerStats>
  /** CPU time used so far, µs (/proc, answered even when the server is saturated). */
  cpuUs(): number
  /** The same, with the kernel's part of it. */
  cpuTimes(): CpuTimes
  /** Time its event loop waited for a CPU so far, µs (runQueueWaitUs). */
  runQueueWaitUs(): number | null
  stop(): Promise<void>
}

export async function startServer(kind: SideKind, options: ServerOptions): Promise<ServerHandle> {
  const file = join(here, SERVER_FILES[kind])
  const execArgv = ['--expose-gc']
  if (options.profileDir) execArgv.push('--cpu-prof', `--cpu-prof-dir=${join(options.profileDir, kind)}`)
  const child = new ChildHandle(file, { env: serverEnv(kind, options), execArgv, label: `${kind} server` })
  const { port } = await child.once<{ port: number }>('ready', START_TIMEOUT_MS)
  return {
    kind,
    url: `ws://127.0.0.1:${port}/ws/agent`,
    pid: child.pid,
    stats: (statsOptions) => child.request<ServerStats>('stats', statsOptions, REQUEST_TIMEOUT_MS),
    cpuUs: () => cpuTimeUs(child.pid),
    cpuTimes: () => cpuTimesUs(child.pid),
    runQueueWaitUs: () => runQueueWaitUs(child.pid),
    stop: () => child.stop(STOP_TIMEOUT_MS),
  }
}

/** `total` split over `parts` as evenly as possible. */
export function share(total: number, parts: number, index: number): number {
  return Math.floor(total / parts) + (index < total % parts ? 1 : 0)
}

const SUMMED = ['tokenFrames', 'tokens', 'completes', 'cancelled', 'miscountedRuns', 'watchFrames', 'watchTokens', 'watchErrors'] as const

export function mergeSamples(samples: readonly Sample[]): Sample {
  const counters: Counters = { tokenFrames: 0, tokens: 0, completes: 0, cancelled: 0, miscountedRuns: 0, watchFrames: 0, watchTokens: 0, watchErrors: 0, errors: {} }
  const latenciesUs: number[] = []
  const cancels: CancelRecord[] = []
  let atNs = 0
  for (const sample of samples) {
    for (const key of SUMMED) counters[key] += sample.counters[key]
    latenciesUs.push(...sample.latenciesUs)
    cancels.push(...sample.cancels)
    atNs = Math.max(atNs, sample.atNs)
  }
  counters.errors = sumCounts(samples.map((sample) => sample.counters.errors))
  return { counters, latenciesUs, cancels, atNs }
}

/** A group as the orchestrator states it: `count` connections over all workers. */
export type GroupSpec = Omit<LoadGroup, 'from'>

/** The load workers, driven together: counts are totals, split evenly over the workers. */
export class LoadPool {
  readonly #workers: ChildHandle[]
  readonly #localAddresses: string[]

  private constructor(workers: ChildHandle[], localAddresses: string[]) {
    this.#workers = workers
    this.#localAddresses = localAddresses
  }

  static async start(workers: number, sourceAddresses: number): Promise<LoadPool> {
    const children = Array.from(
      { length: workers },
      (_, i) => new ChildHandle(join(here, 'load-client.ts'), { env: { ...cleanEnv(), BENCH_WORKER_NAME: `w${i}` }, label: `load worker ${i}` }),
    )
    const pool = new LoadPool(children, Array.from({ length: sourceAddresses }, (_, i) => `127.0.0.${i + 2}`))
    await Promise.all(children.map((child) => child.once('ready', START_TIMEOUT_MS)))
    return pool
  }

  #all<T>(cmd: string, args: (index: number) => unknown, timeoutMs = REQUEST_TIMEOUT_MS): Promise<T[]> {
    return Promise.all(this.#workers.map((worker, i) => worker.request<T>(cmd, args(i), timeoutMs)))
  }

  /**
   * Opens `total` authenticated connections, `inflight` handshakes at a time over all workers.
   * `watch`: they watch the sessions of the first `total` connections opened before them.
   */
  async open(url: string, total: number, inflight: number, timeoutMs: number, options: { watch?: boolean } = {}): Promise<OpenResult> {
    const parts = this.#workers.length
    const results = await this.#all<OpenResult>(
      'open',
      (i) => ({
        url,
        secret: BENCH_SECRET,
        count: share(total, parts, i),
        inflight: Math.max(1, share(inflight, parts, i)),
        localAddresses: this.#localAddresses,
        timeoutMs,
        ...options,
      }),
      timeoutMs + 60_000,
    )
    return {
      opened: results.reduce((sum, r) => sum + r.opened, 0),
      failed: results.reduce((sum, r) => sum + r.failed, 0),
      startNs: Math.min(...results.map((r) => r.startNs)),
      endNs: Math.max(...results.map((r) => r.endNs)),
      errors: results.flatMap((r) => r.errors),
    }
  }

  /** Starts the groups' chat loops on the open connections, first group on the first ones. */
  async run(groups: readonly GroupSpec[]): Promise<void> {
    const parts = this.#workers.length
    await this.#all('run', (i) => {
      let from = 0
      return {
        groups: groups.map((group) => {
          const count = share(group.count, parts, i)
          const placed = { ...group, from, count }
          from += count
          return placed
        }),
      }
    })
  }

  async sample(): Promise<Sample> {
    return mergeSamples(await this.#all<Sample>('sample', () => null))
  }

  async waitRuns(timeoutMs: number): Promise<number> {
    const results = await this.#all<{ unfinished: number }>('waitRuns', () => ({ timeoutMs }), timeoutMs + REQUEST_TIMEOUT_MS)
    return results.reduce((sum, r) => sum + r.unfinished, 0)
  }

  async halt(timeoutMs = 5000): Promise<number> {
    const results = await this.#all<{ stuck: number }>('halt', () => ({ timeoutMs }), timeoutMs + REQUEST_TIMEOUT_MS)
    return results.reduce((sum, r) => sum + r.stuck, 0)
  }

  async status(): Promise<Status> {
    const results = await this.#all<Status>('status', () => null)
    const sum = (key: 'open' | 'running' | 'streaming') => results.reduce((total, r) => total + r[key], 0)
    return { open: sum('open'), running: sum('running'), streaming: sum('streaming'), unexpectedCloses: sumCounts(results.map((r) => r.unexpectedCloses)) }
  }

  /** `total` connect → chat → close cycles (cycles.ts), `inflight` at a time over all workers. */
  async cycles(args: Omit<CycleArgs, 'secret' | 'localAddresses'>): Promise<CycleResult> {
    const parts = this.#workers.length
    const results = await this.#all<CycleResult>(
      'cycles',
      (i) => ({ ...args, secret: BENCH_SECRET, localAddresses: this.#localAddresses, count: share(args.count, parts, i), inflight: Math.max(1, share(args.inflight, parts, i)) }),
      // Bounded by the cycles' own budgets; this only catches a worker that stopped answering.
      args.timeoutMs * Math.ceil(args.count / Math.max(1, args.inflight)) + REQUEST_TIMEOUT_MS,
    )
    return {
      completed: results.reduce((sum, r) => sum + r.completed, 0),
      failed: results.reduce((sum, r) => sum + r.failed, 0),
      errors: results.flatMap((r) => r.errors).slice(0, 5),
    }
  }

  async closeAll(timeoutMs = 10_000): Promise<void> {
    await this.#all('closeAll', () => ({ timeoutMs }), timeoutMs + REQUEST_TIMEOUT_MS)
  }

  async stop(): Promise<void> {
    await Promise.all(this.#workers.map((worker) => worker.stop(STOP_TIMEOUT_MS)))
  }
}
