import t from 'tap'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { logHistogram, median, perUnit, pick, quantile, ratio, slope, sumCounts, summarize, total } from '../../bench/stats.ts'
import { describeTarget, exitCodeFor, formatMicros, formatNumber, missedRows, renderHistogramSvg, renderMarkdown, row, verdictOf, type BenchReport, type Row } from '../../bench/report.ts'
import { defaultOutDir, parseArgs, FULL, QUICK, SCENARIOS, STORE_SCENARIOS, UsageError } from '../../bench/options.ts'
import { countWords, floodPrompt, mockPrompt, pacedPrompt, parsePrompt, parseStamps, stampText } from '../../bench/prompts.ts'
import { forgetOld, stepsFor } from '../../bench/upstream.ts'
import { isCompleteFrame, isErrorFrame, isTokenFrame, tokensInFrame } from '../../bench/frames.ts'
import { cleanEnv, cpuTicks, cpuTimesUs, cpuTimeUs, mergeSamples, runQueueWaitUs, schedstatWaitUs, serverEnv, share } from '../../bench/children.ts'
import { joinCancels } from '../../bench/scenarios/cancel.ts'
import { alternating, medianThroughput, throughput, type BenchContext, type ThroughputFigures } from '../../bench/context.ts'
import { fanoutRows, fanoutTargets } from '../../bench/scenarios/fanout.ts'
import { handshakeOrder } from '../../bench/scenarios/handshake.ts'
import { waitMsPerS } from '../../bench/scenarios/latency.ts'
import { redisFanout, redisFanoutRows, watchFailures, type RedisFanoutFigures } from '../../bench/scenarios/redis-fanout.ts'
import { clusterFanout, clusterFanoutRows } from '../../bench/scenarios/cluster-fanout.ts'
import { redisCycles, redisCyclesRows, type CyclesFigures } from '../../bench/scenarios/redis-cycles.ts'
import { addCounts, assertClusterOk, diffCounts, newPrefix, openCluster, openStandalone, parseCommandStats, within, ZERO_COUNTS } from '../../bench/redis.ts'
import type { TwoInstanceFigures } from '../../bench/two-instances.ts'

import { freePort } from '../helpers/free-port.ts'
import { checkReport, readQuickReport, runCli } from './cli.ts'
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
  t.equal(total({ a: 1, b: 2 }), 3)
  t.equal(total({}), 0)
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
  t.equal(verdictOf({ kind: 'ratio-at-least', value: 0.8 }, 80, 100), 'met')
  t.equal(verdictOf({ kind: 'ratio-at-least', value: 0.8 }, 79, 100), 'missed')
  t.equal(verdictOf({ kind: 'ratio-at-most', value: 2 }, 200, 100), 'met')
  t.equal(verdictOf({ kind: 'ratio-at-most', value: 2 }, 201, 100), 'missed')
  t.equal(verdictOf({ kind: 'ratio-at-most', value: 2 }, 1, 0), 'n/a', 'a zero baseline has no ratio')
  t.equal(verdictOf({ kind: 'plus-at-most', value: 1000 }, 3000, 2000), 'met')
  t.equal(verdictOf({ kind: 'plus-at-most', value: 1000 }, 3001, 2000), 'missed')
  t.equal(verdictOf({ kind: 'plus-at-most', value: 1000 }, 3001, null), 'n/a')
  t.equal(verdictOf({ kind: 'below', value: 10 }, 9, null), 'met', 'absolute targets need no baseline')
  t.equal(verdictOf({ kind: 'below', value: 10 }, 10, 1), 'missed')
  t.equal(verdictOf({ kind: 'at-most', value: 0.25 }, 0.25, null), 'met')
  t.equal(verdictOf({ kind: 'at-most', value: 0.25 }, 0.26, null), 'missed')
  t.equal(verdictOf({ kind: 'equals', value: 0 }, 0, 5), 'met')
  t.equal(verdictOf({ kind: 'equals', value: 0 }, 1, 0), 'missed')
  t.equal(verdictOf({ kind: 'none' }, 1, 2), 'info')
  t.equal(verdictOf({ kind: 'none' }, null, 2), 'n/a', 'a figure that could not be measured is n/a, target or not')
  t.equal(verdictOf({ kind: 'below', value: 10 }, null, 1), 'n/a')

  const r = row({ scenario: 'fanout', case: 'c', metric: 'tokens per second', unit: '1/s', project: 900, baseline: 1000, target: { kind: 'ratio-at-least', value: 0.8 } })
  t.equal(r.ratio, 0.9)
  t.equal(r.verdict, 'met')
  t.equal(r.note, undefined)
  const unmeasured = row({ scenario: 'fanout', case: 'c', metric: 'tokens per frame', unit: 'ratio', project: null, baseline: 1, target: { kind: 'none' } })
  t.match(unmeasured, { verdict: 'n/a', note: /^n\/a: a side measured nothing/ }, 'an n/a row always says why')
  t.equal(row({ ...unmeasured, note: 'the reason' }).note, 'the reason', 'its own reason first')

  t.equal(describeTarget({ kind: 'ratio-at-least', value: 0.8 }, 'x'), '≥ 0.8× baseline')
  t.equal(describeTarget({ kind: 'ratio-at-most', value: 2 }, 'x'), '≤ 2× baseline')
  t.equal(describeTarget({ kind: 'plus-at-most', value: 1000 }, 'µs'), '≤ baseline + 1000 µs')
  t.equal(describeTarget({ kind: 'below', value: 10 }, 'ms'), '< 10 ms')
  t.equal(describeTarget({ kind: 'at-most', value: 0.25 }, 'ratio'), '≤ 0.25 ratio')
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

