/**
 * The bench's output: rows of project/baseline ratios judged against the issue's targets,
 * the JSON report, its markdown summary and a hand-written SVG latency histogram.
 */
import { logHistogram, quantile, ratio, type Histogram } from './stats.ts'
import type { ScenarioName } from './options.ts'

export type Target =
  | { kind: 'ratio-at-least'; value: number }
  | { kind: 'ratio-at-most'; value: number }
  /** project ≤ baseline + value (same unit as the metric). */
  | { kind: 'plus-at-most'; value: number }
  /** project < value, absolute. */
  | { kind: 'below'; value: number }
  /** project ≤ value, absolute. */
  | { kind: 'at-most'; value: number }
  /** project === value, absolute. */
  | { kind: 'equals'; value: number }
  | { kind: 'none' }

/** met / missed: judged against the target; n/a: a target, but nothing to judge (a note says why); info: no target. */
export type Verdict = 'met' | 'missed' | 'info' | 'n/a'

export interface Row {
  scenario: ScenarioName
  /** Which variant of the scenario: load level, upstream, session count. */
  case: string
  metric: string
  unit: string
  project: number | null
  baseline: number | null
  /** project / baseline. */
  ratio: number | null
  target: Target
  verdict: Verdict
  note?: string
}

export function verdictOf(target: Target, project: number | null, baseline: number | null): Verdict {
  if (project === null) return 'n/a'
  if (target.kind === 'none') return 'info'
  const judged = (met: boolean): Verdict => (met ? 'met' : 'missed')
  if (target.kind === 'below') return judged(project < target.value)
  if (target.kind === 'at-most') return judged(project <= target.value)
  if (target.kind === 'equals') return judged(project === target.value)
  if (baseline === null) return 'n/a'
  if (target.kind === 'plus-at-most') return judged(project <= baseline + target.value)
  const r = ratio(project, baseline)
  if (r === null) return 'n/a'
  return judged(target.kind === 'ratio-at-least' ? r >= target.value : r <= target.value)
}

/** An n/a row always says why; rows that know the reason give their own note. */
const NOT_MEASURED = 'n/a: a side measured nothing to judge (no frame in the window, or a zero baseline)'

export function row(fields: Omit<Row, 'ratio' | 'verdict'>): Row {
  const verdict = verdictOf(fields.target, fields.project, fields.baseline)
  return { ...(verdict === 'n/a' ? { note: NOT_MEASURED } : {}), ...fields, ratio: ratio(fields.project, fields.baseline), verdict }
}

export interface HistogramSeries {
  /** Panel title, e.g. `light load`. */
  panel: string
  side: 'project' | 'baseline'
  samples: number[]
}

export interface ScenarioResult {
  scenario: ScenarioName
  rows: Row[]
  /** Absolute figures per side and case: this machine's numbers, for reading the ratios. */
  details: Record<string, unknown>
  /** Latency samples to plot; empty for scenarios without any. */
  histograms: HistogramSeries[]
}

export interface BenchReport {
  meta: {
    date: string
    mode: 'quick' | 'full'
    node: string
    cpus: number
    cpuModel: string
    loadAverageAtStart: number[]
    /** The machine's 1/5/15-minute load average as each scenario ended: other work on the box shows here. */
    loadAverageAfter: Record<string, number[]>
    fdLimit: string
    durationMs: number
  }
  scenarios: ScenarioResult[]
}

export function describeTarget(target: Target, unit: string): string {
  switch (target.kind) {
    case 'ratio-at-least':
      return `≥ ${target.value}× baseline`
    case 'ratio-at-most':
      return `≤ ${target.value}× baseline`
    case 'plus-at-most':
      return `≤ baseline + ${target.value} ${unit}`
    case 'below':
      return `< ${target.value} ${unit}`
    case 'at-most':
      return `≤ ${target.value} ${unit}`
    case 'equals':
      return `= ${target.value}`
    case 'none':
      return '—'
  }
}

export function formatNumber(value: number | null): string {
  if (value === null) return 'n/a'
  const magnitude = Math.abs(value)
  if (magnitude >= 100) return Math.round(value).toLocaleString('en-US')
  if (magnitude >= 10) return value.toFixed(1)
  return value.toFixed(2)
}

