import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { logHistogram, median, perUnit, pick, quantile, ratio, slope, sumCounts, summarize } from '../../bench/stats.ts'
import { describeTarget, formatMicros, formatNumber, renderHistogramSvg, renderMarkdown, row, verdictOf, type BenchReport, type Row } from '../../bench/report.ts'
import { parseArgs, FULL, QUICK, SCENARIOS, UsageError } from '../../bench/options.ts'
import { countWords, floodPrompt, mockPrompt, pacedPrompt, parsePrompt, parseStamp, stampText } from '../../bench/prompts.ts'
import { forgetOld, stepsFor } from '../../bench/upstream.ts'
import { isTokenFrame } from '../../bench/load-client.ts'
import { cleanEnv, cpuTicks, cpuTimeUs, mergeSamples, serverEnv, share } from '../../bench/children.ts'
import { joinCancels } from '../../bench/scenarios/cancel.ts'
import { throughput, type ThroughputFigures } from '../../bench/context.ts'
import { fanoutRows } from '../../bench/scenarios/fanout.ts'
import { sseParser } from '../../bench/baseline-server.ts'
import { stamp } from '../../bench/run.ts'
import { until } from '../../bench/until.ts'

const root = join(import.meta.dirname, '..', '..')

t.test('stats over fixed samples', async (t) => {
  const sorted = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
  t.equal(quantile(sorted, 0.5), 5, 'nearest rank, never interpolated')
  t.equal(quantile(sorted, 0.99), 10)
  t.equal(quantile(sorted, 0), 1)
  t.throws(() => quantile([], 0.5), RangeError)
  t.same(summarize([10, 1, 5, 3]), { count: 4, min: 1, mean: 4.75, p50: 3, p90: 10, p99: 10, max: 10 })
  t.equal(summarize([]), null)
  t.equal(median([3, 1, 2]), 2)
  t.equal(median([10, 1, 3, 2]), 2.5, 'the mean of the two middle values for an even count')
  t.equal(median([]), null)

  t.equal(slope([{ x: 0, y: 100 }, { x: 1000, y: 2100 }, { x: 3000, y: 6100 }]), 2, 'exact line: its slope')
  t.equal(slope([{ x: 0, y: 0 }, { x: 1, y: 1 }, { x: 2, y: 5 }]), 2.5, 'least squares')
  t.equal(slope([{ x: 1, y: 1 }]), null, 'one point has no slope')
  t.equal(slope([{ x: 1, y: 1 }, { x: 1, y: 3 }]), null, 'vertical points have none either')

  t.equal(perUnit(10, 4), 2.5)
  t.equal(perUnit(10, 0), null, 'nothing to divide by')
  t.same(sumCounts([{ a: 1, b: 2 }, {}, { a: 3 }]), { a: 4, b: 2 })
  t.equal(pick(summarize([1, 2, 3]), 'max'), 3)
  t.equal(pick(null, 'p99'), null)

  t.equal(ratio(3, 2), 1.5)
  t.equal(ratio(null, 2), null)
  t.equal(ratio(3, null), null)
  t.equal(ratio(3, 0), null)
})

t.test('until polls a condition, bounded', async (t) => {
  t.equal(await until(() => true, 0), true)
  t.equal(await until(() => false, 20, 5), false)
  let flipped = false
  setTimeout(() => (flipped = true), 10)
  t.equal(await until(() => flipped, 5000, 5), true)
})

t.test('log histogram bins', async (t) => {
  const h = logHistogram([0.5, 1, 5, 10, 99, 100, 5000], { min: 1, max: 1000, binsPerDecade: 1 })
  t.same(h.edges, [1, 10, 100, 1000])
  t.same(h.counts, [3, 2, 2], 'below min into the first bin, above max into the last, edges are lower-inclusive')
  t.equal(h.below, 1)
  t.equal(logHistogram([], { min: 10, max: 100, binsPerDecade: 10 }).counts.length, 10)
  t.throws(() => logHistogram([1], { min: 0, max: 10, binsPerDecade: 1 }), RangeError)
  t.throws(() => logHistogram([1], { min: 10, max: 10, binsPerDecade: 1 }), RangeError)
})