t.test('--strict: exit 1 when a target was missed, and only then', async (t) => {
  const met = row({ scenario: 'latency', case: 'c', metric: 'm', unit: 'µs', project: 1, baseline: 1, target: { kind: 'plus-at-most', value: 1 } })
  const missed = row({ scenario: 'latency', case: 'c', metric: 'm', unit: 'µs', project: 5, baseline: 1, target: { kind: 'plus-at-most', value: 1 } })
  const na = row({ scenario: 'latency', case: 'c', metric: 'm', unit: 'µs', project: null, baseline: 1, target: { kind: 'plus-at-most', value: 1 }, note: 'why' })
  const info = row({ scenario: 'latency', case: 'c', metric: 'm', unit: 'µs', project: 50, baseline: 1, target: { kind: 'none' } })
  t.equal(exitCodeFor(fakeReport([met, na, info, missed]), true), 1)
  t.equal(exitCodeFor(fakeReport([met, na, info, missed]), false), 0, 'without --strict a miss is only reported')
  t.equal(exitCodeFor(fakeReport([met, na, info]), true), 0, 'n/a and info rows never fail a run')
  t.same(missedRows(fakeReport([met, missed, na])), [missed])
})

t.test('markdown summary and SVG histogram', async (t) => {
  const miss = row({ scenario: 'latency', case: 'light', metric: 'added latency p99', unit: 'µs', project: 5000, baseline: 1000, target: { kind: 'plus-at-most', value: 1000 } })
  const na = row({ scenario: 'latency', case: 'light', metric: 'm', unit: 'u', project: null, baseline: 1, target: { kind: 'ratio-at-least', value: 1.5 }, note: 'not there yet' })
  const md = renderMarkdown(fakeReport([miss, na], { latency: [2.5, 1, 1] }), 'x-latency.svg')
  t.match(md, 'load average at start 1.00 / 2.00 / 3.00, then after each scenario latency 2.5 (1 min)')
  t.match(renderMarkdown(fakeReport([na])), 'then after each scenario — (1 min)')
  t.match(md, '| latency | light | added latency p99 (µs) | 5,000 | 1,000 | 5.00× | ≤ baseline + 1000 µs | ❌ missed |')
  t.match(md, '| latency | light | m (u) — not there yet | n/a | 1.00 | n/a | ≥ 1.5× baseline | n/a |')
  t.match(md, 'Targets: 0 met, 1 missed, 1 n/a.')
  t.match(md, 'Missed: latency light added latency p99.')
  const met = row({ scenario: 'latency', case: 'light', metric: 'm', unit: 'u', project: 1, baseline: 1, target: { kind: 'ratio-at-least', value: 1 } })
  t.match(renderMarkdown(fakeReport([met])), '| 1.00× | ≥ 1× baseline | ✅ met |')
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
  t.same(quick, {
    mode: 'quick',
    only: [...SCENARIOS],
    outDir: '/out',
    profile: false,
    strict: false,
    redisURL: 'redis://127.0.0.1:6379',
    clusterSeed: '127.0.0.1:7001',
    hardTimeoutMs: 90_000,
    sizes: QUICK,
  })
  const full = parseArgs(['--only', 'idle,cancel,redis-cycles', '--out', '/x', '--timeout', '30', '--profile', '--strict', '--redis', 'redis://h:1', '--redis-cluster', 'h:7'])
  t.same(full, { mode: 'full', only: ['idle', 'cancel', 'redis-cycles'], outDir: '/x', profile: true, strict: true, redisURL: 'redis://h:1', clusterSeed: 'h:7', hardTimeoutMs: 30_000, sizes: FULL })
  t.equal(parseArgs([]).outDir, join(tmpdir(), 'agent-gateway-bench'), 'results go outside the tracked tree by default')
  t.equal(defaultOutDir(), join(tmpdir(), 'agent-gateway-bench'))
  t.equal(parseArgs([]).hardTimeoutMs, 900_000)
  t.throws(() => parseArgs(['--redis-cluster', 'no-port']), UsageError)
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
  t.same(parseStamps(stampText(123456789n)), [123456789])
  t.same(parseStamps(`${stampText(1n)}${stampText(23n)}`), [1, 23], 'a merged frame: one stamp per token')
  t.same(parseStamps(' ab'), [])

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
  const [stampNs] = parseStamps(stamped.text) as [number]
  t.ok(stampNs >= Number(before), 'the stamp is taken when the text is read, i.e. when the upstream writes it')
})