/** µs as the axis reads them: 100 µs, 1 ms, 10 s. */
export function formatMicros(us: number): string {
  if (us >= 1e6) return `${formatNumber(us / 1e6)} s`
  if (us >= 1e3) return `${formatNumber(us / 1e3)} ms`
  return `${formatNumber(us)} µs`
}

const VERDICT_MARK: Record<Verdict, string> = { met: '✅ met', missed: '❌ missed', info: 'info', 'n/a': 'n/a' }

export function missedRows(report: BenchReport): Row[] {
  return report.scenarios.flatMap((s) => s.rows).filter((r) => r.verdict === 'missed')
}

/** The process's exit code for a finished run: with --strict, 1 when any target was missed. */
export function exitCodeFor(report: BenchReport, strict: boolean): 0 | 1 {
  return strict && missedRows(report).length > 0 ? 1 : 0
}

export function renderMarkdown(report: BenchReport, svgName?: string): string {
  const { meta } = report
  const lines = [
    `# agent-gateway bench, ${meta.date} (${meta.mode})`,
    '',
    `Ratios are project / baseline (plain \`ws\`, same job, same upstream), measured in the same run, alternating.`,
    `Absolute figures are this machine's only: ${meta.cpus} × ${meta.cpuModel}, Node ${meta.node}, fd limit ${meta.fdLimit},`,
    `load average at start ${meta.loadAverageAtStart.map((n) => n.toFixed(2)).join(' / ')}, then after each scenario ${
      Object.entries(meta.loadAverageAfter).map(([name, load]) => `${name} ${(load[0] as number).toFixed(1)}`).join(', ') || '—'
    } (1 min); the run took ${(meta.durationMs / 1000).toFixed(1)} s.`,
    '',
    '| scenario | case | metric | project | baseline | ratio | target | verdict |',
    '| --- | --- | --- | ---: | ---: | ---: | --- | --- |',
  ]
  for (const scenario of report.scenarios) {
    for (const r of scenario.rows) {
      const ratioText = r.ratio === null ? 'n/a' : `${r.ratio.toFixed(2)}×`
      const metric = `${r.metric} (${r.unit})${r.note ? ` — ${r.note}` : ''}`
      lines.push(
        `| ${r.scenario} | ${r.case} | ${metric} | ${formatNumber(r.project)} | ${formatNumber(r.baseline)} | ${ratioText} | ${describeTarget(r.target, r.unit)} | ${VERDICT_MARK[r.verdict]} |`,
      )
    }
  }
  const rows = report.scenarios.flatMap((s) => s.rows)
  const tally = (verdict: Verdict) => rows.filter((r) => r.verdict === verdict).length
  const missed = missedRows(report)
  lines.push('', `Targets: ${tally('met')} met, ${tally('missed')} missed, ${tally('n/a')} n/a.`)
  lines.push(missed.length === 0 ? 'Every target with a verdict was met.' : `Missed: ${missed.map((r) => `${r.scenario} ${r.case} ${r.metric}`).join('; ')}.`)
  if (svgName) lines.push('', `Latency histogram: ![added latency](${svgName})`)
  return `${lines.join('\n')}\n`
}

const COLOURS: Record<HistogramSeries['side'], string> = { project: '#d9480f', baseline: '#1864ab' }

function escapeXml(text: string): string {
  return text.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c] as string)
}

/**
 * Latency histograms, one panel per load level, project and baseline overlaid as step lines;
 * log-scale x (µs), share of samples per bin on y. Plain SVG text, no plotting library.
 */
