import t from 'tap'
import type { AddressInfo } from 'node:net'
import { startApp, signToken, testConfig } from '../helpers/app.ts'
import { connect, bearer, TestClient } from '../helpers/ws-client.ts'
import { createMemoryBackend } from '../../src/store/memory/index.ts'
import { rawUpgrade } from '../auth/raw-upgrade.ts'
import { buildApp } from '../../src/app.ts'
import { closedWithin, contentOf, roomy } from './util.ts'

t.test('GET /health/live', async (t) => {
  const { baseUrl } = await startApp(t)
  const res = await fetch(`${baseUrl}/health/live`)
  t.equal(res.status, 200)
  t.equal(await res.text(), '{"status":"ok"}')
})

t.test('GET /health/ready: 200 with its checks, 503 once draining', async (t) => {
  const { app, baseUrl, wsUrl } = await startApp(t, { ...roomy, SHUTDOWN_GRACE_MS: 50 })
  const ready = await fetch(`${baseUrl}/health/ready`)
  t.equal(ready.status, 200)
  t.same(await ready.json(), { status: 'ready', checks: { store: { ok: true }, draining: { ok: true } } })

  const client = await connect(t, wsUrl, bearer(signToken('alice')))
  t.equal(app.lifecycle.draining, false)
  const drained = app.drain()
  t.equal(app.lifecycle.draining, true, 'draining at once')
  t.equal(app.drain(), drained, 'idempotent')
  const during = await fetch(`${baseUrl}/health/ready`)
  t.equal(during.status, 503)
  t.same(await during.json(), { status: 'unavailable', checks: { store: { ok: true }, draining: { ok: false } } })
  await drained
  t.same(await closedWithin(client), { code: 1012, reason: 'service restart' }, 'open sockets are closed 1012')

  const refused = new TestClient(wsUrl, bearer(signToken('alice')))
  await t.rejects(refused.opened, /unexpected response 503/, 'new upgrades are refused')
  const live = await fetch(`${baseUrl}/health/live`)
  t.equal(live.status, 200, 'still live while draining')
  t.equal((await fetch(`${baseUrl}/health/ready`)).status, 503)
})

t.test('GET /health/ready: a failing or hung store is 503 with its error', async (t) => {
  const backend = createMemoryBackend({ ttlSeconds: 60, maxEvents: 100 })
  const { baseUrl } = await startApp(t, {}, { backend })
  backend.sessions.ping = async () => {
    throw new Error('connection refused')
  }
  const failing = await fetch(`${baseUrl}/health/ready`)
  t.equal(failing.status, 503)
  t.same(await failing.json(), { status: 'unavailable', checks: { store: { ok: false, error: 'connection refused' }, draining: { ok: true } } })

  backend.sessions.ping = () => new Promise<void>(() => {})
  const hung = await fetch(`${baseUrl}/health/ready`)
  t.equal(hung.status, 503)
  t.same(await hung.json(), { status: 'unavailable', checks: { store: { ok: false, error: 'store did not answer in time' }, draining: { ok: true } } })
})

t.test('drain: a run that outlives SHUTDOWN_GRACE_MS is cancelled, then the socket closes 1012', async (t) => {
  const { app, wsUrl } = await startApp(t, { ...roomy, SHUTDOWN_GRACE_MS: 100, MOCK_TOKEN_DELAY_MS: 40 })
  const client = await connect(t, wsUrl, bearer(signToken('alice')))
  client.send({ type: 'chat', content: 'tell me a long story please' })
  await client.nextOfType('token')
  const started = performance.now()
  await app.drain()
  t.ok(performance.now() - started >= 90, 'the run had its grace')
  t.same(await closedWithin(client), { code: 1012, reason: 'service restart' })
  const frames = client.frames
  const complete = frames.find((f) => f.type === 'complete')
  t.match(complete, { metadata: { finish_reason: 'cancelled', reason: 'shutdown' } })
  t.match(frames.at(-2), { type: 'status', content: 'cancelled' })
  t.equal(contentOf(complete!), frames.filter((f) => f.type === 'token').map(contentOf).join(''))
})

t.test('drain: a run that ends within the grace completes normally', async (t) => {
  const { app, wsUrl } = await startApp(t, { ...roomy, SHUTDOWN_GRACE_MS: 5000, MOCK_TOKEN_DELAY_MS: 1 })
  const client = await connect(t, wsUrl, bearer(signToken('alice')))
  client.send({ type: 'chat', content: 'hi' })
  await client.nextOfType('status')
  await app.drain()
  t.same(await closedWithin(client), { code: 1012, reason: 'service restart' })
  t.match(client.frames.find((f) => f.type === 'complete'), { metadata: { finish_reason: 'stop' } })
})

t.test('app.close() drains too', async (t) => {
  const app = await buildApp(testConfig({ ...roomy, SHUTDOWN_GRACE_MS: 50 }))
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as AddressInfo
  const client = new TestClient(`ws://127.0.0.1:${port}/ws/agent`, bearer(signToken('alice')))
  t.teardown(() => client.socket.terminate())
  await client.opened
  await app.close()
  t.same(await closedWithin(client), { code: 1012, reason: 'service restart' })
})

t.test('an upgrade request answered by anything but the agent route does not leak its socket', async (t) => {
  // Regression: @fastify/websocket registered in an encapsulated context left these sockets
  // open forever, and app.close() never resolved.
  const app = await buildApp(testConfig())
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as AddressInfo
  for (const [path, status] of [
    ['/ws/agentx', 404],
    ['/health/live', 200],
    ['/', undefined],
  ] as const) {
    const raw = await rawUpgrade(port, path, { headers: { authorization: `Bearer ${signToken('alice')}` } })
    if (status !== undefined) t.equal(raw.status, status, `${path}: ${status}`)
    t.not(raw.status, 101, `${path}: not upgraded`)
    const endedAt = await Promise.race([raw.ended, new Promise<string>((resolve) => setTimeout(resolve, 2000, 'open'))])
    t.type(endedAt, 'number', `${path}: the server ended the connection`)
    raw.socket.destroy()
  }
  const closing = app.close().then(() => 'closed')
  t.equal(await Promise.race([closing, new Promise((resolve) => setTimeout(resolve, 3000, 'hung'))]), 'closed')
})