const figures = (framesPerSecond: number, tokensPerFrame: number | null): ThroughputFigures => ({
  framesPerSecond,
  tokensPerSecond: framesPerSecond * (tokensPerFrame ?? 0),
  tokensPerFrame,
  cpuUsPerToken: 10,
  systemUsPerFrame: 4,
  cpuShare: 0.9,
  completes: 1,
  miscountedRuns: 0,
  rampMs: 5,
  errors: {},
})

t.test('fan-out rows: the issue targets, tokens per frame, the coalesced rate', async (t) => {
  t.same(fanoutTargets('openai', false), { tokensRatio: 0.8, coalesced: true })
  t.same(fanoutTargets('openai', true), { tokensRatio: 0.8, coalesced: true })
  t.same(fanoutTargets('mock', true), { tokensRatio: 0.9, coalesced: false }, 'mock at 1000 sessions: ≥ 0.9×')
  t.same(fanoutTargets('mock', false), { tokensRatio: 0.8, coalesced: false })

  const oneFrame = fanoutRows('c', figures(900, 1), figures(1000, 1), fanoutTargets('openai', false))
  t.same(oneFrame.map((r) => r.metric), [
    'tokens per second',
    'upstream tokens per token frame',
    'server CPU per upstream token',
    'server CPU in the kernel per token frame',
    'server CPU share of one core',
    'coalesced fan-out: tokens per second vs baseline one frame per token',
  ])
  t.match(oneFrame[0], { project: 900, baseline: 1000, ratio: 0.9, verdict: 'met', target: { value: 0.8 } })
  t.match(oneFrame[1], { project: 1, baseline: 1, verdict: 'info' })
  t.match(oneFrame[3], { project: 4, baseline: 4, unit: 'µs', verdict: 'info' }, "the kernel's part: what both sides share per socket write")
  t.match(oneFrame[5], { project: 900, baseline: 1000, verdict: 'missed', note: '1.00 upstream tokens per project frame' }, 'one frame per token is judged, and misses')
  const coalesced = fanoutRows('c', figures(500, 4), figures(1000, 1), fanoutTargets('openai', true))[5]
  t.match(coalesced, { project: 2000, baseline: 1000, ratio: 2, verdict: 'met', note: '4.00 upstream tokens per project frame' })
  t.match(fanoutRows('c', figures(0, null), figures(1000, 1), fanoutTargets('openai', true))[5], { note: '1.00 upstream tokens per project frame' }, 'no frame at all')
  const mock = fanoutRows('c', figures(850, 1), figures(1000, 1), fanoutTargets('mock', true))
  t.equal(mock.length, 5, 'no coalesced row for the in-process mock')
  t.match(mock[0], { verdict: 'missed', target: { value: 0.9 } })
})

