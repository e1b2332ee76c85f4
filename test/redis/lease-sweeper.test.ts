import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { LeaseSweeper } from '../../src/sessions/lease-sweeper.ts'
import { createMemoryBackend } from '../../src/store/memory/index.ts'
import type { ActiveRun, Backend, SessionRef, StartedRun } from '../../src/store/types.ts'
import { redisBackend, useRedis } from '../helpers/redis.ts'

const userMessage = { role: 'user' as const, content: 'hi' }
const input = { kind: 'message' as const, message: userMessage }

/** Records a run of another instance after an earlier one: thinking, then tokens. */
async function ghostRun(backend: Backend, id: string, leaseMs: number, requestId?: string): Promise<{ ref: SessionRef; active: ActiveRun }> {
  const opened = await backend.sessions.open('alice', id, 100)
  if (opened.kind !== 'open') throw new Error('too many')
  const ref = { owner: 'alice', id, gen: opened.session.gen }
  await backend.sessions.beginRun(ref, { runId: 'earlier', instanceId: 'ghost', leaseMs: 60_000, input, maxMessages: 50 })
  await backend.sessions.append(ref, 'earlier', { type: 'token', session_id: id, content: 'before', metadata: { run_id: 'earlier' } })
  await backend.sessions.releaseRun(ref, 'earlier')
  const runId = `ghost-${id}`
  await backend.sessions.beginRun(ref, { runId, instanceId: 'ghost', leaseMs, input, maxMessages: 50, ...(requestId ? { requestId } : {}) })
  await backend.sessions.append(ref, runId, { type: 'status', session_id: id, content: 'thinking', metadata: { run_id: runId } })
  for (const text of ['Hel', 'lo']) await backend.sessions.append(ref, runId, { type: 'token', session_id: id, content: text, metadata: { run_id: runId } })
  return { ref, active: (await backend.sessions.activeRun(ref))! }
}

/** The backend with its store's calls counted, and `fail` making expiredLeases throw. */
function watched(backend: Backend) {
  const calls: string[] = []
  const state = { fail: false, endedMeanwhile: '' }
  const sessions = new Proxy(backend.sessions, {
    get(target, property) {
      if (property === 'expiredLeases') {
        return async (limit: number) => {
          calls.push('expiredLeases')
          if (state.fail) throw new Error('store down')
          return target.expiredLeases(limit)
        }
      }
      if (property === 'activeRun') {
        // A run that ends between the index read and this look finds nothing to do.
        return async (ref: SessionRef) => (ref.id === state.endedMeanwhile ? null : target.activeRun(ref))
      }
      const value = Reflect.get(target, property, target) as unknown
      return typeof value === 'function' ? value.bind(target) : value
    },
  })
  return { backend: { ...backend, sessions }, calls, state }
}

function sweeperFor(backend: Backend, options: { local?: string; intervalMs?: number } = {}) {
  const warnings: Array<{ msg: string | undefined; obj: unknown }> = []
  let interrupted = 0
  const started: Array<{ ref: SessionRef; next: StartedRun }> = []
  const sweeper = new LeaseSweeper({
    backend,
    intervalMs: options.intervalMs ?? 60_000,
    historyMaxMessages: 50,
    runsHere: (ref) => ref.id === options.local,
    onInterrupted: () => void interrupted++,
    startNext: (ref, next) => void started.push({ ref, next }),
    adopt: async () => false,
    instanceId: 'sweeper',
    leaseMs: 60_000,
    log: { warn: (obj: unknown, msg?: string) => void warnings.push({ obj, msg }) },
  })
  return { sweeper, warnings, started, interrupted: () => interrupted }
}

