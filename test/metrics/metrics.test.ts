import t, { type Test } from 'tap'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer, TestClient, type Frame } from '../helpers/ws-client.ts'
import { createFakeUpstream, textSteps, type FakeUpstream, type Script } from '../helpers/fake-upstream.ts'
import { redisBackend, useRedis } from '../helpers/redis.ts'
import { scrape, delta, eventually } from './scrape.ts'

const TOOL_ROUND: Script = {
  steps: [{ toolCalls: [{ index: 0, id: 'call_1', name: 'calculate', arguments: '{"expression":"2+3"}' }] }, { finish: 'tool_calls' }, { done: true }],
}

/** A tool call, then text; a slow stream to cancel; a refused request (400: never retried). */
async function scriptedUpstream(t: Test): Promise<FakeUpstream> {
  const up = await createFakeUpstream((request) => {
    const last = request.body.messages.at(-1)
    if (last.role === 'tool') return { steps: [{ raw: ANSWER_IN_ONE_WRITE }] }
    if (last.content === 'use a tool') return TOOL_ROUND
    if (last.content === 'go slow') return { steps: textSteps(Array(100).fill(' tick'), { delayMs: 30 }) }
    return { status: 400 }
  })
  t.teardown(() => up.close())
  return up
}

function openaiConfig(up: FakeUpstream) {
  return { modelProvider: 'openai' as const, OPENAI_BASE_URL: up.baseURL, OPENAI_API_KEY: 'test' }
}

const count = (frames: Frame[], type: string) => frames.filter((frame) => frame.type === type).length
/** The tool run's answer, its deltas in one write (so one upstream read): one token of the run, four deltas of the model. */
const ANSWER_WORDS = ['The', ' answer', ' is', ' 5.']
const sse = (chunk: unknown) => `data: ${JSON.stringify(chunk)}\n\n`
const ANSWER_IN_ONE_WRITE =
  ANSWER_WORDS.map((content) => sse({ choices: [{ index: 0, delta: { content }, finish_reason: null }] })).join('') +
  sse({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] }) +
  sse({ choices: [], usage: { prompt_tokens: 9, completion_tokens: 4, total_tokens: 13 } }) +
  'data: [DONE]\n\n'