t.test('frames recognised and their tokens counted without parsing', async (t) => {
  const token = (content: string) => Buffer.from(JSON.stringify({ type: 'token', session_id: 's-1', seq: 3, content, metadata: { run_id: 'r-1' } }))
  t.ok(isTokenFrame(token(' a')))
  t.notOk(isTokenFrame(Buffer.from('{"type":"complete","session_id":"s"}')))
  t.notOk(isTokenFrame(Buffer.from('{"type":"token",')), 'a bare prefix is not a frame')
  t.ok(isCompleteFrame(Buffer.from('{"type":"complete","session_id":"s"}')))
  t.ok(isErrorFrame(Buffer.from('{"type":"error","session_id":"s"}')))
  t.notOk(isErrorFrame(token(' a')))

  t.equal(tokensInFrame(token(' ab')), 1, 'one flood token')
  t.equal(tokensInFrame(token(' ab ab ab ab')), 4, 'four merged into one frame')
  t.equal(tokensInFrame(token(`${stampText(1n)}${stampText(22n)}`)), 2, 'merged stamped tokens')
  t.equal(tokensInFrame(token('You')), 1, "the mock's first word has no leading space")
  t.equal(tokensInFrame(token('You said: "lorem0')), 3, 'with the words after it, escaped quote and all')
  t.equal(tokensInFrame(token('')), 0)
  t.equal(tokensInFrame(Buffer.from('{"type":"token","session_id":"s"}')), 0, 'no content at all')
  const text = `You said: "${mockPrompt(3)}". I am`
  t.equal(tokensInFrame(token(text)), countWords(text), "the frames' count agrees with the complete's word count")
})