t.test('verdicts and ratios of rows', async (t) => {
  t.equal(verdictOf({ kind: 'ratio-at-least', value: 0.8 }, 80, 100), 'pass')
  t.equal(verdictOf({ kind: 'ratio-at-least', value: 0.8 }, 79, 100), 'miss')
  t.equal(verdictOf({ kind: 'ratio-at-most', value: 2 }, 200, 100), 'pass')
  t.equal(verdictOf({ kind: 'ratio-at-most', value: 2 }, 201, 100), 'miss')
  t.equal(verdictOf({ kind: 'ratio-at-most', value: 2 }, 1, 0), 'n/a', 'a zero baseline has no ratio')
  t.equal(verdictOf({ kind: 'plus-at-most', value: 1000 }, 3000, 2000), 'pass')
  t.equal(verdictOf({ kind: 'plus-at-most', value: 1000 }, 3001, 2000), 'miss')
  t.equal(verdictOf({ kind: 'plus-at-most', value: 1000 }, 3001, null), 'n/a')
  t.equal(verdictOf({ kind: 'below', value: 10 }, 9, null), 'pass', 'absolute targets need no baseline')
  t.equal(verdictOf({ kind: 'below', value: 10 }, 10, 1), 'miss')
  t.equal(verdictOf({ kind: 'equals', value: 0 }, 0, 5), 'pass')
  t.equal(verdictOf({ kind: 'equals', value: 0 }, 1, 0), 'miss')
  t.equal(verdictOf({ kind: 'none' }, 1, 2), 'info')
  t.equal(verdictOf({ kind: 'below', value: 10 }, null, 1), 'n/a')

  const r = row({ scenario: 'fanout', case: 'c', metric: 'tokens per second', unit: '1/s', project: 900, baseline: 1000, target: { kind: 'ratio-at-least', value: 0.8 } })
  t.equal(r.ratio, 0.9)
  t.equal(r.verdict, 'pass')

  t.equal(describeTarget({ kind: 'ratio-at-least', value: 0.8 }, 'x'), '≥ 0.8× baseline')
  t.equal(describeTarget({ kind: 'ratio-at-most', value: 2 }, 'x'), '≤ 2× baseline')
  t.equal(describeTarget({ kind: 'plus-at-most', value: 1000 }, 'µs'), '≤ baseline + 1000 µs')
  t.equal(describeTarget({ kind: 'below', value: 10 }, 'ms'), '< 10 ms')
  t.equal(describeTarget({ kind: 'equals', value: 0 }, 'count'), '= 0')
  t.equal(describeTarget({ kind: 'none' }, 'x'), '—')
  t.equal(formatNumber(null), 'n/a')
  t.equal(formatNumber(12345.6), '12,346')
  t.equal(formatNumber(12.34), '12.3')
  t.equal(formatNumber(1.234), '1.23')
})

function fakeReport(rows: Row[], loadAverageAfter: Record<string, number[]> = {}): BenchReport {
  return {
    meta: { date: 'd', mode: 'quick', node: 'v24', cpus: 2, cpuModel: 'cpu', loadAverageAtStart: [1, 2, 3], loadAverageAfter, fdLimit: 'soft 1, hard 1', durationMs: 1500 },
    scenarios: [{ scenario: 'latency', rows, details: {}, histograms: [] }],
  }
}

