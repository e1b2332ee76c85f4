import t from 'tap'
import { Histogram, Registry } from 'prom-client'
import { TallyHistogram } from '../../src/plugins/tally-histogram.ts'
import { parseExposition } from './prom-text.ts'

const BUCKETS = [0.001, 0.005, 0.01, 0.1, 1]
// On a bound (counted in it), between bounds, below the first, above the last, and zero.
const VALUES = [0.001, 0.0005, 0.003, 0.005, 0.02, 0.5, 1, 7, 0, 0.1]

function pair(): { ours: Registry; theirs: Registry; tally: TallyHistogram; histogram: Histogram } {
  const ours = new Registry()
  const theirs = new Registry()
  const tally = new TallyHistogram({ name: 'gap_seconds', help: 'A gap', buckets: BUCKETS, registers: [ours] })
  const histogram = new Histogram({ name: 'gap_seconds', help: 'A gap', buckets: BUCKETS, registers: [theirs] })
  return { ours, theirs, tally, histogram }
}

t.test("a scrape reads exactly what prom-client's Histogram writes for the same values", async (t) => {
  const { ours, theirs, tally, histogram } = pair()
  t.equal(await ours.metrics(), await theirs.metrics(), 'before any observation: zeros in every bucket')
  for (const value of VALUES) {
    tally.observe(value)
    histogram.observe(value)
  }
  const text = await ours.metrics()
  t.equal(text, await theirs.metrics())
  // prom-client adds `exemplar: null` to its bucket lines; nothing else differs.
  const json = async (registry: Registry) =>
    (await registry.getMetricsAsJSON()).map(({ values, ...family }) => ({ ...family, values: values.map(({ labels, value, ...rest }) => ({ labels, value, metricName: (rest as { metricName?: string }).metricName })) }))
  t.strictSame(await json(ours), await json(theirs), 'and the same JSON')
  const samples = parseExposition(text).get('gap_seconds')?.samples ?? []
  t.same(
    samples.filter((sample) => sample.name === 'gap_seconds_bucket').map((sample) => [sample.labels.le, sample.value]),
    [['0.001', 3], ['0.005', 5], ['0.01', 5], ['0.1', 7], ['1', 9], ['+Inf', 10]],
    'cumulative buckets, a value on a bound counted in it',
  )
})

t.test('reset forgets every observation, as the registry asks', async (t) => {
  const { ours, theirs, tally, histogram } = pair()
  tally.observe(0.2)
  histogram.observe(0.2)
  ours.resetMetrics()
  theirs.resetMetrics()
  histogram.zero({})
  t.equal(await ours.metrics(), await theirs.metrics())
  tally.observe(0.002)
  histogram.observe(0.002)
  t.equal(await ours.metrics(), await theirs.metrics())
})