t.test('load-client and orchestrator helpers', async (t) => {
  t.same(cpuTicks('42 (node (bench) x) S 1 42 42 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 7 0 1000'), { user: 17, system: 5 }, 'utime and stime, after the command name')
  t.ok(cpuTimeUs(process.pid) > 0)
  const times = cpuTimesUs(process.pid)
  t.ok(times.systemUs >= 0 && times.systemUs <= times.totalUs, "the kernel's part is part of the total")
  t.type(runQueueWaitUs(process.pid), 'number', "this process's run-queue wait, from /proc")
  t.equal(runQueueWaitUs(2 ** 30), null, 'no such process')
  t.equal(schedstatWaitUs('2110009655 734640563 11137\n'), 734640.563, 'on a CPU, waiting for one (ns), time slices')
  t.equal(schedstatWaitUs(''), null, 'a line it cannot read')

  t.same([0, 1, 2].map((i) => share(10, 3, i)), [4, 3, 3])
  t.same([0, 1].map((i) => share(1, 2, i)), [1, 0])

  const clean = cleanEnv({ PATH: '/bin', REDIS_URL: 'redis://x', OPENAI_API_KEY: 'sk', NODE_V8_COVERAGE: '/c' })
  t.same(clean, { PATH: '/bin', NODE_V8_COVERAGE: '/c' }, 'config variables never leak into a server under test')
  const project = serverEnv('project', { provider: 'openai', upstreamURL: 'http://u', logLevel: 'warn' })
  t.match(project, { JWT_SECRET: String, LOG_LEVEL: 'warn', MODEL_PROVIDER: 'openai', OPENAI_BASE_URL: 'http://u', MOCK_TOKEN_DELAY_MS: '0', HOST: '127.0.0.1' })
  t.notOk('REDIS_URL' in project, 'the memory backend unless a store is given')
  const onRedis = serverEnv('project', { provider: 'openai', upstreamURL: 'http://u', logLevel: 'warn', store: { url: 'redis://r:1', cluster: false, prefix: 'p:' } })
  t.match(onRedis, { REDIS_URL: 'redis://r:1', REDIS_KEY_PREFIX: 'p:' })
  t.notOk('REDIS_CLUSTER' in onRedis)
  const onCluster = serverEnv('project', { provider: 'openai', upstreamURL: 'http://u', logLevel: 'warn', store: { url: 'redis://r:7001', cluster: true, prefix: 'p:' } })
  t.match(onCluster, { REDIS_URL: 'redis://r:7001', REDIS_CLUSTER: 'true', REDIS_KEY_PREFIX: 'p:' })
  const baseline = serverEnv('baseline', { provider: 'mock', upstreamURL: 'http://u', logLevel: 'info', store: { url: 'redis://r:1', cluster: false, prefix: 'p:' } })
  t.equal(baseline.JWT_SECRET, project.JWT_SECRET, 'one secret signs for both')
  t.equal(baseline.LOG_LEVEL, undefined)
  t.equal(baseline.REDIS_URL, undefined, 'the baseline has no store')

  const counters = (tokenFrames: number, errors: Record<string, number>) => ({
    tokenFrames,
    tokens: tokenFrames * 2,
    completes: 1,
    cancelled: 1,
    miscountedRuns: 0,
    watchFrames: tokenFrames,
    watchTokens: tokenFrames * 3,
    watchErrors: 1,
    errors,
  })
  const merged = mergeSamples([
    { counters: counters(3, { busy: 1 }), latenciesUs: [1], cancels: [{ id: 'a', sentNs: 1 }], atNs: 5 },
    { counters: counters(4, { busy: 2, internal: 1 }), latenciesUs: [2, 3], cancels: [], atNs: 9 },
  ])
  t.same(merged, {
    counters: { tokenFrames: 7, tokens: 14, completes: 2, cancelled: 2, miscountedRuns: 0, watchFrames: 7, watchTokens: 21, watchErrors: 2, errors: { busy: 3, internal: 1 } },
    latenciesUs: [1, 2, 3],
    cancels: [{ id: 'a', sentNs: 1 }],
    atNs: 9,
  })

  const chatting = throughput({ sample: merged, seconds: 2, cpuUs: 700, systemCpuUs: 280, cpuShare: 0.5, rampMs: 30 })
  t.same(chatting, { framesPerSecond: 3.5, tokensPerSecond: 7, tokensPerFrame: 2, cpuUsPerToken: 50, systemUsPerFrame: 40, cpuShare: 0.5, completes: 2, miscountedRuns: 0, rampMs: 30, errors: { busy: 3, internal: 1 } })
  const watching = throughput({ sample: merged, seconds: 2, cpuUs: 700, systemCpuUs: 280, cpuShare: 0.5, rampMs: 30 }, 'watching')
  t.match(watching, { framesPerSecond: 3.5, tokensPerSecond: 10.5, tokensPerFrame: 3 })
  const empty = throughput({ sample: mergeSamples([]), seconds: 1, cpuUs: 0, systemCpuUs: 0, cpuShare: 0, rampMs: 0 })
  t.equal(empty.tokensPerFrame, null)
  t.equal(empty.cpuUsPerToken, null)
  t.equal(empty.systemUsPerFrame, null)
  const rep = (tokensPerSecond: number, cpuUsPerToken: number | null, errors: Record<string, number>): ThroughputFigures => ({
    framesPerSecond: tokensPerSecond / 2,
    tokensPerSecond,
    tokensPerFrame: cpuUsPerToken === null ? null : 2,
    cpuUsPerToken,
    systemUsPerFrame: cpuUsPerToken === null ? null : cpuUsPerToken / 2,
    cpuShare: tokensPerSecond / 1000,
    completes: 3,
    miscountedRuns: tokensPerSecond === 900 ? 1 : 0,
    rampMs: tokensPerSecond / 10,
    errors,
  })
  t.same(
    medianThroughput([rep(900, 12, { busy: 1 }), rep(300, null, {}), rep(600, 8, { busy: 2, internal: 1 })]),
    { framesPerSecond: 300, tokensPerSecond: 600, tokensPerFrame: 2, cpuUsPerToken: 10, systemUsPerFrame: 5, cpuShare: 0.6, completes: 9, miscountedRuns: 1, rampMs: 60, errors: { busy: 3, internal: 1 } },
    'each rate the median of the repetitions that measured it; counts summed',
  )
  t.same(medianThroughput([rep(300, null, {})]).cpuUsPerToken, null, 'no repetition measured it')
  t.same(alternating(0, ['a', 'b']), ['a', 'b'])
  t.equal(waitMsPerS(1000, 41_000, 4), 10, '40 ms waited in a 4 s window')
  t.equal(waitMsPerS(null, 41_000, 4), null, 'a kernel without schedstat')
  t.equal(waitMsPerS(1000, null, 4), null)
  t.same([0, 1, 2].map(handshakeOrder), [
    ['project', 'baseline', 'floor'],
    ['floor', 'baseline', 'project'],
    ['project', 'baseline', 'floor'],
  ], 'the handshake: project and baseline alternate, the floor last then first')
  t.same(alternating(3, ['a', 'b']), ['b', 'a'])

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
  const stopped = await runCli(t, ['--quick', '--only', 'handshake', '--out', out], {
    onStderr: (text, child) => {
      if (!interrupted && text.includes('handshake:')) {
        interrupted = true
        child.kill('SIGINT')
      }
    },
  })
  t.equal(stopped.code, 130, 'Ctrl-C kills the children and exits')
})

