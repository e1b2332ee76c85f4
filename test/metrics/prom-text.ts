/**
 * A strict parser of the Prometheus text exposition format (0.0.4), small enough to trust:
 * it throws on anything a Prometheus server would reject, and checks histogram invariants.
 * @see https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format
 */

export type Labels = Record<string, string>

export interface Sample {
  name: string
  labels: Labels
  value: number
}

export interface Family {
  name: string
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped'
  help: string | undefined
  samples: Sample[]
}

export type Exposition = Map<string, Family>

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped'])

export class ParseError extends Error {
  constructor(line: number, message: string) {
    super(`line ${line}: ${message}`)
  }
}

/** Values are read as Go's ParseFloat reads them: infinities and NaN in any letter case (prom-client writes `Nan`). */
function parseValue(text: string, line: number): number {
  if (/^\+?inf(inity)?$/i.test(text)) return Infinity
  if (/^-inf(inity)?$/i.test(text)) return -Infinity
  if (/^nan$/i.test(text)) return NaN
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new ParseError(line, `bad value ${JSON.stringify(text)}`)
  return Number(text)
}

/** `{a="x",b="y\"z"}` starting at `start`; returns the labels and the index after `}`. */
function parseLabels(text: string, start: number, line: number): { labels: Labels; end: number } {
  const labels: Labels = {}
  let i = start + 1
  for (;;) {
    if (text[i] === '}') return { labels, end: i + 1 }
    const eq = text.indexOf('=', i)
    if (eq === -1) throw new ParseError(line, 'label without =')
    const name = text.slice(i, eq)
    if (!LABEL_NAME.test(name)) throw new ParseError(line, `bad label name ${JSON.stringify(name)}`)
    if (name in labels) throw new ParseError(line, `duplicate label ${name}`)
    if (text[eq + 1] !== '"') throw new ParseError(line, 'label value must be quoted')
    let value = ''
    let j = eq + 2
    for (;; j++) {
      const c = text[j]
      if (c === undefined) throw new ParseError(line, 'unterminated label value')
      if (c === '"') break
      if (c === '\\') {
        const next = text[++j]
        if (next === 'n') value += '\n'
        else if (next === '\\' || next === '"') value += next
        else throw new ParseError(line, `bad escape \\${next}`)
      } else value += c
    }
    labels[name] = value
    i = j + 1
    if (text[i] === ',') i++
    else if (text[i] !== '}') throw new ParseError(line, 'expected , or } after a label')
  }
}

function parseSample(text: string, line: number): Sample {
  const brace = text.indexOf('{')
  const space = text.indexOf(' ')
  const nameEnd = brace !== -1 && (space === -1 || brace < space) ? brace : space
  if (nameEnd <= 0) throw new ParseError(line, 'sample without a value')
  const name = text.slice(0, nameEnd)
  if (!METRIC_NAME.test(name)) throw new ParseError(line, `bad metric name ${JSON.stringify(name)}`)
  let labels: Labels = {}
  let rest = nameEnd
  if (text[nameEnd] === '{') ({ labels, end: rest } = parseLabels(text, nameEnd, line))
  const fields = text.slice(rest).trim().split(/\s+/)
  if (text[rest] !== ' ' || fields.length < 1 || fields.length > 2) throw new ParseError(line, 'expected a value and an optional timestamp')
  if (fields[1] !== undefined && !/^-?\d+$/.test(fields[1])) throw new ParseError(line, 'bad timestamp')
  return { name, labels, value: parseValue(fields[0] as string, line) }
}

/** The family a sample belongs to: histogram and summary samples carry a suffix. */
function familyOf(families: Exposition, sampleName: string): Family | undefined {
  const exact = families.get(sampleName)
  if (exact) return exact
  const match = /^(.*)_(bucket|sum|count)$/.exec(sampleName)
  const family = match ? families.get(match[1] as string) : undefined
  if (!family) return undefined
  if (family.type === 'histogram') return family
  return family.type === 'summary' && match?.[2] !== 'bucket' ? family : undefined
}