t.test('after a run, a cancel and a failed run, every series moved by the right amount', async (t) => {
  const up = await scriptedUpstream(t)
  const { app, baseUrl, wsUrl } = await startApp(t, openaiConfig(up))
  const before = await scrape(baseUrl)
  const client = await connect(t, wsUrl, bearer(signToken('alice')))

  client.send({ type: 'chat', content: 'use a tool' })
  const toolRun = await client.untilComplete()
  const sessionId = toolRun[0]!.session_id
  t.same(toolRun.map((f) => f.content).slice(0, 3), ['thinking', 'tool_call', 'tool_result'])

  client.send({ type: 'chat', session_id: sessionId, content: 'go slow' })
  const thinking = await client.next((f) => f.type === 'status' && f.content === 'thinking')
  const firstToken = await client.nextOfType('token')
  client.send({ type: 'cancel', session_id: sessionId })
  const cancelled = [thinking, firstToken, ...(await client.untilComplete())]
  t.equal(cancelled.at(-1)!.metadata!.finish_reason, 'cancelled')

  client.send({ type: 'chat', session_id: sessionId, content: 'fail' })
  const failed = await client.untilComplete()
  t.same(failed.map((f) => f.type), ['status', 'error', 'complete'])
  t.equal(failed.at(-1)!.metadata!.finish_reason, 'error')

  const toolTokens = count(toolRun, 'token')
  const cancelTokens = count(cancelled, 'token')
  t.equal(toolTokens, 1, 'the answer read at once is one token')
  t.ok(cancelTokens >= 1 && cancelTokens < 100, `${cancelTokens} tokens before the cancel`)

  const after = await scrape(baseUrl)
  const moved = delta(before, after)
  t.equal(moved('agw_runs_total', { outcome: 'completed' }), 1)
  t.equal(moved('agw_runs_total', { outcome: 'cancelled' }), 1)
  t.equal(moved('agw_runs_total', { outcome: 'error' }), 1)
  t.equal(moved('agw_runs_total', { outcome: 'interrupted' }), 0)
  for (const outcome of ['completed', 'cancelled', 'error']) {
    t.equal(moved('agw_run_duration_seconds_count', { outcome }), 1, `one ${outcome} duration`)
    t.ok(moved('agw_run_duration_seconds_sum', { outcome }) > 0, `${outcome} took time`)
  }
  t.equal(moved('agw_run_time_to_first_token_seconds_count'), 2, 'the failed run never produced a token')
  // Counted as the model sent them (the paced, cancelled run's deltas are one frame each).
  t.equal(moved('agw_tokens_streamed_total'), ANSWER_WORDS.length + cancelTokens, 'every delta of the model')
  // Gaps between reads: none in the answer read at once, one between each two paced deltas.
  t.equal(moved('agw_run_inter_token_gap_seconds_count'), cancelTokens - 1, 'the tool round is not a gap')
  t.equal(moved('agw_run_cancel_latency_seconds_count'), 1)
  t.ok(moved('agw_run_cancel_latency_seconds_sum') > 0)
  t.equal(moved('agw_upstream_requests_total', { status_class: '2xx' }), 3, 'two rounds of the tool run, one cancelled')
  t.equal(moved('agw_upstream_requests_total', { status_class: '4xx' }), 1)
  t.equal(moved('agw_upstream_requests_total', { status_class: '5xx' }), 0)
  t.equal(moved('agw_upstream_requests_total', { status_class: 'aborted' }), 0, 'the cancelled request had its answer already')
  t.equal(up.requests.length, 4)
  t.equal(moved('agw_ws_frames_received_total', { type: 'chat' }), 3)
  t.equal(moved('agw_ws_frames_received_total', { type: 'cancel' }), 1)
  for (const type of ['status', 'token', 'complete', 'error']) {
    t.equal(moved('agw_ws_frames_sent_total', { type }), count(client.frames, type), `${type} frames sent = received by the client`)
  }
  t.equal(moved('agw_ws_connections_opened_total', { result: 'ok' }), 1)
  t.equal(moved('agw_ws_connections_active'), 1)
  t.ok(after.get('agw_ws_buffered_amount_max_bytes') >= 0)

  // Low cardinality: no user, session or run id anywhere in a label.
  const ids = ['alice', sessionId, ...client.frames.map((f) => f.metadata?.run_id).filter(Boolean)]
  for (const family of after.exposition.values()) {
    for (const sample of family.samples) {
      for (const value of Object.values(sample.labels)) t.notOk(ids.includes(value), `${sample.name} carries an id`)
    }
  }

  // The text agrees with prom-client's own registry, series by series.
  const fromRegistry = new Map<string, number>()
  for (const metric of await app.metrics.registry.getMetricsAsJSON()) {
    for (const { labels, value, metricName } of metric.values as Array<{ labels: object; value: number; metricName?: string }>) {
      const text = Object.fromEntries(Object.entries(labels).map(([k, v]) => [k, v === Infinity ? '+Inf' : String(v)]))
      fromRegistry.set(`${metricName ?? metric.name}${JSON.stringify(Object.entries(text).sort())}`, value)
    }
  }
  let compared = 0
  for (const family of after.exposition.values()) {
    if (!family.name.startsWith('agw_')) continue
    for (const sample of family.samples) {
      t.equal(fromRegistry.get(`${sample.name}${JSON.stringify(Object.entries(sample.labels).sort())}`), sample.value, sample.name)
      compared++
    }
  }
  t.equal(compared, fromRegistry.size, 'every registry series is in the text')

  client.socket.close(1000)
  await eventually(async () => (await scrape(baseUrl)).get('agw_ws_connections_active') === before.get('agw_ws_connections_active'))
  const closed = delta(before, await scrape(baseUrl))
  t.equal(closed('agw_ws_connections_closed_total', { code: '1000' }), 1)
})