t.test('Redis command counters, cluster state, bounded waits', async (t) => {
  const info = [
    '# Commandstats',
    'cmdstat_evalsha:calls=10,usec=100,usec_per_call=10.00,rejected_calls=0,failed_calls=0',
    'cmdstat_xadd:calls=5,usec=20,usec_per_call=4.00,rejected_calls=0,failed_calls=0',
    'cmdstat_info:calls=3,usec=9,usec_per_call=3.00,rejected_calls=0,failed_calls=0',
    'cmdstat_replconf:calls=7,usec=1,usec_per_call=0.14,rejected_calls=0,failed_calls=0',
    'cmdstat_client|list:calls=1,usec=2,usec_per_call=2.00,rejected_calls=0,failed_calls=0',
    '',
  ].join('\r\n')
  const counts = parseCommandStats(info)
  t.same(counts, { calls: 16, usec: 122, byCommand: { evalsha: 10, xadd: 5, 'client|list': 1 } }, 'INFO and REPLCONF are not the service’s commands')
  t.same(parseCommandStats('# Commandstats\r\n'), ZERO_COUNTS)
  t.same(addCounts(counts, { calls: 2, usec: 3, byCommand: { xadd: 1, get: 1 } }), { calls: 18, usec: 125, byCommand: { evalsha: 10, xadd: 6, 'client|list': 1, get: 1 } })
  t.same(diffCounts({ calls: 20, usec: 130, byCommand: { evalsha: 14, xadd: 5, get: 1 } }, counts), { calls: 4, usec: 8, byCommand: { evalsha: 4, get: 1 } }, 'what moved')

  t.doesNotThrow(() => assertClusterOk('cluster_state:ok\r\ncluster_slots_assigned:16384\r\n'))
  t.throws(() => assertClusterOk('cluster_state:fail\r\n'), /cluster_state fail/)
  t.throws(() => assertClusterOk(''), /cluster_state missing/)
  t.equal(await within(Promise.resolve(1), 1000, 'quick'), 1)
  await t.rejects(within(new Promise(() => {}), 10, 'connect'), /connect timed out after 10 ms/)
  t.match(newPrefix(), /^agwbench:[0-9a-f]{8}:$/)
  t.not(newPrefix(), newPrefix())
})

const two = (atB: number, commandsPerToken: number | null, watchErrors = 0, unexpectedCloses: Record<string, number> = {}): TwoInstanceFigures => ({
  warmup: [],
  atA: figures(atB, 1),
  atB: figures(atB, 2),
  redis: ZERO_COUNTS,
  commandsPerToken,
  idleCommandsPerSecond: 12.4,
  watchErrors,
  unexpectedCloses,
})