function checkHistogram(family: Family): void {
  const series = new Map<string, { buckets: Array<[number, number]>; count?: number; sum?: number }>()
  for (const sample of family.samples) {
    const { le, ...rest } = sample.labels
    const key = JSON.stringify(Object.entries(rest).sort())
    const entry = series.get(key) ?? { buckets: [] }
    series.set(key, entry)
    if (sample.name.endsWith('_bucket')) {
      if (le === undefined) throw new Error(`${family.name}: bucket without le`)
      entry.buckets.push([parseValue(le, 0), sample.value])
    } else if (sample.name.endsWith('_count')) entry.count = sample.value
    else if (sample.name.endsWith('_sum')) entry.sum = sample.value
    else throw new Error(`${family.name}: unexpected sample ${sample.name}`)
  }
  for (const [key, entry] of series) {
    const sorted = [...entry.buckets].sort((a, b) => a[0] - b[0])
    for (let i = 1; i < sorted.length; i++) {
      if ((sorted[i] as [number, number])[1] < (sorted[i - 1] as [number, number])[1]) throw new Error(`${family.name}${key}: buckets not cumulative`)
    }
    const inf = sorted.at(-1)
    if (!inf || inf[0] !== Infinity) throw new Error(`${family.name}${key}: no +Inf bucket`)
    if (entry.count !== inf[1]) throw new Error(`${family.name}${key}: _count ${entry.count} != +Inf bucket ${inf[1]}`)
    if (entry.sum === undefined) throw new Error(`${family.name}${key}: no _sum`)
  }
}

export function parseExposition(text: string): Exposition {
  const families: Exposition = new Map()
  const seen = new Set<string>()
  let current: Family | undefined
  const declare = (name: string, line: number): Family => {
    if (!METRIC_NAME.test(name)) throw new ParseError(line, `bad metric name ${JSON.stringify(name)}`)
    let family = families.get(name)
    if (family && family.samples.length > 0) throw new ParseError(line, `${name} declared after its samples`)
    if (!family) families.set(name, (family = { name, type: 'untyped', help: undefined, samples: [] }))
    return family
  }
  if (text !== '' && !text.endsWith('\n')) throw new ParseError(0, 'the exposition must end with a newline')
  const lines = text.split('\n')
  lines.forEach((raw, index) => {
    const line = index + 1
    if (raw.trim() === '') return
    if (raw.startsWith('#')) {
      const [, keyword, name, ...rest] = raw.split(' ')
      if (keyword === 'HELP' && name) {
        const family = declare(name, line)
        if (family.help !== undefined) throw new ParseError(line, `second HELP for ${name}`)
        family.help = rest.join(' ').replace(/\\n/g, '\n').replace(/\\\\/g, '\\')
      } else if (keyword === 'TYPE' && name) {
        const family = declare(name, line)
        const type = rest.join(' ')
        if (!TYPES.has(type)) throw new ParseError(line, `bad type ${type}`)
        family.type = type as Family['type']
      }
      return
    }
    const sample = parseSample(raw, line)
    const family = familyOf(families, sample.name) ?? declare(sample.name, line)
    if (current && family !== current && family.samples.length > 0) throw new ParseError(line, `samples of ${family.name} are not together`)
    current = family
    const id = `${sample.name}${JSON.stringify(Object.entries(sample.labels).sort())}`
    if (seen.has(id)) throw new ParseError(line, `duplicate series ${id}`)
    seen.add(id)
    family.samples.push(sample)
  })
  for (const family of families.values()) if (family.type === 'histogram') checkHistogram(family)
  return families
}

/** The value of one series, or undefined when absent. Labels must match exactly. */
export function valueOf(exposition: Exposition, name: string, labels: Labels = {}): number | undefined {
  const wanted = JSON.stringify(Object.entries(labels).sort())
  for (const family of exposition.values()) {
    for (const sample of family.samples) {
      if (sample.name === name && JSON.stringify(Object.entries(sample.labels).sort()) === wanted) return sample.value
    }
  }
  return undefined
}
