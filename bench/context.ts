/** What every scenario gets, and the measuring steps they share. */
import { setTimeout as sleep } from 'node:timers/promises'
import { startServer, type LoadPool, type ServerHandle, type ServerKind, type ServerOptions, type UpstreamHandle } from './children.ts'
import type { Sample } from './load-client.ts'
import type { Sizes } from './options.ts'
import { perUnit } from './stats.ts'

export interface BenchContext {
  sizes: Sizes
  upstream: UpstreamHandle
  pool: LoadPool
  servers: Servers
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

  async acquire(kind: ServerKind, choice: ServerChoice): Promise<ServerHandle> {
    const key = `${kind} ${choice.provider} ${choice.logLevel}`
    const kept = this.#kept.get(key)
    if (kept) return kept
    const server = await startServer(kind, { ...choice, upstreamURL: this.#upstreamURL, ...(this.#profileDir ? { profileDir: this.#profileDir } : {}) })
    if (this.#reuse) this.#kept.set(key, server)
    return server
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

/** Alternates which server goes first, so drift on a shared machine hits both alike. */
export function sideOrder(rep: number): ServerKind[] {
  return rep % 2 === 0 ? ['project', 'baseline'] : ['baseline', 'project']
}

/** A server of `kind` for `fn`; afterwards every client loop ends, every connection closes, the server is released. */
export async function withServer<T>(ctx: BenchContext, kind: ServerKind, choice: Partial<ServerChoice>, fn: (server: ServerHandle) => Promise<T>): Promise<T> {
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
  /** Server CPU (user + system) spent during the window, µs. */
  cpuUs: number
  /** Share of one core the server used: near 1 means the server, not the clients, was the bound. */
  cpuShare: number
}

/** After a warm-up, what arrives at the clients and what the server spends in one window. */
export async function measureWindow(ctx: BenchContext, server: ServerHandle): Promise<Window> {
  await sleep(ctx.sizes.warmupMs)
  await ctx.pool.sample()
  const before = { cpuUs: server.cpuUs(), atNs: process.hrtime.bigint() }
  await sleep(ctx.sizes.windowMs)
  const sample = await ctx.pool.sample()
  const cpuUs = server.cpuUs() - before.cpuUs
  const seconds = Number(process.hrtime.bigint() - before.atNs) / 1e9
  return { sample, seconds, cpuUs, cpuShare: cpuUs / (seconds * 1e6) }
}

export interface HandshakeFigures {
  opened: number
  failed: number
  perSecond: number
  cpuUsPerHandshake: number | null
  errors: string[]
}

/** Opens `count` connections at the configured concurrency: rate and server CPU per handshake. */
export async function measureHandshakes(ctx: BenchContext, server: ServerHandle, count: number): Promise<HandshakeFigures> {
  await server.stats({ gc: true })
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

export interface ThroughputFigures {
  framesPerSecond: number
  /** Upstream tokens per token frame in completed runs (1 without coalescing); null before any run completed. */
  coalescing: number | null
  /** Upstream tokens delivered per second: frames/s × coalescing. */
  tokensPerSecond: number
  cpuUsPerFrame: number | null
  cpuShare: number
  completes: number
  errors: Record<string, number>
}

export function throughput(window: Window): ThroughputFigures {
  const { counters } = window.sample
  const framesPerSecond = counters.tokenFrames / window.seconds
  const coalescing = perUnit(counters.words, counters.framesInCompleted)
  return {
    framesPerSecond,
    coalescing,
    tokensPerSecond: framesPerSecond * (coalescing ?? 1),
    cpuUsPerFrame: perUnit(window.cpuUs, counters.tokenFrames),
    cpuShare: window.cpuShare,
    completes: counters.completes,
    errors: counters.errors,
  }
}