t.test('markdown summary and SVG histogram', async (t) => {
  const miss = row({ scenario: 'latency', case: 'light', metric: 'added latency p99', unit: 'µs', project: 5000, baseline: 1000, target: { kind: 'plus-at-most', value: 1000 } })
  const na = row({ scenario: 'latency', case: 'light', metric: 'm', unit: 'u', project: null, baseline: 1, target: { kind: 'ratio-at-least', value: 1.5 }, note: 'not there yet' })
  const md = renderMarkdown(fakeReport([miss, na], { latency: [2.5, 1, 1] }), 'x-latency.svg')
  t.match(md, 'load average at start 1.00 / 2.00 / 3.00, then after each scenario latency 2.5 (1 min)')
  t.match(renderMarkdown(fakeReport([na])), 'then after each scenario — (1 min)')
  t.match(md, '| latency | light | added latency p99 (µs) | 5,000 | 1,000 | 5.00× | ≤ baseline + 1000 µs | ❌ miss |')
  t.match(md, '| latency | light | m (u) — not there yet | n/a | 1.00 | n/a | ≥ 1.5× baseline | n/a |')
  t.match(md, 'Missed: latency light added latency p99.')
  t.match(md, '![added latency](x-latency.svg)')
  t.match(renderMarkdown(fakeReport([na])), 'Every target with a verdict was met.')
  t.notMatch(renderMarkdown(fakeReport([na])), 'Latency histogram')

  const svg = renderHistogramSvg(
    [
      { panel: 'light <load>', side: 'project', samples: [150, 200, 250, 4000] },
      { panel: 'light <load>', side: 'baseline', samples: [100, 120, 130] },
      { panel: 'heavy', side: 'project', samples: [] },
    ],
    'Added latency',
  )
  t.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/)
  t.match(svg, /<\/svg>\n$/)
  t.match(svg, 'light &lt;load&gt;', 'text is escaped')
  t.equal(svg.match(/<path /g)?.length, 3, 'one step line per series')
  t.match(svg, 'project, n=4, p99 4.00 ms (dashed)')
  t.match(svg, 'baseline, n=3, p99 130 µs (dashed)')
  t.match(svg, '>100 µs<', 'axis starts at the decade below the smallest sample')
  t.match(svg, '>10.0 ms<', 'and ends at the decade above the largest')
  t.match(renderHistogramSvg([{ panel: 'p', side: 'project', samples: [] }], 't'), 'project, n=0</text>')
  t.same([formatMicros(12), formatMicros(1500), formatMicros(2_500_000)], ['12.0 µs', '1.50 ms', '2.50 s'])
})

t.test('command line', async (t) => {
  const quick = parseArgs(['--quick'], '/out')
  t.same(quick, { mode: 'quick', only: [...SCENARIOS], outDir: '/out', profile: false, hardTimeoutMs: 90_000, sizes: QUICK })
  const full = parseArgs(['--only', 'idle,cancel', '--out', '/x', '--timeout', '30', '--profile'])
  t.same(full, { mode: 'full', only: ['idle', 'cancel'], outDir: '/x', profile: true, hardTimeoutMs: 30_000, sizes: FULL })
  t.match(parseArgs([]).outDir, /bench\/results$/)
  t.equal(parseArgs([]).hardTimeoutMs, 480_000)
  t.throws(() => parseArgs(['--only', 'nope']), UsageError)
  t.throws(() => parseArgs(['--only', ',']), UsageError)
  t.throws(() => parseArgs(['--timeout', '0']), UsageError)
  t.throws(() => parseArgs(['--out']), UsageError)
  t.throws(() => parseArgs(['--fast']), UsageError)
  t.equal(stamp(new Date('2025-01-31T12:34:56.789Z')), '2025-01-31T12-34-56')
})