t.test('refusals, resumes, invalid frames, pings and the drain are counted', async (t) => {
  const { app, baseUrl, wsUrl } = await startApp(t, { ALLOWED_ORIGINS: ['https://chat.example'] })
  const before = await scrape(baseUrl)

  const anonymous = new TestClient(wsUrl)
  t.teardown(() => anonymous.socket.terminate())
  t.equal((await anonymous.closed).code, 4001)
  const foreign = new TestClient(wsUrl, { ...bearer(signToken('alice')), origin: 'https://evil.example' })
  t.teardown(() => foreign.socket.terminate())
  t.equal((await foreign.closed).code, 4003)

  const alice = await connect(t, wsUrl, bearer(signToken('alice')))
  const bob = await connect(t, wsUrl, bearer(signToken('bob')))
  alice.send({ type: 'chat', session_id: 'alice-1', content: 'hello' })
  const run = await alice.untilComplete()
  alice.send('not json')
  await alice.nextOfType('error')
  alice.send({ type: 'ping' })
  await alice.nextOfType('pong')
  alice.send({ type: 'resume', session_id: 'alice-1', last_seq: 1 })
  await alice.next((f) => f.content === 'resumed')
  alice.send({ type: 'resume', session_id: 'alice-1', last_seq: run.length + 5 })
  t.equal((await alice.nextOfType('error')).metadata!.code, 'history_gone')
  alice.send({ type: 'resume', session_id: 'nobody-has-it', last_seq: 0 })
  t.equal((await alice.nextOfType('error')).metadata!.code, 'not_found')
  bob.send({ type: 'resume', session_id: 'alice-1', last_seq: 0 })
  t.equal((await bob.nextOfType('error')).metadata!.code, 'not_found', "alice's session id is unknown to bob (1.1)")

  const after = await scrape(baseUrl)
  const moved = delta(before, after)
  t.equal(moved('agw_ws_connections_opened_total', { result: 'unauthorized' }), 1)
  t.equal(moved('agw_ws_connections_opened_total', { result: 'forbidden_origin' }), 1)
  t.equal(moved('agw_ws_connections_opened_total', { result: 'ok' }), 2)
  t.equal(moved('agw_ws_connections_active'), 2, 'refused upgrades never count as active')
  t.equal(moved('agw_ws_connections_closed_total', { code: '4001' }), 0, 'refusals are counted once, as opened')
  t.equal(moved('agw_ws_frames_received_total', { type: 'invalid' }), 1)
  t.equal(moved('agw_ws_frames_received_total', { type: 'ping' }), 1)
  t.equal(moved('agw_ws_frames_received_total', { type: 'resume' }), 4)
  t.equal(moved('agw_ws_frames_sent_total', { type: 'pong' }), 1)
  t.equal(moved('agw_resume_attempts_total', { result: 'ok' }), 1)
  t.equal(moved('agw_resume_attempts_total', { result: 'history_gone' }), 1)
  t.equal(moved('agw_resume_attempts_total', { result: 'not_found' }), 2, "an unknown id and another user's alike")
  t.equal(moved('agw_upstream_requests_total', { status_class: '2xx' }), 0, 'the mock model makes no HTTP request')

  await app.drain()
  const late = new TestClient(wsUrl, bearer(signToken('alice')))
  await t.rejects(late.opened, /503/)
  const drained = delta(after, await scrape(baseUrl))
  t.equal(drained('agw_ws_connections_opened_total', { result: 'draining' }), 1)
  t.equal(drained('agw_ws_connections_closed_total', { code: '1012' }), 2, 'the drain closes both connections with 1012')
  t.equal(drained('agw_ws_connections_active'), -2)
})