t.test('a sweep ends the runs whose lease expired, and only those', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const real = await redisBackend(t, r)
  const { backend, calls, state } = watched(real)
  await real.sessions.open('alice', 'idle', 100)
  const alive = await ghostRun(real, 'alive', 60_000)
  const dead = await ghostRun(real, 'dead', 50)
  const local = await ghostRun(real, 'local', 50)
  const racing = await ghostRun(real, 'racing', 50)
  await sleep(100)
  const { sweeper, warnings, interrupted } = sweeperFor(backend, { local: 'local' })
  state.endedMeanwhile = 'racing'
  await Promise.all([sweeper.sweep(), sweeper.sweep()])
  t.same(calls, ['expiredLeases'], 'one sweep at a time: the second one was skipped')
  t.equal(warnings.length, 1)
  t.match(warnings[0], { msg: 'run interrupted: its instance stopped renewing the lease', obj: { sessionId: 'dead', userId: 'alice', runId: 'ghost-dead', instanceId: 'ghost', seq: 5 } })
  t.equal(interrupted(), 1)

  const ended = await real.events.read(dead.ref, 4)
  t.same(JSON.parse(ended.events[0]!.frame), {
    type: 'complete',
    session_id: 'dead',
    seq: 5,
    content: 'Hello',
    metadata: { run_id: 'ghost-dead', finish_reason: 'interrupted', reason: 'instance lost' },
  }, 'the text of that run only; no request id when the run had none')
  t.equal(await real.sessions.activeRun(dead.ref), null)
  t.same((await real.sessions.get('alice', 'dead'))?.messages, [userMessage, userMessage, { role: 'assistant', content: 'Hello' }])
  t.ok(await real.sessions.activeRun(alive.ref), 'a live lease is left alone')
  t.ok(await real.sessions.activeRun(local.ref), 'a run of this instance is left alone (it renews its own lease)')
  t.ok(await real.sessions.activeRun(racing.ref), 'a run that looked ended is not touched')

  state.fail = true
  await sweeper.sweep()
  t.match(warnings[1], { msg: 'lease sweep failed', obj: { err: { message: 'store down' } } }, 'a failing store is logged')
})

t.test('endIfExpired: true once the run is over, whoever ended it; false while it may go on', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  const { sweeper, interrupted } = sweeperFor(backend, { local: 'mine' })

  const stale = await ghostRun(backend, 'ended', 50, 'q1')
  await backend.sessions.releaseRun(stale.ref, stale.active.runId)
  await sleep(60)
  t.equal(await sweeper.endIfExpired(stale.ref, stale.active), true, 'ended meanwhile: nothing to do')
  t.equal((await backend.events.read(stale.ref, 0)).lastSeq, 4, 'and nothing appended')

  const withKey = await ghostRun(backend, 'keyed', 50, 'q1')
  await sleep(60)
  t.equal(await sweeper.endIfExpired(withKey.ref, withKey.active), true)
  t.match(JSON.parse((await backend.events.read(withKey.ref, 4)).events[0]!.frame), { metadata: { request_id: 'q1', finish_reason: 'interrupted' } }, 'the request id goes with it')

  const silent = await ghostRun(backend, 'silent', 50)
  // The tokens were not this run's: nothing of it to keep.
  const silentActive = { ...silent.active, runId: 'ghost-silent' }
  await backend.sessions.releaseRun(silent.ref, silent.active.runId)
  await backend.sessions.beginRun(silent.ref, { runId: 'quiet', instanceId: 'ghost', leaseMs: 50, input, maxMessages: 50 })
  const quiet = (await backend.sessions.activeRun(silent.ref))!
  await sleep(60)
  t.equal(await sweeper.endIfExpired(silent.ref, silentActive), true, 'not that run any more')
  t.equal(await sweeper.endIfExpired(silent.ref, quiet), true)
  t.match(JSON.parse((await backend.events.read(silent.ref, 4)).events[0]!.frame), { content: '', metadata: { run_id: 'quiet', finish_reason: 'interrupted' } })
  t.same((await backend.sessions.get('alice', 'silent'))?.messages.at(-1), userMessage, 'no text, nothing added to the history')

  const busy = await ghostRun(backend, 'moving', 50)
  await sleep(60)
  // A writer slips an event in between the read and the atomic end: the end is refused.
  const racing = {
    ...backend,
    events: new Proxy(backend.events, {
      get(target, property) {
        if (property === 'read') {
          return async (ref: SessionRef, afterSeq: number) => {
            const held = await target.read(ref, afterSeq)
            await backend.sessions.append(ref, busy.active.runId, { type: 'token', session_id: ref.id, content: '!', metadata: { run_id: busy.active.runId } })
            return held
          }
        }
        const value = Reflect.get(target, property, target) as unknown
        return typeof value === 'function' ? value.bind(target) : value
      },
    }),
  }
  const { sweeper: raced } = sweeperFor(racing)
  t.equal(await raced.endIfExpired(busy.ref, busy.active), false, 'the log moved: not ended now')
  t.equal(await sweeper.endIfExpired(busy.ref, busy.active), true, 'the next check ends it')
  t.match(JSON.parse((await backend.events.read(busy.ref, 5)).events[0]!.frame), { content: 'Hello!' })

  const young = await ghostRun(backend, 'young', 60_000)
  t.equal(await sweeper.endIfExpired(young.ref, young.active), false, 'lease alive')
  const mine = await ghostRun(backend, 'mine', 50)
  await sleep(60)
  t.equal(await sweeper.endIfExpired(mine.ref, mine.active), false, 'a run of this instance')
  // Our clock says expired, the store's says it was renewed: the store decides.
  const renewed = await ghostRun(backend, 'renewed', 50)
  await backend.sessions.renewLease(renewed.ref, renewed.active.runId, 60_000)
  await sleep(60)
  t.equal(await sweeper.endIfExpired(renewed.ref, renewed.active), false, 'renewed meanwhile')
  t.equal(interrupted(), 3)
})

