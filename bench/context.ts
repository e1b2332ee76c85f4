/** What every scenario gets, and the measuring steps they share. */
import { setTimeout as sleep } from 'node:timers/promises'
import { startServer, type LoadPool, type ServerHandle, type ServerKind, type ServerOptions, type SideKind, type UpstreamHandle } from './children.ts'
import type { Sample } from './load-client.ts'
import type { Sizes } from './options.ts'
import { median, perUnit, sumCounts } from './stats.ts'

export interface BenchContext {
  sizes: Sizes
  upstream: UpstreamHandle
  pool: LoadPool
  servers: Servers
  /** The Redis scenarios' standalone Redis and Redis Cluster seed (host:port). */
  redis: { url: string; clusterSeed: string }
  progress(message: string): void
}

type ServerChoice = Omit<ServerOptions, 'upstreamURL' | 'profileDir'>

/**
 * Starts the servers scenarios ask for. A full run gives every scenario fresh ones (nothing
 * left over from the previous scenario in their heaps); the quick run keeps them for reuse,
 * because there start-up would take longer than the measuring.
 */
export class Servers {
  readonly #reuse: boolean
  readonly #upstreamURL: string
  readonly #profileDir: string | undefined
  readonly #kept = new Map<string, ServerHandle>()

  constructor(options: { reuse: boolean; upstreamURL: string; profileDir: string | undefined }) {
    this.#reuse = options.reuse
    this.#upstreamURL = options.upstreamURL
    this.#profileDir = options.profileDir
  }