async function silentServer(t: Test): Promise<{ baseURL: string; received: Promise<void> }> {
  const { promise: received, resolve } = Promise.withResolvers<void>()
  const server: Server = createServer(() => resolve())
  await new Promise<void>((ready) => server.listen(0, '127.0.0.1', ready))
  t.teardown(() => {
    server.closeAllConnections()
    return new Promise<void>((closed) => server.close(() => closed()))
  })
  return { baseURL: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, received }
}

t.test('upstream requests by status class, and retries', async (t) => {
  t.test('a 5xx retried once', async (t) => {
    const up = await createFakeUpstream(() => ({ status: 503, headers: { 'retry-after-ms': '1' } }))
    t.teardown(() => up.close())
    const { baseUrl, wsUrl } = await startApp(t, { ...openaiConfig(up), UPSTREAM_MAX_RETRIES: 1 })
    const before = await scrape(baseUrl)
    const client = await connect(t, wsUrl, bearer(signToken('alice')))
    client.send({ type: 'chat', content: 'hi' })
    t.equal((await client.untilComplete()).at(-1)!.metadata!.finish_reason, 'error')
    const moved = delta(before, await scrape(baseUrl))
    t.equal(moved('agw_upstream_requests_total', { status_class: '5xx' }), 2)
    t.equal(moved('agw_upstream_retries_total', { failure: 'server' }), 1)
    t.equal(moved('agw_runs_total', { outcome: 'error' }), 1)
  })

  t.test('no server there: network', async (t) => {
    // Port 1 on loopback: nothing listens, the connection is refused.
    const { baseUrl, wsUrl } = await startApp(t, { modelProvider: 'openai', OPENAI_BASE_URL: 'http://127.0.0.1:1/v1', OPENAI_API_KEY: 'test', UPSTREAM_MAX_RETRIES: 0 })
    const before = await scrape(baseUrl)
    const client = await connect(t, wsUrl, bearer(signToken('alice')))
    client.send({ type: 'chat', content: 'hi' })
    await client.untilComplete()
    t.equal(delta(before, await scrape(baseUrl))('agw_upstream_requests_total', { status_class: 'network' }), 1)
  })

  t.test('cancelled before any answer: aborted', async (t) => {
    const silent = await silentServer(t)
    const { baseUrl, wsUrl } = await startApp(t, { modelProvider: 'openai', OPENAI_BASE_URL: silent.baseURL, OPENAI_API_KEY: 'test' })
    const before = await scrape(baseUrl)
    const client = await connect(t, wsUrl, bearer(signToken('alice')))
    client.send({ type: 'chat', session_id: 's1', content: 'hi' })
    await silent.received
    client.send({ type: 'cancel' })
    t.equal((await client.untilComplete()).at(-1)!.metadata!.finish_reason, 'cancelled')
    await eventually(async () => delta(before, await scrape(baseUrl))('agw_upstream_requests_total', { status_class: 'aborted' }) === 1)
    t.pass('counted as aborted')
  })
})

t.test('frames refused by the rate limit are counted', async (t) => {
  const { baseUrl, wsUrl } = await startApp(t, { RATE_LIMIT_MESSAGES: 3 })
  const before = await scrape(baseUrl)
  const client = await connect(t, wsUrl, bearer(signToken('alice')))
  for (let i = 0; i < 5; i++) client.send({ type: 'ping' })
  for (let i = 0; i < 3; i++) await client.nextOfType('pong')
  for (let i = 0; i < 2; i++) t.equal((await client.nextOfType('error')).metadata!.code, 'rate_limited')
  client.send({ type: 'cancel', session_id: 'nope' })
  t.equal((await client.nextOfType('error')).metadata!.code, 'rate_limited')
  const moved = delta(before, await scrape(baseUrl))
  t.equal(moved('agw_rate_limit_hits_total', { limit: 'messages' }), 3)
  t.equal(moved('agw_ws_frames_received_total', { type: 'ping' }), 5, 'refused frames were still received')
  t.equal(moved('agw_ws_frames_sent_total', { type: 'pong' }), 3)
})

