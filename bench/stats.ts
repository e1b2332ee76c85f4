/** Plain statistics over samples: no dependencies, fixed inputs give fixed outputs (unit-tested). */

export interface Summary {
  count: number
  min: number
  mean: number
  p50: number
  p90: number
  p99: number
  max: number
}

/** Nearest-rank quantile of an ascending array (q in [0, 1]); the sample itself, never interpolated. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) throw new RangeError('quantile of no samples')
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil(q * sorted.length)))
  return sorted[rank - 1] as number
}

export function summarize(samples: readonly number[]): Summary | null {
  if (samples.length === 0) return null
  const sorted = [...samples].sort((a, b) => a - b)
  const sum = sorted.reduce((total, value) => total + value, 0)
  return {
    count: sorted.length,
    min: sorted[0] as number,
    mean: sum / sorted.length,
    p50: quantile(sorted, 0.5),
    p90: quantile(sorted, 0.9),
    p99: quantile(sorted, 0.99),
    max: sorted.at(-1) as number,
  }
}

export interface Point {
  x: number
  y: number
}

/** Least-squares slope of y over x: bytes per connection from (connections, bytes) points. */
export function slope(points: readonly Point[]): number | null {
  if (points.length < 2) return null
  const meanX = points.reduce((sum, p) => sum + p.x, 0) / points.length
  const meanY = points.reduce((sum, p) => sum + p.y, 0) / points.length
  let covariance = 0
  let variance = 0
  for (const p of points) {
    covariance += (p.x - meanX) * (p.y - meanY)
    variance += (p.x - meanX) ** 2
  }
  return variance === 0 ? null : covariance / variance
}

/** project / baseline; null when either is missing or the baseline is zero. */
export function ratio(project: number | null, baseline: number | null): number | null {
  if (project === null || baseline === null || baseline === 0) return null
  return project / baseline
}

/** `total` per unit, or null when there were no units (nothing to divide by). */
export function perUnit(total: number, units: number): number | null {
  return units > 0 ? total / units : null
}

/** Counts by key, summed: error codes, close codes. */
export function sumCounts(records: ReadonlyArray<Record<string, number>>): Record<string, number> {
  const sum: Record<string, number> = {}
  for (const record of records) {
    for (const [key, count] of Object.entries(record)) sum[key] = (sum[key] ?? 0) + count
  }
  return sum
}

/** The sum of a record's counts. */
export function total(counts: Readonly<Record<string, number>>): number {
  return Object.values(counts).reduce((sum, count) => sum + count, 0)
}

/** One figure of a summary, or null when there were no samples. */
export function pick(summary: Summary | null, key: keyof Summary): number | null {
  return summary === null ? null : summary[key]
}

/** The middle value; the mean of the two middle ones for an even count. */
export function median(values: readonly number[]): number | null {
  if (values.length === 0) return null
  const sorted = [...values].sort((a, b) => a - b)
  const middle = sorted.length / 2
  return Number.isInteger(middle) ? ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2 : (sorted[Math.floor(middle)] as number)
}

export interface Histogram {
  /** Bin i holds samples in [edges[i], edges[i + 1]); the last bin also takes everything above. */
  edges: number[]
  counts: number[]
  /** Samples below edges[0], counted into the first bin. */
  below: number
}

/**
 * Logarithmic bins from `min` to `max` (latencies span decades): `binsPerDecade` bins per
 * factor of ten. Samples outside the range land in the first or last bin.
 */
export function logHistogram(samples: readonly number[], options: { min: number; max: number; binsPerDecade: number }): Histogram {
  const { min, max, binsPerDecade } = options
  if (!(min > 0 && max > min && binsPerDecade > 0)) throw new RangeError('histogram needs 0 < min < max and bins > 0')
  const bins = Math.ceil(Math.log10(max / min) * binsPerDecade - 1e-9)
  const edges = Array.from({ length: bins + 1 }, (_, i) => min * 10 ** (i / binsPerDecade))
  const counts = new Array<number>(bins).fill(0)
  let below = 0
  for (const sample of samples) {
    if (sample < min) below++
    const index = sample < min ? 0 : Math.min(bins - 1, Math.floor(Math.log10(sample / min) * binsPerDecade + 1e-9))
    counts[index] = (counts[index] as number) + 1
  }
  return { edges, counts, below }
}
