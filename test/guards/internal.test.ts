import t from 'tap'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer, type TestClient } from '../helpers/ws-client.ts'
import { createMemoryBackend } from '../../src/store/memory/index.ts'

/** Makes `object[name]` throw on its next `times` calls, then behave again. */
function failNext<T extends object>(object: T, name: keyof T & string, times = 1): void {
  const original = object[name] as (...args: unknown[]) => unknown
  let left = times
  ;(object as Record<string, unknown>)[name] = function (this: unknown, ...args: unknown[]) {
    if (left-- > 0) throw new Error(`injected failure in ${name}`)
    return original.apply(this, args)
  }
}

async function stillServes(t: { ok(value: unknown, message: string): void }, client: TestClient): Promise<void> {
  client.send({ type: 'ping', session_id: 'after' })
  t.ok((await client.nextOfType('pong')).session_id === 'after', 'the connection keeps serving')
}

t.test('a handler that fails is answered internal; the connection stays', async (t) => {
  const backend = createMemoryBackend({ ttlSeconds: 60, maxEvents: 100 })
  failNext(backend.sessions, 'open')
  const { wsUrl } = await startApp(t, {}, { backend })
  const client = await connect(t, wsUrl, bearer(signToken('alice')))
  client.send({ type: 'chat', content: 'hello', session_id: 's1' })
  const error = await client.nextOfType('error')
  t.match(error, { session_id: 's1', content: 'internal error', metadata: { code: 'internal', retryable: true } })
  t.notOk('seq' in error)
  await stillServes(t, client)
})

t.test('a failure while reading a frame is answered internal; the connection stays', async (t) => {
  const { app, wsUrl } = await startApp(t)
  const client = await connect(t, wsUrl, bearer(signToken('alice')))
  failNext(app.metrics.connectionObserver, 'received')
  client.send({ type: 'ping' })
  t.match(await client.nextOfType('error'), { metadata: { code: 'internal' } })
  await stillServes(t, client)
})

t.test('a failure while answering is caught too, even when the internal answer fails as well', async (t) => {
  const { app, wsUrl } = await startApp(t)
  const client = await connect(t, wsUrl, bearer(signToken('alice')))
  failNext(app.metrics.connectionObserver, 'sent', 2)
  client.send({ type: 'cancel' })
  // Each frame reached the socket before the observer threw.
  t.match(await client.nextOfType('error'), { metadata: { code: 'no_active_run' } })
  t.match(await client.nextOfType('error'), { metadata: { code: 'internal' } })
  await stillServes(t, client)
})
