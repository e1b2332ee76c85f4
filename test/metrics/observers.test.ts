import t from 'tap'
import { closeCodeLabel, createMetrics, sentFrameType, statusClass } from '../../src/plugins/metrics.ts'
import { parseExposition, valueOf } from './prom-text.ts'

async function read(metrics: ReturnType<typeof createMetrics>) {
  const exposition = parseExposition(await metrics.registry.metrics())
  return (name: string, labels?: Record<string, string>) => valueOf(exposition, name, labels)
}

t.test('a run tracker measures on its own clock', async (t) => {
  let now = 1000
  const metrics = createMetrics({ now: () => now })
  const run = metrics.runObserver.started()
  now += 400
  run.event('tool_call')
  run.event('tool_result')
  now += 100
  run.event('token') // first token: 0.5 s
  now += 20
  run.event('token') // gap 0.02 s
  now += 300
  run.event('tool_call') // a tool round: the next token is no gap
  now += 1000
  run.event('token')
  now += 10
  run.event('token') // gap 0.01 s
  run.cancelRequested()
  now += 50
  run.cancelRequested() // the first request is the one that counts
  now += 50
  run.ended('cancelled')
  metrics.runObserver.started().ended('interrupted')
  metrics.runObserver.started().ended('length')

  const value = await read(metrics)
  t.equal(value('agw_run_time_to_first_token_seconds_sum'), 0.5)
  t.equal(value('agw_run_time_to_first_token_seconds_count'), 1)
  t.equal(value('agw_run_inter_token_gap_seconds_count'), 2)
  t.ok(Math.abs(value('agw_run_inter_token_gap_seconds_sum')! - 0.03) < 1e-9)
  t.equal(value('agw_tokens_streamed_total'), 4)
  t.ok(Math.abs(value('agw_run_cancel_latency_seconds_sum')! - 0.1) < 1e-9, 'from the first cancel request to the end')
  t.ok(Math.abs(value('agw_run_duration_seconds_sum', { outcome: 'cancelled' })! - 1.93) < 1e-9)
  t.equal(value('agw_runs_total', { outcome: 'cancelled' }), 1)
  t.equal(value('agw_runs_total', { outcome: 'interrupted' }), 1)
  t.equal(value('agw_runs_total', { outcome: 'completed' }), 1, 'length is a completed run')
  t.equal(value('agw_run_cancel_latency_seconds_count'), 1, 'runs nobody cancelled have no cancel latency')
})

t.test('the bufferedAmount peak is held for one to two windows', async (t) => {
  let now = 0
  const metrics = createMetrics({ now: () => now, peakWindowMs: 1000 })
  const { connectionObserver: connection } = metrics
  connection.sent('{"type":"token","session_id":"s"}', 500)
  connection.sent('{"type":"token","session_id":"s"}', 200)
  t.equal((await read(metrics))('agw_ws_buffered_amount_max_bytes'), 500)
  now = 1500
  t.equal((await read(metrics))('agw_ws_buffered_amount_max_bytes'), 500, 'the previous window still shows it')
  connection.sent('{"type":"token","session_id":"s"}', 10)
  now = 2100
  connection.sent('{"type":"token","session_id":"s"}', 0)
  now = 2600
  t.equal((await read(metrics))('agw_ws_buffered_amount_max_bytes'), 10, 'the spike has aged out')
  now = 10_000
  t.equal((await read(metrics))('agw_ws_buffered_amount_max_bytes'), 0, 'a long quiet forgets everything')
})

t.test('labels come from fixed sets', async (t) => {
  t.equal(sentFrameType('{"type":"complete","session_id":""}'), 'complete')
  t.equal(sentFrameType('{"type":"token","session_id":""}'), 'token')
  t.equal(sentFrameType('{"type":"tokens","session_id":""}'), 'other', 'a type that only starts like one of ours')
  t.equal(sentFrameType('{"type":"surprise"}'), 'other')
  t.equal(sentFrameType('{"session_id":"","type":"token"}'), 'other')
  t.equal(closeCodeLabel(4001), '4001')
  t.equal(closeCodeLabel(1006), '1006')
  t.equal(closeCodeLabel(3999), 'other', 'a client can send any code: it must not grow a series')
  t.equal(statusClass(429), '4xx')
  t.equal(statusClass(502), '5xx')
  t.equal(statusClass('network'), 'network')

  const metrics = createMetrics()
  metrics.upstreamObserver.request(200)
  metrics.upstreamObserver.retry('rate_limited')
  metrics.connectionObserver.opened()
  metrics.connectionObserver.received('invalid')
  metrics.connectionObserver.closed(4321)
  metrics.runObserver.resumed('history_gone')
  metrics.runObserver.handedOver('parked')
  metrics.runObserver.handedOver('adopted')
  metrics.runObserver.handedOver('adopted')
  metrics.connectionObserver.rateLimited()
  const value = await read(metrics)
  t.equal(value('agw_upstream_requests_total', { status_class: '2xx' }), 1)
  t.equal(value('agw_upstream_retries_total', { failure: 'rate_limited' }), 1)
  t.equal(value('agw_ws_connections_active'), 0)
  t.equal(value('agw_ws_connections_closed_total', { code: 'other' }), 1)
  t.equal(value('agw_ws_frames_received_total', { type: 'invalid' }), 1)
  t.equal(value('agw_resume_attempts_total', { result: 'history_gone' }), 1)
  t.equal(value('agw_run_handovers_total', { kind: 'parked' }), 1)
  t.equal(value('agw_run_handovers_total', { kind: 'adopted' }), 2)
  t.equal(value('agw_rate_limit_hits_total', { limit: 'messages' }), 1)
})
