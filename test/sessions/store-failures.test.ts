// Defects of the session core when its store fails once:
// - a failure after beginRun (subscribing the sender failed) left the session's run recorded as
//   active while nothing executed it: every later chat in the session was `busy`, forever;
// - the run's history was persisted before its `complete` was logged, so a failure persisting
//   it meant the client never received `complete`. Now `finishRun` logs `complete` and stores
//   the run's messages in one step: when that step fails, the run still ends (error, complete).
//
// This file (alone) reaches into the backend interface (src/store/types.ts) through `failOnce`.
// The methods made to throw: `sessions.addWatcher` (first test) and `sessions.finishRun` for the
// run's normal end (second test).
import t from 'tap'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer } from '../helpers/ws-client.ts'
import { createMemoryBackend } from '../../src/store/memory/index.ts'
import { roomy } from '../ws/util.ts'

/** `target` with `method` throwing the first time `when(...args)` holds; everything else as is. */
function failOnce<T extends object>(target: T, method: string, when: (...args: any[]) => boolean = () => true) {
  const state = { failed: false }
  const proxy = new Proxy(target, {
    get(obj, key) {
      const value = Reflect.get(obj, key, obj)
      if (typeof value !== 'function') return value
      if (key !== method) return value.bind(obj)
      return (...args: unknown[]) => {
        if (!state.failed && when(...args)) {
          state.failed = true
          return Promise.reject(new Error(`injected ${method} failure`))
        }
        return value.apply(obj, args)
      }
    },
  })
  return { proxy, state }
}

function memoryBackend() {
  return createMemoryBackend({ ttlSeconds: 3600, maxEvents: 2000 })
}

const config = { ...roomy, MOCK_TOKEN_DELAY_MS: 0, TOOLS: [] }

t.test('a failure after beginRun leaves a run nobody executes', async (t) => {
  const backend = memoryBackend()
  const sessions = failOnce(backend.sessions, 'addWatcher')
  const { wsUrl } = await startApp(t, config, { backend: { ...backend, sessions: sessions.proxy } })
  const client = await connect(t, wsUrl, bearer(signToken('alice')))

  client.send({ type: 'chat', content: 'first', session_id: 'S', id: 'q1' })
  const first = await client.next((frame) => frame.type === 'error' || frame.type === 'complete')
  t.ok(sessions.state.failed, 'the injected failure happened')
  t.equal(first.type, 'error', 'the client is told the chat failed')

  client.send({ type: 'chat', content: 'second', session_id: 'S', id: 'q2' })
  const next = await client.next((frame) => frame.metadata?.request_id === 'q2' && (frame.type === 'error' || frame.type === 'complete'))
  t.not(next.metadata?.code, 'busy', 'the next chat in the session is not busy')
  t.equal(next.type, 'complete', 'the next chat runs to its complete')
  t.equal(next.metadata?.finish_reason, 'stop', 'it finishes normally')
})

t.test('history persisted before complete is logged', async (t) => {
  const backend = memoryBackend()
  const normalEnd = (_ref: unknown, finish: { event?: { metadata?: { finish_reason?: string } } }) => finish.event?.metadata?.finish_reason === 'stop'
  const sessions = failOnce(backend.sessions, 'finishRun', normalEnd)
  const { wsUrl } = await startApp(t, config, { backend: { ...backend, sessions: sessions.proxy } })
  const client = await connect(t, wsUrl, bearer(signToken('alice')))

  client.send({ type: 'chat', content: 'first', session_id: 'S', id: 'q1' })
  const complete = await client.next((frame) => frame.type === 'complete', 5000).catch(() => undefined)
  t.ok(sessions.state.failed, 'the injected failure happened')
  t.ok(complete, 'the client still receives complete when persisting the history fails')

  client.send({ type: 'chat', content: 'second', session_id: 'S', id: 'q2' })
  const next = await client.next((frame) => frame.metadata?.request_id === 'q2' && (frame.type === 'error' || frame.type === 'complete'))
  t.not(next.metadata?.code, 'busy', 'the session is freed: the next chat is not busy')
  t.equal(next.type, 'complete', 'the next chat runs to its complete')
})