t.test('prompts and the upstream script', async (t) => {
  t.same(parsePrompt(floodPrompt(500)), { kind: 'flood', count: 500 })
  t.same(parsePrompt(pacedPrompt(10, 5)), { kind: 'paced', count: 10, intervalMs: 5, id: null })
  t.same(parsePrompt(pacedPrompt(10, 5, 'w0.3.7')), { kind: 'paced', count: 10, intervalMs: 5, id: 'w0.3.7' })
  t.equal(parsePrompt('bench paced 10'), null)
  t.equal(parsePrompt('hello'), null)
  t.equal(countWords(` You said: "${mockPrompt(3)}". I am`), 7)
  t.equal(countWords(''), 0)
  t.notMatch(mockPrompt(50), /time|calculate|compute|what/i, 'nothing that makes the mock call a tool')
  t.equal(parseStamp(stampText(123456789n)), 123456789)
  t.equal(parseStamp(' ab'), null)

  t.same(stepsFor({ kind: 'flood', count: 3 }), [
    { flood: { text: ' ab', count: 3 } },
    { finish: 'stop' },
    { usage: { prompt_tokens: 5, completion_tokens: 3 } },
    { done: true },
  ])
  t.same(stepsFor(null).slice(0, 2), [{ text: 'Hello' }, { text: ' world' }])
  const recorded = Array.from({ length: 11 }, (_, i) => i)
  forgetOld(recorded, 10)
  t.same(recorded, [5, 6, 7, 8, 9, 10], 'the older half goes once past the limit')
  forgetOld(recorded, 10)
  t.equal(recorded.length, 6)
  const paced = stepsFor({ kind: 'paced', count: 2, intervalMs: 7, id: null })
  t.same(paced.filter((step) => 'delayMs' in step), [{ delayMs: 7 }, { delayMs: 7 }])
  const stamped = paced[1] as { text: string }
  const before = process.hrtime.bigint()
  const stampNs = parseStamp(stamped.text) as number
  t.ok(stampNs >= Number(before), 'the stamp is taken when the text is read, i.e. when the upstream writes it')
})

t.test('fan-out rows: coalescing is judged only when the project coalesces', async (t) => {
  const figures = (framesPerSecond: number, coalescing: number | null): ThroughputFigures => ({
    framesPerSecond,
    coalescing,
    tokensPerSecond: framesPerSecond * (coalescing ?? 1),
    cpuUsPerFrame: 10,
    cpuShare: 0.9,
    completes: 1,
    errors: {},
  })
  const oneFrame = fanoutRows('c', figures(900, 1), figures(1000, 1))
  t.same(oneFrame.map((r) => r.metric), ['tokens per second', 'server CPU per token frame', 'server CPU share of one core', 'tokens per second, coalesced, vs baseline one frame per token'])
  t.match(oneFrame[0], { project: 900, baseline: 1000, ratio: 0.9, verdict: 'pass' })
  t.match(oneFrame[3], { project: null, verdict: 'n/a', note: /one frame per token \(1\.00 tokens per frame\)/ })
  t.match(fanoutRows('c', figures(900, null), figures(1000, 1))[3], { project: null, verdict: 'n/a' }, 'no completed run yet')
  const coalesced = fanoutRows('c', figures(500, 4), figures(1000, 1))[3]
  t.match(coalesced, { project: 2000, baseline: 1000, ratio: 2, verdict: 'pass' })
  t.equal(coalesced?.note, undefined)
})

