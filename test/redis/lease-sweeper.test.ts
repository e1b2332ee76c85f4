import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { LeaseSweeper } from '../../src/sessions/lease-sweeper.ts'
import type { ActiveRun, Backend } from '../../src/store/types.ts'
import { redisBackend, useRedis } from '../helpers/redis.ts'

/** Records a run of another instance: thinking, then tokens (and a token of some other run). */
async function ghostRun(backend: Backend, sessionId: string, leaseMs: number, requestId?: string): Promise<ActiveRun> {
  const runId = `ghost-${sessionId}`
  await backend.sessions.getOrCreate(sessionId, 'alice')
  await backend.events.append(sessionId, { type: 'token', session_id: sessionId, content: 'before', metadata: { run_id: 'earlier' } })
  await backend.sessions.beginRun(sessionId, { runId, instanceId: 'ghost', startAfterSeq: 1, leaseMs, ...(requestId ? { requestId } : {}) })
  await backend.events.append(sessionId, { type: 'status', session_id: sessionId, content: 'thinking', metadata: { run_id: runId } })
  for (const text of ['Hel', 'lo']) await backend.events.append(sessionId, { type: 'token', session_id: sessionId, content: text, metadata: { run_id: runId } })
  return (await backend.sessions.activeRun(sessionId))!
}

/** The backend, with activeRun counted (and failing for session "boom"). */
function watched(backend: Backend) {
  const calls: string[] = []
  const sessions = new Proxy(backend.sessions, {
    get(target, property) {
      if (property === 'activeRun') {
        return async (sessionId: string) => {
          calls.push(sessionId)
          if (sessionId === 'boom') throw new Error('store down')
          return target.activeRun(sessionId)
        }
      }
      const value = Reflect.get(target, property, target) as unknown
      return typeof value === 'function' ? value.bind(target) : value
    },
  })
  return { backend: { ...backend, sessions }, calls }
}

function sweeperFor(backend: Backend, sessions: string[], options: { local?: string; intervalMs?: number } = {}) {
  const warnings: Array<{ msg: string | undefined; obj: unknown }> = []
  const sweeper = new LeaseSweeper({
    backend,
    finishRun: backend.finishRun!,
    intervalMs: options.intervalMs ?? 60_000,
    historyMaxMessages: 50,
    watched: () => sessions,
    runsHere: (sessionId) => sessionId === options.local,
    log: { warn: (obj: unknown, msg?: string) => void warnings.push({ obj, msg }) },
  })
  return { sweeper, warnings }
}

t.test('a sweep ends the expired runs it watches, and only those', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const real = await redisBackend(t, r)
  const { backend, calls } = watched(real)
  await real.sessions.getOrCreate('idle', 'alice')
  await ghostRun(real, 'alive', 60_000)
  await ghostRun(real, 'dead', 50)
  await ghostRun(real, 'local', 50)
  await sleep(100)
  const { sweeper, warnings } = sweeperFor(backend, ['idle', 'boom', 'alive', 'dead', 'local'], { local: 'local' })
  await Promise.all([sweeper.sweep(), sweeper.sweep()])
  t.same(calls, ['idle', 'boom', 'alive', 'dead', 'local'], 'one sweep at a time: the second one was skipped')
  t.match(warnings[0], { msg: 'lease check failed', obj: { sessionId: 'boom' } }, 'a failing session is logged and skipped')
  t.match(warnings[1], { msg: 'run interrupted: its instance stopped renewing the lease', obj: { sessionId: 'dead' } })

  const ended = await real.events.read('dead', 4)
  t.same(JSON.parse(ended.events[0]!.frame), {
    type: 'complete',
    session_id: 'dead',
    seq: 5,
    content: 'Hello',
    metadata: { run_id: 'ghost-dead', finish_reason: 'interrupted', reason: 'instance lost' },
  }, 'the text of that run only; no request id when the run had none')
  t.equal(await real.sessions.activeRun('dead'), null)
  t.same((await real.sessions.get('dead'))?.messages, [{ role: 'assistant', content: 'Hello' }])
  t.ok(await real.sessions.activeRun('alive'), 'a live lease is left alone')
  t.ok(await real.sessions.activeRun('local'), 'a run of this instance is left alone (it renews its own lease)')
})

t.test('endIfExpired: true once the run is over, whoever ended it; false while it may go on', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  const { sweeper } = sweeperFor(backend, [])

  const stale = await ghostRun(backend, 'ended', 50, 'q1')
  await backend.sessions.endRun('ended', stale.runId)
  await sleep(60)
  t.equal(await sweeper.endIfExpired('ended', stale), true, 'ended meanwhile: nothing to do')
  t.equal((await backend.events.read('ended', 0)).lastSeq, 4, 'and nothing appended')

  const silentRun = await ghostRun(backend, 'empty', 50)
  await backend.events.delete('empty')
  await sleep(60)
  t.equal(await sweeper.endIfExpired('empty', silentRun), true)
  t.match(JSON.parse((await backend.events.read('empty', 0)).events[0]!.frame), { content: '', metadata: { finish_reason: 'interrupted' } })
  t.same((await backend.sessions.get('empty'))?.messages, [], 'no text, nothing added to the history')

  const busy = await ghostRun(backend, 'moving', 50)
  await sleep(60)
  // A writer slips an event in between the read and the atomic end: the end is refused.
  const racing = {
    ...backend,
    events: new Proxy(backend.events, {
      get(target, property) {
        if (property === 'read') {
          return async (sessionId: string, afterSeq: number) => {
            const held = await target.read(sessionId, afterSeq)
            await target.append(sessionId, { type: 'token', session_id: sessionId, content: '!', metadata: { run_id: busy.runId } })
            return held
          }
        }
        const value = Reflect.get(target, property, target) as unknown
        return typeof value === 'function' ? value.bind(target) : value
      },
    }),
  }
  const { sweeper: raced } = sweeperFor(racing, [])
  t.equal(await raced.endIfExpired('moving', busy), false, 'the log moved: not ended now')
  t.equal(await sweeper.endIfExpired('moving', busy), true, 'the next check ends it')
  t.match(JSON.parse((await backend.events.read('moving', 5)).events[0]!.frame), { content: 'Hello!' })

  const young = await ghostRun(backend, 'young', 60_000)
  t.equal(await sweeper.endIfExpired('young', young), false, 'lease alive')
})

t.test('started, the sweeper checks on its own until stopped', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  const { sweeper } = sweeperFor(backend, ['a', 'b'], { intervalMs: 50 })
  sweeper.start()
  sweeper.start()
  t.teardown(() => sweeper.stop())
  await ghostRun(backend, 'a', 100)
  for (let i = 0; i < 40 && (await backend.sessions.activeRun('a')); i++) await sleep(25)
  t.equal(await backend.sessions.activeRun('a'), null, 'ended by a periodic sweep')
  sweeper.stop()
  await ghostRun(backend, 'b', 50)
  await sleep(300)
  t.ok(await backend.sessions.activeRun('b'), 'stopped: no more sweeps')
})
