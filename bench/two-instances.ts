/**
 * Fan-out across instances: two project instances on one store, the runs chatted on
 * instance A, each session watched from instance B by the same user (`resume`), flooding
 * chats back to back from the OpenAI-format upstream. What arrives at B went through the
 * store (its stream and the tail of B); what Redis executed in the window is read from its
 * command counters.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { ServerHandle } from './children.ts'
import { HANDSHAKE_TIMEOUT_MS, measureWindow, throughput, type BenchContext, type ThroughputFigures } from './context.ts'
import type { CycleResult } from './cycles.ts'
import { floodPrompt } from './prompts.ts'
import { diffCounts, ZERO_COUNTS, type CommandCounts, type StoreProbe } from './redis.ts'
import { perUnit } from './stats.ts'

/**
 * Connect → chat → close cycles on each instance, few at a time, before the load: a cluster
 * client connects to each master on first use, and commands sent to a master while that
 * connection is still being made are refused (no offline queue), which would end the first
 * runs of the load in errors. The measurement is of the steady state.
 */
const WARMUP_CYCLES = 16
const WARMUP_TIMEOUT_MS = 10_000

export interface TwoInstanceFigures {
  /** The warm-up's cycles on A and B: failures here are the cold start, not the measurement. */
  warmup: CycleResult[]
  /** At the chatting connections (instance A). */
  atA: ThroughputFigures
  /** At the watching connections (instance B). */
  atB: ThroughputFigures
  /** What Redis executed in the window … */
  redis: CommandCounts
  /** … per upstream token (delivered at A: each produced once). */
  commandsPerToken: number | null
  /** Commands per second before any run: the instances' idle work, and anyone else's on a shared Redis. */
  idleCommandsPerSecond: number
  /** Errors at the watching connections and connections closed by a server: both should be 0. */
  watchErrors: number
  unexpectedCloses: Record<string, number>
}

export async function measureTwoInstances(ctx: BenchContext, store: StoreProbe, name: string, sessions: number): Promise<TwoInstanceFigures> {
  const choice = { provider: 'openai', logLevel: 'warn', store: store.choice(name) } as const
  const a = await ctx.servers.fresh('project', choice)
  try {
    const b = await ctx.servers.fresh('project', choice)
    try {
      return await measure(ctx, store, [a, b], sessions)
    } finally {
      await ctx.pool.halt()
      await ctx.pool.closeAll()
      await b.stop()
    }
  } finally {
    await a.stop()
  }
}

async function measure(ctx: BenchContext, store: StoreProbe, [a, b]: [ServerHandle, ServerHandle], sessions: number): Promise<TwoInstanceFigures> {
  const { sizes } = ctx
  const warmup: CycleResult[] = []
  for (const server of [a, b]) {
    warmup.push(await ctx.pool.cycles({ url: server.url, count: WARMUP_CYCLES, inflight: 1, prompt: floodPrompt(1), timeoutMs: WARMUP_TIMEOUT_MS }))
  }
  await ctx.pool.open(a.url, sessions, sizes.handshakeInflight, HANDSHAKE_TIMEOUT_MS)
  await ctx.pool.open(b.url, sessions, sizes.handshakeInflight, HANDSHAKE_TIMEOUT_MS, { watch: true })
  const idleBefore = await store.commandCounts()
  await sleep(sizes.warmupMs)
  const idle = diffCounts(await store.commandCounts(), idleBefore)
  await ctx.pool.run([{ count: sessions, prompt: floodPrompt(sizes.fanoutTokens), stamped: false, cancelAfterTokens: null, maxRuns: null, gapMs: 0 }])
  let before = ZERO_COUNTS
  let redis = ZERO_COUNTS
  const window = await measureWindow(ctx, [a, b], {
    begin: async () => {
      before = await store.commandCounts()
    },
    end: async () => {
      redis = diffCounts(await store.commandCounts(), before)
    },
  })
  await ctx.pool.halt()
  const { unexpectedCloses } = await ctx.pool.status()
  return {
    warmup,
    atA: throughput(window),
    atB: throughput(window, 'watching'),
    redis,
    commandsPerToken: perUnit(redis.calls, window.sample.counters.tokens),
    idleCommandsPerSecond: idle.calls / (sizes.warmupMs / 1000),
    watchErrors: window.sample.counters.watchErrors,
    unexpectedCloses,
  }
}