t.test('METRICS_TOKEN guards /metrics', async (t) => {
  const { baseUrl } = await startApp(t, { METRICS_TOKEN: 'scrape-secret' })
  const refusedHeaders: Array<Record<string, string>> = [
    {},
    { authorization: 'Bearer wrong' },
    { authorization: 'Bearer scrape-secret-but-longer' },
    { authorization: 'Basic scrape-secret' },
  ]
  for (const headers of refusedHeaders) {
    const refused = await fetch(`${baseUrl}/metrics`, { headers })
    t.equal(refused.status, 401, JSON.stringify(headers))
    t.equal(refused.headers.get('www-authenticate'), 'Bearer')
    t.same(await refused.json(), { error: 'unauthorized', message: 'metrics need the METRICS_TOKEN bearer token' })
  }
  const ok = await scrape(baseUrl, 'scrape-secret')
  t.ok(ok.exposition.has('process_cpu_user_seconds_total'), 'process defaults are there')
  t.ok(ok.exposition.has('nodejs_eventloop_lag_seconds'))
  t.ok(ok.exposition.has('agw_runs_total'))
})

t.test('apps in one process keep their own counts', async (t) => {
  const one = await startApp(t)
  const two = await startApp(t)
  const before = await scrape(two.baseUrl)
  const client = await connect(t, one.wsUrl, bearer(signToken('alice')))
  client.send({ type: 'chat', content: 'hello' })
  await client.untilComplete()
  t.equal((await scrape(one.baseUrl)).get('agw_runs_total', { outcome: 'completed' }), 1)
  t.equal(delta(before, await scrape(two.baseUrl))('agw_runs_total', { outcome: 'completed' }), 0)
  t.equal((await scrape(two.baseUrl)).exposition.get('process_cpu_user_seconds_total')?.samples.length, 1, 'process metrics once, not per app')
})

t.test('a run of a lost instance is counted as interrupted where it is ended', async (t) => {
  const redis = await useRedis(t)
  if (!redis) return
  const { baseUrl, wsUrl } = await startApp(t, { REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix })
  // A "dead instance": a run recorded in Redis that nobody executes or renews.
  const ghost = await redisBackend(t, redis)
  const opened = await ghost.sessions.open('alice', 'ghost-session', 100)
  if (opened.kind !== 'open') throw new Error('could not open the ghost session')
  const ref = { owner: 'alice', id: 'ghost-session', gen: opened.session.gen }
  const userMessage = { role: 'user' as const, content: 'boo' }
  await ghost.sessions.beginRun(ref, { runId: 'ghost-run', instanceId: 'ghost', leaseMs: 50, input: { kind: 'message', message: userMessage }, maxMessages: 50 })
  await ghost.sessions.append(ref, 'ghost-run', { type: 'status', session_id: 'ghost-session', content: 'thinking', metadata: { run_id: 'ghost-run' } })
  await new Promise((resolve) => setTimeout(resolve, 100))
  const before = await scrape(baseUrl)
  const client = await connect(t, wsUrl, bearer(signToken('alice')))
  client.send({ type: 'resume', session_id: 'ghost-session', last_seq: 0 })
  t.equal((await client.nextOfType('complete')).metadata!.finish_reason, 'interrupted')
  const moved = delta(before, await scrape(baseUrl))
  t.equal(moved('agw_runs_total', { outcome: 'interrupted' }), 1)
  t.equal(moved('agw_runs_total', { outcome: 'cancelled' }) + moved('agw_runs_total', { outcome: 'completed' }), 0)
  t.equal(moved('agw_resume_attempts_total', { result: 'ok' }), 1)
})
