// Defects: a connection could be counted as a session's watcher after it had gone, so the run
// it started was never aborted by the disconnect grace (it ran, and was paid for, to its end):
// - the socket dropped while its `chat` was between awaits: disconnect() ran before the chat
//   subscribed, then the chat subscribed a connection that no longer existed;
// - a `resume` that failed (history_gone) on a session the connection already watched dropped
//   the subscription but not the watcher count, so the close never released it.
import t, { type Test } from 'tap'
import { randomUUID } from 'node:crypto'
import type { Config } from '../../src/config.ts'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer, TestClient } from '../helpers/ws-client.ts'
import { createFakeUpstream, textSteps, type FakeUpstream, type RecordedRequest } from '../helpers/fake-upstream.ts'
import { useRedis } from '../helpers/redis.ts'
import { roomy } from '../ws/util.ts'

const GRACE_MS = 200
/** The upstream answers in ~10 s; an aborted run closes its request long before. */
const TOKENS = 400
const TOKEN_DELAY_MS = 25
const DEADLINE_MS = 5000

async function start(t: Test, config: Partial<Config> = {}) {
  const up = await createFakeUpstream(() => ({ steps: textSteps(Array.from({ length: TOKENS }, (_, i) => ` w${i}`), { delayMs: TOKEN_DELAY_MS }) }))
  t.teardown(() => up.close())
  const app = await startApp(t, {
    ...roomy,
    modelProvider: 'openai',
    OPENAI_BASE_URL: up.baseURL,
    OPENAI_API_KEY: 'test',
    UPSTREAM_MAX_RETRIES: 0,
    TOOLS: [],
    RESUME_GRACE_MS: GRACE_MS,
    ...config,
  })
  return { ...app, up }
}

/** Resolves true when the request was closed by the service (the run aborted) within `ms`. */
async function abortedWithin(request: RecordedRequest, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)))
  const outcome = await Promise.race([request.closed.then(() => 'closed' as const), timeout])
  clearTimeout(timer)
  return outcome === 'closed' && request.closedByClient
}

/** Every upstream request that arrives within `ms` is aborted within DEADLINE_MS of the drop. */
async function everyRequestAborted(t: Test, up: FakeUpstream, expected: number): Promise<void> {
  const deadline = performance.now() + DEADLINE_MS
  // A service may also notice the drop before it calls the model: then no request comes at all.
  while (up.requests.length < expected && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20))
  let aborted = 0
  for (const request of up.requests) if (await abortedWithin(request, Math.max(0, deadline - performance.now()))) aborted++
  t.equal(aborted, up.requests.length, `every upstream request was aborted (${aborted} of ${up.requests.length}) within ${DEADLINE_MS} ms of the drop (grace ${GRACE_MS} ms)`)
}

async function droppedMidChat(t: Test, config: Partial<Config>) {
  const { wsUrl, up } = await start(t, config)
  const token = signToken(`dropper-${randomUUID()}`)
  const clients = 5
  for (let i = 0; i < clients; i++) {
    const client = new TestClient(wsUrl, bearer(token))
    t.teardown(() => client.socket.terminate())
    await client.opened
    client.send({ type: 'chat', content: 'a long answer please', session_id: `dropped-${i}` })
    client.socket.terminate()
    await client.closed
  }
  await everyRequestAborted(t, up, clients)
}

t.test('a socket that drops while its chat is between awaits leaves a phantom watcher', async (t) => {
  t.test('memory backend', (t) => droppedMidChat(t, {}))
  t.test('redis backend', async (t) => {
    const redis = await useRedis(t)
    if (!redis) return
    await droppedMidChat(t, { REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix })
  })
})

t.test('a resume that fails on an already-watched session leaves a phantom watcher', async (t) => {
  const { wsUrl, up } = await start(t)
  const client = await connect(t, wsUrl, bearer(signToken('resumer')))
  client.send({ type: 'chat', content: 'a long answer please', session_id: 'S' })
  await client.nextOfType('token')
  client.send({ type: 'resume', session_id: 'S', last_seq: 1_000_000 })
  const refused = await client.next((frame) => frame.type === 'error')
  t.equal(refused.metadata?.code, 'history_gone', 'the resume fails')
  client.close()
  await client.closed
  await everyRequestAborted(t, up, 1)
})