t.test('Redis fan-out rows: watching instance ≥ 0.5× memory, ≤ 0.25 commands per token', async (t) => {
  const measured: RedisFanoutFigures = { redis: two(600, 0.2), memory: figures(1000, 1) }
  const rows = redisFanoutRows('100 sessions', measured)
  t.same(rows.map((r) => [r.metric, r.verdict]), [
    ['tokens per second at the watching instance', 'met'],
    ['tokens per second at the chatting instance', 'info'],
    ['upstream tokens per token frame at the watching instance', 'info'],
    ['server CPU per upstream token, all instances', 'info'],
    ['Redis commands per upstream token', 'met'],
    ['watcher errors and connections closed by a server', 'met'],
  ])
  t.match(rows[0], { project: 1200, baseline: 1000, ratio: 1.2, target: { kind: 'ratio-at-least', value: 0.5 } })
  t.match(rows[4], { project: 0.2, baseline: null, note: /12\.4 calls\/s before any run$/ })
  const missed = redisFanoutRows('100 sessions', { redis: two(200, 0.3, 1, { '1011 store unavailable': 2 }), memory: figures(1000, 1) })
  t.same(missed.filter((r) => r.verdict === 'missed').map((r) => r.metric), ['tokens per second at the watching instance', 'Redis commands per upstream token', 'watcher errors and connections closed by a server'])
  t.equal(watchFailures(two(1, 1, 1, { '1011': 2, '1006': 1 })), 4, 'watcher errors plus every close by a server')

  const na = redisFanoutRows('4 sessions', null, 'no Redis reachable at redis://x')
  t.ok(na.every((r) => r.verdict === 'n/a' && r.note === 'no Redis reachable at redis://x' && r.project === null), 'no Redis: every row n/a, saying why')
})

t.test('cluster fan-out rows: cluster vs standalone, informative', async (t) => {
  const rows = clusterFanoutRows('4 sessions', { cluster: two(500, 8), standalone: two(1000, 7) })
  t.same(rows.map((r) => r.verdict), ['info', 'info', 'info', 'info', 'met'])
  t.match(rows[0], { project: 1000, baseline: 2000, ratio: 0.5 })
  t.match(rows[3], { project: 8, baseline: 7 })
  t.equal(clusterFanoutRows('4 sessions', { cluster: two(500, 8, 1), standalone: two(1000, 7) })[4]?.verdict, 'missed')
  const na = clusterFanoutRows('4 sessions', null, 'no Redis Cluster reachable at h:1 (x)')
  t.ok(na.every((r) => r.verdict === 'n/a' && r.note === 'no Redis Cluster reachable at h:1 (x)'), 'no cluster: n/a, not a failure')
})

t.test('cycles rows: a run after the cycles costs at most 1.2× a fresh one', async (t) => {
  const probe = (cpuUsPerToken: number, heapUsed: number) => ({ runs: 10, tokens: 1000, seconds: 1, cpuUsPerToken, redisCallsPerRun: 100, redisUsecPerRun: 500, unfinished: 0, heapUsed })
  const figures: CyclesFigures = { fresh: probe(10, 1_000_000), used: probe(11, 1_100_000), cycles: { completed: 999, failed: 1, errors: ['x'] } }
  const rows = redisCyclesRows('1000 cycles', figures)
  t.same(rows.map((r) => [r.metric, r.verdict]), [
    ['server CPU per upstream token', 'met'],
    ['Redis commands per run', 'info'],
    ['Redis time per run', 'info'],
    ['heap after GC', 'info'],
    ['failed cycles and unfinished probe runs', 'missed'],
  ])
  t.match(rows[0], { project: 11, baseline: 10, target: { kind: 'ratio-at-most', value: 1.2 } })
  t.match(rows[3], { note: /; 100 bytes retained per cycle$/ })
  t.equal(redisCyclesRows('c', { ...figures, used: probe(13, 1_000_000) })[0]?.verdict, 'missed')
  t.ok(redisCyclesRows('c', null, 'why').every((r) => r.verdict === 'n/a' && r.note === 'why'))
})