t.test('load-client and orchestrator helpers', async (t) => {
  t.ok(isTokenFrame(Buffer.from('{"type":"token","session_id":"s","seq":3,"content":" a","metadata":{"run_id":"r"}}')))
  t.notOk(isTokenFrame(Buffer.from('{"type":"complete","session_id":"s"}')))
  t.notOk(isTokenFrame(Buffer.from('{"type":"token",')), 'a bare prefix is not a frame')

  t.equal(cpuTicks('42 (node (bench) x) S 1 42 42 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 7 0 1000'), 22, 'utime + stime, after the command name')
  t.ok(cpuTimeUs(process.pid) > 0)

  t.same([0, 1, 2].map((i) => share(10, 3, i)), [4, 3, 3])
  t.same([0, 1].map((i) => share(1, 2, i)), [1, 0])

  const clean = cleanEnv({ PATH: '/bin', REDIS_URL: 'redis://x', OPENAI_API_KEY: 'sk', NODE_V8_COVERAGE: '/c' })
  t.same(clean, { PATH: '/bin', NODE_V8_COVERAGE: '/c' }, 'config variables never leak into a server under test')
  const project = serverEnv('project', { provider: 'openai', upstreamURL: 'http://u', logLevel: 'warn' })
  t.match(project, { JWT_SECRET: String, LOG_LEVEL: 'warn', MODEL_PROVIDER: 'openai', OPENAI_BASE_URL: 'http://u', MOCK_TOKEN_DELAY_MS: '0', HOST: '127.0.0.1' })
  const baseline = serverEnv('baseline', { provider: 'mock', upstreamURL: 'http://u', logLevel: 'info' })
  t.equal(baseline.JWT_SECRET, project.JWT_SECRET, 'one secret signs for both')
  t.equal(baseline.LOG_LEVEL, undefined)

  const counters = (tokenFrames: number, errors: Record<string, number>) => ({ tokenFrames, completes: 1, cancelled: 1, words: 10, framesInCompleted: 5, errors })
  const merged = mergeSamples([
    { counters: counters(3, { busy: 1 }), latenciesUs: [1], cancels: [{ id: 'a', sentNs: 1 }], atNs: 5 },
    { counters: counters(4, { busy: 2, internal: 1 }), latenciesUs: [2, 3], cancels: [], atNs: 9 },
  ])
  t.same(merged, {
    counters: { tokenFrames: 7, completes: 2, cancelled: 2, words: 20, framesInCompleted: 10, errors: { busy: 3, internal: 1 } },
    latenciesUs: [1, 2, 3],
    cancels: [{ id: 'a', sentNs: 1 }],
    atNs: 9,
  })

  const figures = throughput({ sample: merged, seconds: 2, cpuUs: 700, cpuShare: 0.5 })
  t.same(figures, { framesPerSecond: 3.5, coalescing: 2, tokensPerSecond: 7, cpuUsPerFrame: 100, cpuShare: 0.5, completes: 2, errors: { busy: 3, internal: 1 } })
  const empty = throughput({ sample: mergeSamples([]), seconds: 1, cpuUs: 0, cpuShare: 0 })
  t.equal(empty.coalescing, null)
  t.equal(empty.cpuUsPerFrame, null)

  const joined = joinCancels(
    [
      { id: 'a', sentNs: 1_000_000 },
      { id: 'b', sentNs: 2_000_000 },
      { id: 'c', sentNs: 3_000_000 },
    ],
    new Map([
      ['a', 1_500_000],
      ['b', 4_000_000],
    ]),
  )
  t.same(joined.latenciesUs, [500, 2000])
  t.equal(joined.unclosed, 1, 'a cancel the upstream never saw is counted')
  t.equal(joined.summary?.p99, 2000)
})

t.test('baseline SSE parser', async (t) => {
  const data: string[] = []
  const parse = sseParser((d) => data.push(d))
  t.equal(parse('data: {"a":1}\n\nda'), true)
  t.equal(parse('ta: {"b":2}\n\n: keep-alive\n\n'), true, 'events split across chunks are joined')
  t.equal(parse('data: [DONE]\n\n'), false)
  t.same(data, ['{"a":1}', '{"b":2}'])
})

interface Exit {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs `node bench/run.ts …`; `onStderr` may act on progress lines (e.g. interrupt). */
async function runCli(t: { teardown(fn: () => unknown): void }, args: string[], onStderr: (text: string, child: ChildProcess) => void = () => {}): Promise<Exit> {
  const child = spawn(process.execPath, [join(root, 'bench', 'run.ts'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => child.kill('SIGKILL'))
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk))
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk
    onStderr(stderr, child)
  })
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
  return { code, stdout, stderr }
}

