import t from 'tap'
import { parseExposition, valueOf } from './prom-text.ts'

const histogram = (buckets: string, count = '3') => `# HELP h_seconds A histogram
# TYPE h_seconds histogram
${buckets}
h_seconds_sum{kind="a"} 1.5
h_seconds_count{kind="a"} ${count}
`

t.test('reads what Prometheus reads', async (t) => {
  const text = `# HELP up_total Counts, with a \\\\ and a \\n in the help
# TYPE up_total counter
up_total{a="x",b="q\\"uote\\\\d\\nl"} 3 1700000000000
up_total 1e3
# a comment
# TYPE g gauge
g NaN
g{s="inf"} +Inf
g{s="neg"} -Inf
g{s="nan"} Nan
` + histogram('h_seconds_bucket{kind="a",le="0.1"} 1\nh_seconds_bucket{kind="a",le="1"} 2\nh_seconds_bucket{kind="a",le="+Inf"} 3')
  const exposition = parseExposition(text)
  t.equal(exposition.get('up_total')?.help, 'Counts, with a \\ and a \n in the help')
  t.equal(valueOf(exposition, 'up_total', { a: 'x', b: 'q"uote\\d\nl' }), 3)
  t.equal(valueOf(exposition, 'up_total'), 1000)
  t.ok(Number.isNaN(valueOf(exposition, 'g')))
  t.equal(valueOf(exposition, 'g', { s: 'inf' }), Infinity)
  t.equal(valueOf(exposition, 'g', { s: 'neg' }), -Infinity)
  t.ok(Number.isNaN(valueOf(exposition, 'g', { s: 'nan' })))
  t.equal(exposition.get('h_seconds')?.type, 'histogram')
  t.equal(valueOf(exposition, 'h_seconds_bucket', { kind: 'a', le: '1' }), 2)
  t.equal(valueOf(exposition, 'missing'), undefined)
})

t.test('refuses what Prometheus refuses', async (t) => {
  const bad: Record<string, [string, RegExp]> = {
    'no trailing newline': ['x 1', /must end with a newline/],
    'bad metric name': ['1x 1\n', /bad metric name/],
    'bad label name': ['x{1a="v"} 1\n', /bad label name/],
    'unquoted label value': ['x{a=v} 1\n', /must be quoted/],
    'unterminated label value': ['x{a="v} 1\n', /unterminated/],
    'bad escape': ['x{a="\\t"} 1\n', /bad escape/],
    'duplicate label': ['x{a="1",a="2"} 1\n', /duplicate label/],
    'label without =': ['x{a} 1\n', /without =/],
    'garbage after a label': ['x{a="1"b="2"} 1\n', /expected , or }/],
    'bad value': ['x 1,5\n', /bad value/],
    'no value': ['x\n', /without a value/],
    'too many fields': ['x 1 2 3\n', /optional timestamp/],
    'bad timestamp': ['x 1 soon\n', /bad timestamp/],
    'bad type': ['# TYPE x meter\nx 1\n', /bad type/],
    'second HELP': ['# HELP x a\n# HELP x b\nx 1\n', /second HELP/],
    'TYPE after samples': ['x 1\n# TYPE x counter\n', /after its samples/],
    'duplicate series': ['x{a="1"} 1\nx{a="1"} 2\n', /duplicate series/],
    'interleaved families': ['x 1\ny 1\nx{a="2"} 1\n', /not together/],
    'buckets not cumulative': [histogram('h_seconds_bucket{kind="a",le="0.1"} 2\nh_seconds_bucket{kind="a",le="1"} 1\nh_seconds_bucket{kind="a",le="+Inf"} 3'), /not cumulative/],
    'no +Inf bucket': [histogram('h_seconds_bucket{kind="a",le="0.1"} 1'), /no \+Inf bucket/],
    'count differs from +Inf': [histogram('h_seconds_bucket{kind="a",le="+Inf"} 2'), /_count 3 != \+Inf bucket 2/],
    'bucket without le': [histogram('h_seconds_bucket{kind="a"} 3'), /bucket without le/],
    'no _sum': ['# TYPE h histogram\nh_bucket{le="+Inf"} 1\nh_count 1\n', /no _sum/],
  }
  for (const [why, [text, message]] of Object.entries(bad)) t.throws(() => parseExposition(text), { message }, why)
})

t.test('summaries and untyped samples', async (t) => {
  const exposition = parseExposition('# TYPE s summary\ns{quantile="0.5"} 1\ns_sum 2\ns_count 3\nfree 7\n')
  t.equal(exposition.get('s')?.samples.length, 3)
  t.equal(exposition.get('free')?.type, 'untyped')
  t.equal(parseExposition('# TYPE s summary\ns_bucket{le="1"} 1\n').get('s_bucket')?.type, 'untyped', 'a summary has no buckets: s_bucket is a family of its own')
})
