import t, { type Test } from 'tap'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer, TestClient, type Frame } from '../helpers/ws-client.ts'
import { createFakeUpstream, textSteps, type RecordedRequest, type Script } from '../helpers/fake-upstream.ts'

const SERVICE_RESTART = { code: 1012, reason: 'service restart' }

/** `fast` answers in ~100 ms; `slow` talks for ~20 s. */
function byPrompt(request: RecordedRequest): Script {
  const prompt: string = request.body.messages.at(-1).content
  if (prompt.startsWith('fast')) return { steps: textSteps('quick answer here', { delayMs: 30 }) }
  return { steps: textSteps(Array.from({ length: 400 }, (_, i) => `w${i} `), { delayMs: 50 }) }
}

async function setup(t: Test, graceMs: number) {
  const up = await createFakeUpstream(byPrompt)
  t.teardown(() => up.close())
  const started = await startApp(t, { modelProvider: 'openai', OPENAI_BASE_URL: up.baseURL, OPENAI_API_KEY: 'test', SHUTDOWN_GRACE_MS: graceMs })
  return { up, ...started }
}

function finalOf(frames: Frame[]) {
  return frames.findLast((frame) => frame.type === 'complete')?.metadata
}

t.test('app.drain(): readiness 503 and upgrades refused at once; runs get the grace, then are cancelled; sockets close 1012', async (t) => {
  const { app, baseUrl, wsUrl, up } = await setup(t, 800)
  const fast = await connect(t, wsUrl, bearer(signToken('fast-user')))
  const slow = await connect(t, wsUrl, bearer(signToken('slow-user')))
  slow.send({ type: 'chat', content: 'slow please' })
  await slow.nextOfType('token')
  fast.send({ type: 'chat', content: 'fast please' })
  await fast.nextOfType('token')

  const drainStarted = performance.now()
  const drained = app.drain()
  t.equal(app.drain(), drained, 'idempotent')
  const ready = await fetch(`${baseUrl}/health/ready`)
  t.equal(ready.status, 503, 'not ready while draining')
  t.match(await ready.json(), { status: 'unavailable', checks: { draining: { ok: false }, store: { ok: true } } })
  const live = await fetch(`${baseUrl}/health/live`)
  t.equal(live.status, 200, 'still alive')

  const late = new TestClient(wsUrl, bearer(signToken('late-user')))
  t.teardown(() => late.socket.terminate())
  await t.rejects(late.opened, { message: 'unexpected response 503' }, 'new upgrades refused with HTTP 503')

  // A chat on a socket still open during the grace is served, and held to the same deadline.
  const fastComplete = await fast.nextOfType('complete', 5000)
  t.equal(fastComplete.metadata?.finish_reason, 'stop', 'a run finishing within the grace completes normally')
  t.equal(fastComplete.content, 'quick answer here')
  fast.send({ type: 'chat', content: 'slow again', session_id: fastComplete.session_id })
  await fast.nextOfType('token')

  const [fastClosed, slowClosed] = await Promise.all([fast.closed, slow.closed])
  await drained
  const drainMs = performance.now() - drainStarted
  t.ok(drainMs >= 800 - 10 && drainMs < 800 + 2000, `drained after the grace (${Math.round(drainMs)} ms)`)
  t.match(fastClosed, SERVICE_RESTART)
  t.match(slowClosed, SERVICE_RESTART)

  for (const client of [slow, fast]) {
    const types = client.frames.map((frame) => (frame.type === 'status' ? `status:${frame.content}` : frame.type))
    t.same(types.slice(-2), ['status:cancelled', 'complete'], 'cancelled at the deadline: status:cancelled then complete')
    t.match(finalOf(client.frames), { finish_reason: 'cancelled', reason: 'shutdown' })
    const last = client.frames.at(-1)!
    const runTokens = client.frames.filter((frame) => frame.type === 'token' && frame.metadata?.run_id === last.metadata?.run_id)
    t.equal(last.content, runTokens.map((frame) => frame.content).join(''), 'complete carries the partial text')
  }
  const slowRequests = up.requests.filter((request) => request.body.messages.at(-1).content.startsWith('slow'))
  t.equal(slowRequests.length, 2)
  await Promise.all(slowRequests.map((request) => request.closed))
  t.ok(slowRequests.every((request) => request.closedByClient), 'cancelled runs closed their upstream requests')
})

t.test('app.close() alone drains too: @fastify/websocket preClose replaced, sockets close 1012', async (t) => {
  const { app, wsUrl } = await setup(t, 50)
  const client = await connect(t, wsUrl, bearer(signToken('alice')))
  client.send({ type: 'chat', content: 'slow please' })
  await client.nextOfType('token')
  await app.close()
  t.match(await client.closed, SERVICE_RESTART)
  t.equal(finalOf(client.frames)?.finish_reason, 'cancelled', 'the run ended with its final events before the socket closed')
})

t.test('drain with no runs closes idle sockets at once', async (t) => {
  const { app, wsUrl } = await setup(t, 10_000)
  const client = await connect(t, wsUrl, bearer(signToken('alice')))
  const started = performance.now()
  await app.drain()
  t.match(await client.closed, SERVICE_RESTART)
  t.ok(performance.now() - started < 2000, 'no run to wait for: no grace spent')
})

t.test('a run started during the grace, after the others finished, is still held to the deadline', async (t) => {
  const { app, wsUrl } = await setup(t, 600)
  const a = await connect(t, wsUrl, bearer(signToken('a-user')))
  const b = await connect(t, wsUrl, bearer(signToken('b-user')))
  a.send({ type: 'chat', content: 'fast please' })
  await a.nextOfType('status')
  const drainStarted = performance.now()
  const drained = app.drain()
  b.send({ type: 'chat', content: 'slow please' })
  await b.nextOfType('token')
  t.equal((await a.nextOfType('complete')).metadata?.finish_reason, 'stop', 'the only run there was at SIGTERM finished')
  const [bClosed] = await Promise.all([b.closed, drained])
  t.match(bClosed, SERVICE_RESTART)
  t.ok(bClosed.at - drainStarted >= 600 - 10, 'the late run had the whole grace')
  t.match(finalOf(b.frames), { finish_reason: 'cancelled', reason: 'shutdown' }, 'then got its final events before the socket closed')
})