t.test('command-line failures', async (t) => {
  const usage = await runCli(t, ['--fast'])
  t.equal(usage.code, 64)
  t.match(usage.stderr, 'unknown argument --fast\nusage: node bench/run.ts')

  const unwritable = await runCli(t, ['--quick', '--out', '/dev/null/results'])
  t.equal(unwritable.code, 1, 'an unusable output directory fails before anything runs')
  t.match(unwritable.stderr, /bench failed: .*ENOTDIR/)

  const out = await mkdtemp(join(tmpdir(), 'agw-bench-cli-'))
  t.teardown(() => rm(out, { recursive: true, force: true }))
  const timedOut = await runCli(t, ['--quick', '--only', 'idle', '--timeout', '0.2', '--out', out])
  t.equal(timedOut.code, 2)
  t.match(timedOut.stderr, 'hard timeout of 0.2 s reached, killing everything')

  let interrupted = false
  const stopped = await runCli(t, ['--quick', '--only', 'handshake', '--out', out], (text, child) => {
    if (!interrupted && text.includes('handshake:')) {
      interrupted = true
      child.kill('SIGINT')
    }
  })
  t.equal(stopped.code, 130, 'Ctrl-C kills the children and exits')
})

t.test('quick mode end to end', async (t) => {
  const out = await mkdtemp(join(tmpdir(), 'agw-bench-'))
  t.teardown(() => rm(out, { recursive: true, force: true }))
  const { code, stdout, stderr } = await runCli(t, ['--quick', '--profile', '--out', out, '--timeout', '100'])
  t.equal(code, 0, stderr)
  t.match(stdout, '| scenario | case | metric | project | baseline | ratio | target | verdict |')

  const files = (await readdir(out)).sort()
  const json = files.find((f) => f.endsWith('-quick.json')) as string
  t.ok(json, 'JSON report written')
  t.ok(files.includes(json.replace('.json', '.md')), 'markdown summary written')
  t.ok(files.includes(json.replace('.json', '-latency.svg')), 'latency histogram written')
  const svg = await readFile(join(out, json.replace('.json', '-latency.svg')), 'utf8')
  t.match(svg, /^<svg /)
  const profiles = await readdir(join(out, 'profiles', 'project'))
  t.ok(profiles.some((f) => f.endsWith('.cpuprofile')), '--profile: the servers wrote CPU profiles')

  const report = JSON.parse(await readFile(join(out, json), 'utf8')) as BenchReport
  t.equal(report.meta.mode, 'quick')
  t.same(report.scenarios.map((s) => s.scenario), [...SCENARIOS], 'every scenario, in order')
  t.same(Object.keys(report.meta.loadAverageAfter), [...SCENARIOS], 'the machine load recorded after each')
  for (const scenario of report.scenarios) {
    t.ok(scenario.rows.length > 0, `${scenario.scenario} has rows`)
    for (const r of scenario.rows) {
      const name = `${r.scenario} / ${r.case} / ${r.metric}`
      t.equal(typeof r.baseline, 'number', `${name}: baseline measured`)
      if (r.project === null) {
        t.equal(r.verdict, 'n/a', `${name}: a missing figure is n/a`)
        t.type(r.note, 'string', `${name}: and says why`)
        continue
      }
      t.ok(Number.isFinite(r.project), `${name}: project measured`)
      if (r.baseline !== 0) t.equal(r.ratio, r.project / (r.baseline as number), `${name}: ratio is project / baseline`)
      t.equal(r.verdict, verdictOf(r.target, r.project, r.baseline), `${name}: verdict follows the target`)
    }
  }
  const failures = report.scenarios.flatMap((s) => s.rows).filter((r) => r.unit === 'count')
  for (const r of failures) t.equal(r.project, 0, `${r.scenario}: ${r.metric} — none in the project`)
  const latency = report.scenarios.find((s) => s.scenario === 'latency')
  t.ok(latency?.histograms?.every((h) => h.samples.length > 0), 'latency samples on both sides at both loads')
})