  async acquire(kind: SideKind, choice: ServerChoice): Promise<ServerHandle> {
    const key = `${kind} ${choice.provider} ${choice.logLevel}`
    const kept = this.#kept.get(key)
    if (kept) return kept
    const server = await this.fresh(kind, choice)
    if (this.#reuse) this.#kept.set(key, server)
    return server
  }

  /** A new server, never kept: the caller stops it (servers on a store of a scenario's own). */
  fresh(kind: SideKind, choice: ServerChoice): Promise<ServerHandle> {
    return startServer(kind, { ...choice, upstreamURL: this.#upstreamURL, ...(this.#profileDir ? { profileDir: this.#profileDir } : {}) })
  }

  async release(server: ServerHandle): Promise<void> {
    if (!this.#reuse) await server.stop()
  }

  async stopAll(): Promise<void> {
    const kept = [...this.#kept.values()]
    this.#kept.clear()
    await Promise.all(kept.map((server) => server.stop()))
  }
}

/** Handshake budget per connection; anything slower counts as a failure. */
export const HANDSHAKE_TIMEOUT_MS = 10_000

/** The pair in order on even repetitions, reversed on odd ones: drift on a shared machine hits both alike. */
export function alternating<T>(rep: number, pair: readonly [T, T]): T[] {
  return rep % 2 === 0 ? [pair[0], pair[1]] : [pair[1], pair[0]]
}

/** Alternates which server goes first. */
export function sideOrder(rep: number): ServerKind[] {
  return alternating(rep, ['project', 'baseline'])
}

/** A server of `kind` for `fn`; afterwards every client loop ends, every connection closes, the server is released. */
export async function withServer<T>(ctx: BenchContext, kind: SideKind, choice: Partial<ServerChoice>, fn: (server: ServerHandle) => Promise<T>): Promise<T> {
  const server = await ctx.servers.acquire(kind, { provider: 'mock', logLevel: 'warn', ...choice })
  try {
    return await fn(server)
  } finally {
    await ctx.pool.halt()
    await ctx.pool.closeAll()
    await ctx.servers.release(server)
  }
}

export interface Window {
  /** What the clients received during the window. */
  sample: Sample
  seconds: number
  /** Server CPU (user + system) spent during the window, µs (all the servers measured). */
  cpuUs: number
  /** The kernel's part of it. */
  systemCpuUs: number
  /** Share of one core the server used: near 1 means the server, not the clients, was the bound. */
  cpuShare: number
  /** From the start of the measurement until every session streamed (the warm-up comes after). */
  rampMs: number
}

/** Something else read at the window's edges (e.g. Redis's command counters). */
export interface WindowProbe {
  begin(): Promise<void>
  end(): Promise<void>
}

/** How long the sessions may take until each of them streams (1,000 runs started at once on a busy machine: seconds). */
const RAMP_TIMEOUT_MS = 30_000

/**
 * Waits (bounded) until every chatting session received a token since its loop started: the
 * warm-up starts in the steady state, not in the herd of first runs. How long it took, ms.
 */
async function rampUp(ctx: BenchContext): Promise<number> {
  const started = Date.now()
  for (let status = await ctx.pool.status(); status.streaming < status.running && Date.now() - started < RAMP_TIMEOUT_MS; status = await ctx.pool.status()) await sleep(50)
  return Date.now() - started
}

/** After a warm-up, what arrives at the clients and what the servers spend in one window. */
export async function measureWindow(ctx: BenchContext, server: ServerHandle | ServerHandle[], probe?: WindowProbe): Promise<Window> {
  const servers = Array.isArray(server) ? server : [server]
  const cpuTimes = () =>
    servers.reduce(
      (sum, s) => {
        const times = s.cpuTimes()
        return { totalUs: sum.totalUs + times.totalUs, systemUs: sum.systemUs + times.systemUs }
      },
      { totalUs: 0, systemUs: 0 },
    )
  const rampMs = await rampUp(ctx)
  await sleep(ctx.sizes.warmupMs)
  await ctx.pool.sample()
  await probe?.begin()
  const before = { cpu: cpuTimes(), atNs: process.hrtime.bigint() }
  await sleep(ctx.sizes.windowMs)
  const sample = await ctx.pool.sample()
  const after = cpuTimes()
  const spent = after.totalUs - before.cpu.totalUs
  const seconds = Number(process.hrtime.bigint() - before.atNs) / 1e9
  await probe?.end()
  return { sample, seconds, cpuUs: spent, systemCpuUs: after.systemUs - before.cpu.systemUs, cpuShare: spent / (seconds * 1e6), rampMs }
}

export interface HandshakeFigures {
  opened: number
  failed: number
  perSecond: number
  cpuUsPerHandshake: number | null
  errors: string[]
}

/**
 * Opens `count` connections at the configured concurrency: rate and server CPU per handshake.
 * No forced GC first: `gc()` clears what optimized code holds weakly, and V8 then deoptimizes
 * it (`--trace-deopt`: "embedded weak objects cleared", Fastify's route handler and the
 * upgrade's hooks among hundreds), so the window would measure the JIT tiering up again.
 */
export async function measureHandshakes(ctx: BenchContext, server: ServerHandle, count: number): Promise<HandshakeFigures> {
  const before = server.cpuUs()
  const result = await ctx.pool.open(server.url, count, ctx.sizes.handshakeInflight, HANDSHAKE_TIMEOUT_MS)
  const cpuUs = server.cpuUs() - before
  return {
    opened: result.opened,
    failed: result.failed,
    perSecond: result.opened / ((result.endNs - result.startNs) / 1e9),
    cpuUsPerHandshake: perUnit(cpuUs, result.opened),
    errors: result.errors,
  }
}

/** measureHandshakes after a warm-up (a tenth as many connections, opened and closed), so the JIT is not measured. */
export async function measureWarmHandshakes(ctx: BenchContext, server: ServerHandle, count: number): Promise<HandshakeFigures> {
  await ctx.pool.open(server.url, Math.ceil(count / 10), ctx.sizes.handshakeInflight, HANDSHAKE_TIMEOUT_MS)
  await ctx.pool.closeAll()
  return measureHandshakes(ctx, server, count)
}

/** The median of one figure over repetitions, those without it left out. */
export function medianFigure<T>(reps: readonly T[], pick: (figures: T) => number | null): number | null {
  return median(reps.map(pick).filter((value): value is number => value !== null))
}

export interface ThroughputFigures {
  /** Token frames delivered per second. */
  framesPerSecond: number
  /** Upstream tokens delivered per second, counted in the frames (coalesced frames carry several). */
  tokensPerSecond: number
  /** Upstream tokens per token frame (1 without coalescing); null without any frame. */
  tokensPerFrame: number | null
  cpuUsPerToken: number | null
  /** The kernel's part of the server CPU, per token frame (a frame is one socket write or more). */
  systemUsPerFrame: number | null
  cpuShare: number
  completes: number
  /** Runs whose frames' token count differs from their `complete` (should be 0: the count is right). */
  miscountedRuns: number
  /** Until every session streamed, before the warm-up and the window. */
  rampMs: number
  errors: Record<string, number>
}

/**
 * The median of each rate over repetitions of one measurement: one window per side is one
 * sample, and a window the shared machine slowed would decide the ratio alone. Counts of
 * completes, miscounted runs and errors are summed.
 */
export function medianThroughput(reps: readonly [ThroughputFigures, ...ThroughputFigures[]]): ThroughputFigures {
  // Figures every repetition has: their median is a number (reps is never empty).
  const med = (pick: (figures: ThroughputFigures) => number) => medianFigure(reps, pick) as number
  return {
    framesPerSecond: med((f) => f.framesPerSecond),
    tokensPerSecond: med((f) => f.tokensPerSecond),
    tokensPerFrame: medianFigure(reps, (f) => f.tokensPerFrame),
    cpuUsPerToken: medianFigure(reps, (f) => f.cpuUsPerToken),
    systemUsPerFrame: medianFigure(reps, (f) => f.systemUsPerFrame),
    cpuShare: med((f) => f.cpuShare),
    completes: reps.reduce((sum, f) => sum + f.completes, 0),
    miscountedRuns: reps.reduce((sum, f) => sum + f.miscountedRuns, 0),
    rampMs: med((f) => f.rampMs),
    errors: sumCounts(reps.map((f) => f.errors)),
  }
}

/** What the chatting (or the watching) connections received in the window. */
export function throughput(window: Window, at: 'chatting' | 'watching' = 'chatting'): ThroughputFigures {
  const { counters } = window.sample
  const [frames, tokens] = at === 'chatting' ? [counters.tokenFrames, counters.tokens] : [counters.watchFrames, counters.watchTokens]
  return {
    framesPerSecond: frames / window.seconds,
    tokensPerSecond: tokens / window.seconds,
    tokensPerFrame: perUnit(tokens, frames),
    cpuUsPerToken: perUnit(window.cpuUs, tokens),
    systemUsPerFrame: perUnit(window.systemCpuUs, frames),
    cpuShare: window.cpuShare,
    completes: counters.completes,
    miscountedRuns: counters.miscountedRuns,
    rampMs: window.rampMs,
    errors: counters.errors,
  }
}
