/**
 * What both bench servers (project and baseline) report over IPC, the same way: memory,
 * after a forced GC when asked (they run with --expose-gc). Their CPU time is read from
 * /proc by the orchestrator instead: a saturated server answers IPC late, /proc at once.
 */
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks'
import { emit, serveRequests } from './ipc.ts'

export interface ServerStats {
  rss: number
  heapUsed: number
  external: number
  arrayBuffers: number
  /** Event-loop delay since the previous stats (µs, 10 ms sampling): how long the loop was held. */
  loopDelayP99Us: number
  loopDelayMaxUs: number
  /** Garbage-collection pauses since the previous stats: their sum and the longest (µs). */
  gcPauseTotalUs: number
  gcPauseMaxUs: number
}

const loopDelay = monitorEventLoopDelay({ resolution: 10 })
const gcPauses = { totalUs: 0, maxUs: 0 }
const gcObserver = new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    gcPauses.totalUs += entry.duration * 1000
    gcPauses.maxUs = Math.max(gcPauses.maxUs, entry.duration * 1000)
  }
})

/** Long enough for the FinalizationRegistry callbacks a collection queued to run. */
const FINALIZERS_MS = 50

export async function takeStats(options: { gc: boolean }): Promise<ServerStats> {
  const gc = (globalThis as { gc?: () => void }).gc
  if (options.gc && gc) {
    // A collection queues finalizers (undici's and AbortSignal.any's cleanup among them); what
    // they hold goes only in a collection after they ran. Read at once, it counted as retained.
    gc()
    await new Promise((resolve) => setTimeout(resolve, FINALIZERS_MS))
    gc()
  }
  const memory = process.memoryUsage()
  const pauses = {
    loopDelayP99Us: loopDelay.percentile(99) / 1000,
    loopDelayMaxUs: loopDelay.max / 1000,
    gcPauseTotalUs: gcPauses.totalUs,
    gcPauseMaxUs: gcPauses.maxUs,
  }
  loopDelay.reset()
  gcPauses.totalUs = 0
  gcPauses.maxUs = 0
  return { rss: memory.rss, heapUsed: memory.heapUsed, external: memory.external, arrayBuffers: memory.arrayBuffers, ...pauses }
}

/** Answers `stats` and `stop`, then tells the orchestrator the port it listens on. */
export function serveServer(port: number, close: () => Promise<void>): void {
  loopDelay.enable()
  gcObserver.observe({ entryTypes: ['gc'] })
  serveRequests({
    stats: (args: { gc: boolean }) => takeStats(args),
    stop: async () => {
      // A close that hangs (a socket ignoring its close frame) must not hold the bench up.
      await Promise.race([close(), new Promise((resolve) => setTimeout(resolve, 2000).unref())])
      setImmediate(() => process.exit(0))
    },
  })
  emit('ready', { port })
}