t.test('the Redis scenarios without a reachable store: n/a rows that say why', async (t) => {
  const port = await freePort()
  const ctx = { sizes: QUICK, redis: { url: `redis://127.0.0.1:${port}`, clusterSeed: `127.0.0.1:${port}` } } as unknown as BenchContext
  for (const scenario of [redisFanout, redisCycles, clusterFanout]) {
    const result = await scenario(ctx)
    t.ok(result.rows.length > 0)
    t.ok(result.rows.every((r) => r.verdict === 'n/a' && r.note?.startsWith(`no Redis reachable at redis://127.0.0.1:${port} (`)), `${result.scenario}: every row n/a`)
    t.match(result.details, { unavailable: /^no Redis reachable/ })
  }
  t.match(await openCluster(`127.0.0.1:${port}`), /^no Redis Cluster reachable at 127\.0\.0\.1:\d+ \(/)
  t.match(await openStandalone(`redis://127.0.0.1:${port}`), /^no Redis reachable at/)
})

t.test('--strict and the default output directory', async (t) => {
  const tmp = await mkdtemp(join(tmpdir(), 'agw-bench-tmp-'))
  t.teardown(() => rm(tmp, { recursive: true, force: true }))
  const port = await freePort()
  const run = await runCli(t, ['--quick', '--strict', '--only', 'handshake,redis-cycles', '--redis', `redis://127.0.0.1:${port}`], { env: { TMPDIR: tmp } })
  const dir = join(tmp, 'agent-gateway-bench')
  const { report, files } = await readQuickReport(dir)
  t.ok(files.some((f) => f.endsWith('-quick.md')), 'written under the temp dir, outside the tree')
  t.match(run.stdout, `written to ${dir}: ${dir}/`)
  const missed = missedRows(report).length
  t.equal(run.code, missed > 0 ? 1 : 0, `exit 1 exactly when a target was missed (${missed} here)`)
  t.match(run.stderr, `bench --strict: ${missed} targets missed`)
  const cycles = report.scenarios.find((s) => s.scenario === 'redis-cycles')
  t.ok(cycles?.rows.every((r) => r.verdict === 'n/a'), 'no Redis: n/a, which --strict does not count')

  const onlyNa = await runCli(t, ['--quick', '--strict', '--only', 'cluster-fanout', '--redis', `redis://127.0.0.1:${port}`, '--out', tmp])
  t.equal(onlyNa.code, 0, 'nothing missed: exit 0')
  t.match(onlyNa.stderr, 'bench --strict: 0 targets missed')
})

t.test('quick mode end to end', async (t) => {
  const out = await mkdtemp(join(tmpdir(), 'agw-bench-'))
  t.teardown(() => rm(out, { recursive: true, force: true }))
  // The Redis scenarios run in store-scenarios.test.ts, where they skip without a Redis.
  const names = SCENARIOS.filter((name) => !STORE_SCENARIOS.includes(name))
  const { code, stdout, stderr } = await runCli(t, ['--quick', '--profile', '--out', out, '--timeout', '100', '--only', names.join(',')])
  t.equal(code, 0, stderr)
  t.match(stdout, '| scenario | case | metric | project | baseline | ratio | target | verdict |')

  const { report, json, files } = await readQuickReport(out)
  t.ok(files.includes(json.replace('.json', '.md')), 'markdown summary written')
  t.ok(files.includes(json.replace('.json', '-latency.svg')), 'latency histogram written')
  const svg = await readFile(join(out, json.replace('.json', '-latency.svg')), 'utf8')
  t.match(svg, /^<svg /)
  const profiles = await readdir(join(out, 'profiles', 'project'))
  t.ok(profiles.some((f) => f.endsWith('.cpuprofile')), '--profile: the servers wrote CPU profiles')

  checkReport(t, report, names)
  const latency = report.scenarios.find((s) => s.scenario === 'latency')
  t.ok(latency?.histograms?.every((h) => h.samples.length > 0), 'latency samples on both sides at both loads')
  const fanout = report.scenarios.find((s) => s.scenario === 'fanout')?.details as { repetitions: Record<string, Record<string, ThroughputFigures[]>> }
  for (const [label, sides] of Object.entries(fanout.repetitions)) {
    for (const [side, reps] of Object.entries(sides)) {
      t.ok(reps.length > 0 && reps.every((f) => f.miscountedRuns === 0), `${label}, ${side}: the frames carried exactly the tokens of each complete`)
    }
  }
})