export function renderHistogramSvg(series: readonly HistogramSeries[], title: string): string {
  const panels = [...new Set(series.map((s) => s.panel))]
  let smallest = Infinity
  let largest = 0
  for (const s of series) {
    for (const v of s.samples) {
      if (v > 0 && v < smallest) smallest = v
      if (v > largest) largest = v
    }
  }
  // Whole decades around the samples, at least one, never below 1 µs.
  const min = 10 ** Math.floor(Math.log10(Math.max(1, Math.min(smallest, 1e9))))
  const max = 10 ** Math.ceil(Math.log10(Math.max(min * 10, largest)))
  const width = 640
  const panelHeight = 220
  const margin = { left: 56, right: 40, top: 36, bottom: 40 }
  const plotWidth = width - margin.left - margin.right
  const plotHeight = panelHeight - margin.top - margin.bottom
  const decades = Math.round(Math.log10(max / min))
  const x = (value: number) => margin.left + (Math.log10(value / min) / decades) * plotWidth
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${panelHeight * panels.length + 24}" font-family="sans-serif" font-size="11">`,
    `<text x="${width / 2}" y="16" text-anchor="middle" font-size="13">${escapeXml(title)}</text>`,
  ]
  panels.forEach((panel, p) => {
    const top = 24 + p * panelHeight
    const inPanel = series.filter((s) => s.panel === panel)
    const histograms = inPanel.map((s) => ({ s, h: logHistogram(s.samples, { min, max, binsPerDecade: 10 }) }))
    const peak = Math.max(0.01, ...histograms.flatMap(({ s, h }) => h.counts.map((c) => c / Math.max(1, s.samples.length))))
    const y = (share: number) => top + margin.top + plotHeight - (share / peak) * plotHeight
    parts.push(`<text x="${margin.left}" y="${top + 20}" font-size="12">${escapeXml(panel)}</text>`)
    parts.push(
      `<rect x="${margin.left}" y="${top + margin.top}" width="${plotWidth}" height="${plotHeight}" fill="none" stroke="#adb5bd"/>`,
    )
    for (let d = 0; d <= decades; d++) {
      const value = min * 10 ** d
      const px = x(value).toFixed(1)
      parts.push(`<line x1="${px}" x2="${px}" y1="${top + margin.top}" y2="${top + margin.top + plotHeight}" stroke="#e9ecef"/>`)
      parts.push(`<text x="${px}" y="${top + margin.top + plotHeight + 14}" text-anchor="middle">${formatMicros(value)}</text>`)
    }
    parts.push(`<text x="${margin.left - 6}" y="${top + margin.top + 4}" text-anchor="end">${(peak * 100).toFixed(0)}%</text>`)
    parts.push(`<text x="14" y="${top + margin.top + plotHeight / 2}" transform="rotate(-90 14 ${top + margin.top + plotHeight / 2})" text-anchor="middle">share of samples</text>`)
    parts.push(`<text x="${margin.left - 6}" y="${top + margin.top + plotHeight}" text-anchor="end">0</text>`)
    histograms.forEach(({ s, h }, i) => {
      const colour = COLOURS[s.side]
      parts.push(`<path d="${stepPath(h, s.samples.length, x, y)}" fill="none" stroke="${colour}" stroke-width="1.5"/>`)
      const legendX = margin.left + plotWidth - 230
      const legendY = top + margin.top + 14 + i * 14
      let legend = `${s.side}, n=${s.samples.length}`
      if (s.samples.length > 0) {
        // p99 as a dashed line: the figure the target is about.
        const p99 = quantile([...s.samples].sort((a, b) => a - b), 0.99)
        const px = x(Math.min(max, Math.max(min, p99))).toFixed(1)
        parts.push(`<line x1="${px}" x2="${px}" y1="${top + margin.top}" y2="${top + margin.top + plotHeight}" stroke="${colour}" stroke-dasharray="4 3"/>`)
        legend += `, p99 ${formatMicros(p99)} (dashed)`
      }
      parts.push(`<line x1="${legendX}" x2="${legendX + 18}" y1="${legendY - 4}" y2="${legendY - 4}" stroke="${colour}" stroke-width="2"/>`)
      parts.push(`<text x="${legendX + 24}" y="${legendY}">${escapeXml(legend)}</text>`)
    })
  })
  parts.push('</svg>')
  return `${parts.join('\n')}\n`
}

function stepPath(h: Histogram, total: number, x: (value: number) => number, y: (share: number) => number): string {
  const points: string[] = [`M${x(h.edges[0] as number).toFixed(1)},${y(0).toFixed(1)}`]
  h.counts.forEach((count, i) => {
    const share = count / Math.max(1, total)
    points.push(`L${x(h.edges[i] as number).toFixed(1)},${y(share).toFixed(1)}`)
    points.push(`L${x(h.edges[i + 1] as number).toFixed(1)},${y(share).toFixed(1)}`)
  })
  points.push(`L${x(h.edges.at(-1) as number).toFixed(1)},${y(0).toFixed(1)}`)
  return points.join(' ')
}