t.test('started, the sweeper checks on its own until stopped', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  const { sweeper } = sweeperFor(backend, { intervalMs: 50 })
  sweeper.start()
  sweeper.start()
  t.teardown(() => sweeper.stop())
  const a = await ghostRun(backend, 'a', 100)
  for (let i = 0; i < 40 && (await backend.sessions.activeRun(a.ref)); i++) await sleep(25)
  t.equal(await backend.sessions.activeRun(a.ref), null, 'ended by a periodic sweep')
  sweeper.stop()
  const b = await ghostRun(backend, 'b', 50)
  await sleep(300)
  t.ok(await backend.sessions.activeRun(b.ref), 'stopped: no more sweeps')
})

t.test('on the memory backend: nothing to sweep; endIfExpired works the same', async (t) => {
  const backend = createMemoryBackend({ ttlSeconds: 60, maxEvents: 100 })
  t.teardown(() => backend.close())
  const { sweeper, warnings } = sweeperFor(backend)
  const run = await ghostRun(backend, 'm', 20)
  await sleep(40)
  await sweeper.sweep()
  t.ok(await backend.sessions.activeRun(run.ref), 'one instance: no lease index to sweep')
  t.equal(await sweeper.endIfExpired(run.ref, run.active), true)
  t.match(JSON.parse((await backend.events.read(run.ref, 4)).events[0]!.frame), { content: 'Hello', metadata: { finish_reason: 'interrupted' } })
  t.equal(warnings.length, 1)
})

t.test('a run ended here with a queued successor: the successor becomes active, held by this instance, and starts here', async (t) => {
  const memory = createMemoryBackend({ ttlSeconds: 60, maxEvents: 100 })
  t.teardown(() => memory.close())
  const r = await useRedis(t)
  for (const backend of r ? [memory, await redisBackend(t, r)] : [memory]) {
    const { sweeper, started, warnings } = sweeperFor(backend)
    const ghost = await ghostRun(backend, `queued-${backend.kind}`, 20)
    const next = { role: 'user' as const, content: 'next one' }
    const queued = await backend.sessions.beginRun(ghost.ref, {
      runId: 'successor',
      requestId: 'q-next',
      instanceId: 'elsewhere',
      leaseMs: 60_000,
      input: { kind: 'message', message: next },
      maxMessages: 50,
      onBusy: 'enqueue',
      maxQueued: 1,
    })
    t.match(queued, { kind: 'queued', position: 1 }, backend.kind)
    await sleep(40)
    t.equal(await sweeper.endIfExpired(ghost.ref, ghost.active), true)
    t.equal(warnings.length, 1)
    t.same(started, [
      {
        ref: ghost.ref,
        next: { runId: 'successor', requestId: 'q-next', startAfterSeq: 5, history: [userMessage, userMessage, { role: 'assistant', content: 'Hello' }], userMessage: next },
      },
    ], `${backend.kind}: startNext got the successor, after the interrupted run's complete`)
    t.match(await backend.sessions.activeRun(ghost.ref), { runId: 'successor', instanceId: 'sweeper', startAfterSeq: 5 }, 'held by the instance that ended its predecessor')
  }
})
