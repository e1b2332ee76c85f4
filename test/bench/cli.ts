/** Running `node bench/run.ts` from a test, and what every written report must satisfy. */
import { spawn, type ChildProcess } from 'node:child_process'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { ScenarioName } from '../../bench/options.ts'
import { verdictOf, type BenchReport } from '../../bench/report.ts'
import type { Test } from 'tap'

const root = join(import.meta.dirname, '..', '..')

type Tap = Pick<Test, 'teardown' | 'equal' | 'same' | 'ok'>

export interface Exit {
  code: number | null
  stdout: string
  stderr: string
}

export interface CliOptions {
  /** May act on progress lines (e.g. interrupt). */
  onStderr?: (text: string, child: ChildProcess) => void
  /** Added to the environment (e.g. TMPDIR). */
  env?: NodeJS.ProcessEnv
}

/** Runs `node bench/run.ts …` to its exit; killed at teardown if still running. */
export async function runCli(t: Pick<Tap, 'teardown'>, args: string[], options: CliOptions = {}): Promise<Exit> {
  const child = spawn(process.execPath, [join(root, 'bench', 'run.ts'), ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...options.env } })
  t.teardown(() => child.kill('SIGKILL'))
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk))
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk
    options.onStderr?.(stderr, child)
  })
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
  return { code, stdout, stderr }
}

/** The one quick report in `dir`: its parsed JSON and the directory's files. */
export async function readQuickReport(dir: string): Promise<{ report: BenchReport; json: string; files: string[] }> {
  const files = (await readdir(dir)).sort()
  const json = files.find((f) => f.endsWith('-quick.json')) as string
  return { report: JSON.parse(await readFile(join(dir, json), 'utf8')) as BenchReport, json, files }
}

/** Absolute targets judge the project alone: their rows may have no baseline. */
const ABSOLUTE = new Set(['below', 'at-most', 'equals'])

/**
 * Every scenario asked for, in order, with rows whose figures were measured (or are n/a with a
 * note), whose ratios and verdicts follow from them, and whose failure counts are 0.
 */
export function checkReport(t: Tap, report: BenchReport, scenarios: readonly ScenarioName[]): void {
  t.equal(report.meta.mode, 'quick')
  t.same(report.scenarios.map((s) => s.scenario), scenarios, 'every scenario, in order')
  t.same(Object.keys(report.meta.loadAverageAfter), scenarios, 'the machine load recorded after each')
  for (const scenario of report.scenarios) {
    t.ok(scenario.rows.length > 0, `${scenario.scenario} has rows`)
    for (const r of scenario.rows) {
      const name = `${r.scenario} / ${r.case} / ${r.metric}`
      t.equal(r.verdict, verdictOf(r.target, r.project, r.baseline), `${name}: verdict follows the target`)
      // Quick windows are short: a side may see no frame at all, which is n/a and says so.
      const unmeasured = r.project === null || (r.baseline === null && !ABSOLUTE.has(r.target.kind))
      t.ok(!unmeasured || (r.verdict === 'n/a' && typeof r.note === 'string'), `${name}: measured, or n/a with a note`)
      if (r.project !== null) t.ok(Number.isFinite(r.project), `${name}: a finite figure`)
      if (r.project !== null && r.baseline !== null && r.baseline !== 0) t.equal(r.ratio, r.project / r.baseline, `${name}: ratio is project / baseline`)
      if (r.unit === 'count') t.equal(r.project, 0, `${name}: none in the project`)
      if (r.metric.startsWith('tokens per second')) t.ok(typeof r.project === 'number', `${name}: a rate is always a number`)
    }
  }
}
