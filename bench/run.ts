/**
 * `npm run bench` (`node bench/run.ts [--quick] [--only idle,fanout] [--out dir] [--timeout s] [--profile] [--strict]`):
 * starts the upstream and the load workers, runs each scenario against the project server
 * and the plain-`ws` baseline in turn, and writes `<out>/<date>.json`, `<date>.md` and
 * `<date>-latency.svg` (`<out>`: a directory under the system's temp dir unless given).
 * Everything runs on loopback with fixed counts under a hard timeout.
 */
import { execFileSync } from 'node:child_process'
import { mkdir, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { inspect } from 'node:util'
import { LoadPool, startUpstream, type UpstreamHandle } from './children.ts'
import { Servers } from './context.ts'
import { killAll } from './ipc.ts'
import { parseArgs, USAGE, UsageError, type BenchOptions } from './options.ts'
import { exitCodeFor, missedRows, renderHistogramSvg, renderMarkdown, type BenchReport } from './report.ts'
import { scenarios } from './scenarios/index.ts'

/** A full run's files are `<date>.*`; quick runs are marked so they are never taken for one. */
const FILE_SUFFIX = { quick: '-quick', full: '' } as const

function fdLimit(): string {
  return execFileSync('/bin/sh', ['-c', 'echo "soft $(ulimit -Sn), hard $(ulimit -Hn)"'], { encoding: 'utf8' }).trim()
}

/** `2025-01-31T12-00-00` (local files sort by it; no colons for other filesystems). */
export function stamp(date: Date): string {
  return date.toISOString().slice(0, 19).replace(/:/g, '-')
}

/** Writes the report as it stands: after every scenario, so a run cut short keeps what it measured. */
async function writeReport(base: string, outDir: string, report: BenchReport): Promise<string[]> {
  const histograms = report.scenarios.flatMap((result) => result.histograms)
  const svgFile = histograms.length > 0 ? `${base}-latency.svg` : undefined
  await writeFile(`${base}.json`, `${JSON.stringify(report, null, 2)}\n`)
  if (svgFile) await writeFile(svgFile, renderHistogramSvg(histograms, 'Added latency, upstream emission → client receipt'))
  await writeFile(`${base}.md`, renderMarkdown(report, svgFile?.slice(outDir.length + 1)))
  return [`${base}.json`, `${base}.md`, ...(svgFile ? [svgFile] : [])]
}

export async function runBench(options: BenchOptions, progress: (message: string) => void): Promise<{ report: BenchReport; files: string[] }> {
  const startedAt = new Date()
  const profileDir = options.profile ? join(options.outDir, 'profiles') : undefined
  const base = join(options.outDir, `${stamp(startedAt)}${FILE_SUFFIX[options.mode]}`)
  const report: BenchReport = {
    meta: {
      date: startedAt.toISOString(),
      mode: options.mode,
      node: process.version,
      cpus: os.cpus().length,
      cpuModel: (os.cpus()[0] as os.CpuInfo).model,
      loadAverageAtStart: os.loadavg(),
      loadAverageAfter: {},
      fdLimit: fdLimit(),
      durationMs: 0,
    },
    scenarios: [],
  }
  // Fails before minutes of measuring, not after.
  await mkdir(options.outDir, { recursive: true })
  let files = await writeReport(base, options.outDir, report)
  let upstream: UpstreamHandle | undefined
  let pool: LoadPool | undefined
  let servers: Servers | undefined
  try {
    upstream = await startUpstream()
    pool = await LoadPool.start(options.sizes.workers, options.sizes.sourceAddresses)
    servers = new Servers({ reuse: options.sizes.reuseServers, upstreamURL: upstream.baseURL, profileDir })
    const ctx = { sizes: options.sizes, upstream, pool, servers, redis: { url: options.redisURL, clusterSeed: options.clusterSeed }, progress }
    for (const name of options.only) {
      report.scenarios.push(await scenarios[name](ctx))
      report.meta.loadAverageAfter[name] = os.loadavg()
      report.meta.durationMs = Date.now() - startedAt.getTime()
      files = await writeReport(base, options.outDir, report)
    }
  } finally {
    await servers?.stopAll()
    await pool?.stop()
    await upstream?.stop()
  }
  return { report, files }
}

async function main(): Promise<void> {
  let options: BenchOptions
  try {
    options = parseArgs(process.argv.slice(2))
  } catch (err) {
    process.stderr.write(`${(err as UsageError).message}\n${USAGE}\n`)
    process.exit(64)
  }
  const hardTimeout = setTimeout(() => {
    process.stderr.write(`bench: hard timeout of ${options.hardTimeoutMs / 1000} s reached, killing everything\n`)
    killAll()
    process.exit(2)
  }, options.hardTimeoutMs)
  hardTimeout.unref()
  process.once('SIGINT', () => {
    killAll()
    process.exit(130)
  })
  const began = Date.now()
  const progress = (message: string) => process.stderr.write(`[bench ${((Date.now() - began) / 1000).toFixed(1)} s] ${message}\n`)
  try {
    const { report, files } = await runBench(options, progress)
    process.stdout.write(renderMarkdown(report))
    process.stdout.write(`\nwritten to ${options.outDir}: ${files.join(', ')}\n`)
    if (options.strict) process.stderr.write(`bench --strict: ${missedRows(report).length} targets missed\n`)
    process.exitCode = exitCodeFor(report, options.strict)
  } catch (err) {
    killAll()
    process.stderr.write(`bench failed: ${inspect(err)}\n`)
    process.exitCode = 1
  } finally {
    clearTimeout(hardTimeout)
  }
}

if (import.meta.main) await main()
