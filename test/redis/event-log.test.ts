import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Redis } from 'ioredis'
import { MemoryEventLog } from '../../src/store/memory/index.ts'
import { serializeEvent } from '../../src/protocol/serialize.ts'
import type { Backend, LogEnd, LoggedEvent, LogListener, SessionRef } from '../../src/store/types.ts'
import type { UnsequencedRunEvent } from '../../src/protocol/index.ts'
import { redisBackend, useRedis } from '../helpers/redis.ts'
import { RedisEventLog } from '../../src/store/redis/event-log.ts'
import { SharedRedis, openRedis, whenReady } from '../../src/store/redis/connections.ts'
import { sessionKeys } from '../../src/store/redis/keys.ts'
import { StreamTail, type Tail } from '../../src/store/redis/stream-tail.ts'

const RUN = 'run-1'
const token = (sessionId: string, text: string): UnsequencedRunEvent => ({
  type: 'token',
  session_id: sessionId,
  content: text,
  metadata: { run_id: RUN },
})

/** A session of `backend` with a run going: `append` writes through the store's fence. */
async function session(backend: Backend, id: string, owner = 'alice') {
  const opened = await backend.sessions.open(owner, id, 1000)
  if (opened.kind !== 'open') throw new Error('too many')
  const ref: SessionRef = { owner, id, gen: opened.session.gen }
  await backend.sessions.beginRun(ref, { runId: RUN, instanceId: 'i', leaseMs: 60_000, input: { kind: 'message', message: { role: 'user', content: 'hi' } }, maxMessages: 10 })
  return {
    ref,
    append: async (text: string, via: Backend = backend): Promise<LoggedEvent> => {
      const logged = await via.sessions.append(ref, RUN, token(id, text))
      if (!logged) throw new Error('fenced')
      return logged
    },
  }
}

/** Collects what a subscription delivers; `until(n)` waits for the n-th event, `ended()` for the end. */
function collector() {
  const events: LoggedEvent[] = []
  const ends: LogEnd[] = []
  let wake: (() => void) | undefined
  const wait = async (done: () => boolean, what: string, timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs
    while (!done()) {
      if (Date.now() > deadline) throw new Error(`${what} (got ${events.length} events, ends ${ends.join()})`)
      await new Promise<void>((resolve) => {
        wake = resolve
        setTimeout(resolve, 20)
      })
    }
  }
  const listener: LogListener = {
    event: (event) => {
      events.push(event)
      wake?.()
    },
    end: (reason) => {
      ends.push(reason)
      wake?.()
    },
  }
  return {
    events,
    ends,
    listener,
    async until(count: number, timeoutMs = 3000): Promise<LoggedEvent[]> {
      await wait(() => events.length >= count, `waited for ${count} events`, timeoutMs)
      return events
    },
    async ended(timeoutMs = 3000): Promise<LogEnd[]> {
      await wait(() => ends.length > 0, 'waited for the end', timeoutMs)
      return ends
    },
  }
}

const seqs = (events: LoggedEvent[]) => events.map((event) => event.seq)
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)
const silent = { info() {}, warn() {}, error() {}, debug() {} }

t.test('append stores the exact frame with the next seq; read sees it; the stream expires with the session', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r, { ttlSeconds: 60 })
  const s = await session(backend, 's')
  t.same(await backend.events.read(s.ref, 0), { events: [], gone: false, lastSeq: 0 })
  const first = await s.append('héllo "world" \u2028')
  const second = await s.append('again')
  t.same(first, { seq: 1, frame: serializeEvent(token('s', 'héllo "world" \u2028'), 1) })
  t.equal(second.seq, 2)
  t.same(await backend.events.read(s.ref, 0), { events: [first, second], gone: false, lastSeq: 2 }, 'replays are byte-identical')
  const ttl = await r.redis.pttl(sessionKeys(r.prefix, s.ref).events)
  t.ok(ttl > 0 && ttl <= 60_000, `the stream expires with the session TTL (${ttl} ms)`)
})

t.test('two writers on different connections never share a seq', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const a = await redisBackend(t, r)
  const b = await redisBackend(t, r)
  const s = await session(a, 's')
  const appended = await Promise.all(range(1, 60).map((i) => s.append(`t${i}`, i % 2 ? a : b)))
  t.same(seqs(appended).sort((x, y) => x - y), range(1, 60), 'seqs 1..60, each once')
  const held = await a.events.read(s.ref, 0)
  t.same(seqs(held.events), range(1, 60), 'the stream is in seq order')
  for (const event of held.events) t.equal(event.frame, appended.find((e) => e.seq === event.seq)?.frame)
})

t.test('read and gone follow the memory log exactly, with a bounded stream', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const maxEvents = 5
  const backend = await redisBackend(t, r, { maxEvents })
  const s = await session(backend, 's')
  const memory = new MemoryEventLog({ maxEvents })
  for (const afterSeq of [0, 1, 3]) t.same(await backend.events.read(s.ref, afterSeq), await memory.read(s.ref, afterSeq), `empty log, after ${afterSeq}`)
  for (let i = 1; i <= 12; i++) {
    await s.append(`t${i}`)
    memory.append(s.ref, token('s', `t${i}`))
    for (let afterSeq = 0; afterSeq <= i + 1; afterSeq++) {
      t.same(await backend.events.read(s.ref, afterSeq), await memory.read(s.ref, afterSeq), `${i} appended, after ${afterSeq}`)
    }
  }
  t.equal(await r.redis.xlen(sessionKeys(r.prefix, s.ref).events), maxEvents, 'MAXLEN bounds the stream')
})

t.test('subscribe: the held backlog then live events, each once, in order, never before the promise resolves', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const writer = await redisBackend(t, r)
  const reader = await redisBackend(t, r)
  const s = await session(writer, 's')
  for (let i = 1; i <= 3; i++) await s.append(`old${i}`)
  const got = collector()
  const subscription = await reader.events.subscribe(s.ref, 1, got.listener)
  await Promise.resolve()
  t.equal(got.events.length, 0, 'nothing delivered while the caller reacts to the resolved promise')
  for (let i = 4; i <= 20; i++) await s.append(`new${i}`)
  t.same(seqs(await got.until(19)), range(2, 20))
  t.same(
    got.events.map((event) => JSON.parse(event.frame).content),
    [2, 3].map((i) => `old${i}`).concat(range(4, 20).map((i) => `new${i}`)),
  )
  subscription.close()
  subscription.close()
  await s.append('after close')
  await sleep(100)
  t.equal(got.events.length, 19, 'nothing after close')
})

t.test('a second subscriber from an older seq gets what the tail had already passed', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  const s = await session(backend, 's')
  const first = collector()
  t.teardown((await backend.events.subscribe(s.ref, 0, first.listener)).close)
  for (let i = 1; i <= 5; i++) await s.append(`t${i}`)
  await first.until(5)
  const second = collector()
  t.teardown((await backend.events.subscribe(s.ref, 2, second.listener)).close)
  const third = collector()
  t.teardown((await backend.events.subscribe(s.ref, 7, third.listener)).close)
  for (let i = 6; i <= 9; i++) await s.append(`t${i}`)
  t.same(seqs(await second.until(7)), range(3, 9), 'caught up from its own seq, then live')
  t.same(seqs(await third.until(2)), [8, 9], 'a subscriber ahead of the tail skips what it has')
  t.same(seqs(first.events), range(1, 9), 'the first one saw each event once')
})

t.test('a second subscriber from a seq no longer held gets history_gone, not a gap', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r, { maxEvents: 3 })
  const s = await session(backend, 's')
  const first = collector()
  t.teardown((await backend.events.subscribe(s.ref, 0, first.listener)).close)
  for (let i = 1; i <= 6; i++) await s.append(`t${i}`)
  await first.until(6)
  const late = collector()
  await backend.events.subscribe(s.ref, 1, late.listener)
  t.same(await late.ended(), ['history_gone'])
  t.same(late.events, [], 'nothing of what is still held: the reader must reload')
  await s.append('t7')
  t.same(seqs(await first.until(7)), range(1, 7), 'the others go on')
  t.equal(late.events.length, 0)
})

t.test('one blocking connection serves every live tail, and a new stream interrupts its wait', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const reader = await redisBackend(t, r)
  const writer = await redisBackend(t, r)
  const sessions = await Promise.all(range(1, 12).map((i) => session(writer, `s${i}`)))
  const got = sessions.map(() => collector())
  // Subscribed one after the other: each joins while the tail is blocked on the others.
  for (const [i, s] of sessions.entries()) {
    t.teardown((await reader.events.subscribe(s.ref, 0, got[i]!.listener)).close)
    await sleep(5)
  }
  const started = Date.now()
  await Promise.all(sessions.map((s) => s.append(s.ref.id)))
  for (const [i, s] of sessions.entries()) t.same(seqs(await got[i]!.until(1)), [1], `${s.ref.id} delivered`)
  t.ok(Date.now() - started < 2000, 'live events arrive without waiting out a blocked read')
  const name = (reader.redis as Redis).options.connectionName!.replace(/-commands$/, '')
  const clients = (await r.redis.client('LIST')) as string
  const mine = clients.split('\n').filter((line) => line.includes(` name=${name}-`))
  t.equal(mine.length, 3, 'three connections per instance: commands, tail, control')
  t.equal(mine.filter((line) => line.includes(` name=${name}-tail `)).length, 1, 'one tail connection')
})

t.test('deletion: every tail reads the end mark after the last event, on every instance', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const writer = await redisBackend(t, r)
  const reader = await redisBackend(t, r)
  const s = await session(writer, 's')
  const empty = await session(writer, 'empty')
  await s.append('a')
  const here = collector()
  const there = collector()
  const nothingYet = collector()
  await writer.events.subscribe(s.ref, 0, here.listener)
  await reader.events.subscribe(s.ref, 1, there.listener)
  await reader.events.subscribe(empty.ref, 0, nothingYet.listener)
  await here.until(1)
  await s.append('b')
  t.equal(await writer.sessions.delete(s.ref), true)
  t.equal(await writer.sessions.delete(empty.ref), true)
  t.same(await here.ended(), ['deleted'])
  t.same(seqs(here.events), [1, 2], 'the events first')
  t.same(await there.ended(), ['deleted'], 'on another instance too')
  t.same(seqs(there.events), [2])
  t.same(await nothingYet.ended(), ['deleted'], 'a session with no events ends too')

  const late = collector()
  await reader.events.subscribe(s.ref, 2, late.listener)
  t.same(await late.ended(), ['deleted'], 'a tail that joins after the deletion reads the mark')
  const ttl = await r.redis.pttl(sessionKeys(r.prefix, s.ref).events)
  t.ok(ttl > 0 && ttl <= 60_000, 'the stream lingers briefly for its tails')

  const next = await session(writer, 's')
  const fresh = collector()
  await reader.events.subscribe(next.ref, 0, fresh.listener)
  await next.append('new')
  t.same(seqs(await fresh.until(1)), [1])
  t.same(JSON.parse(fresh.events[0]!.frame).content, 'new', 'a new generation does not see the old events')
  t.same(seqs((await reader.events.read(next.ref, 0)).events), [1])
})

t.test('pause and resume: a paused subscription gets nothing, then catches up; a gap ends it', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r, { maxEvents: 5 })
  const other = await redisBackend(t, r)
  const s = await session(backend, 's')
  const got = collector()
  const subscription = await other.events.subscribe(s.ref, 0, got.listener)
  await s.append('a')
  await got.until(1)
  subscription.pause()
  subscription.pause()
  await s.append('b')
  await s.append('c')
  await sleep(150)
  t.same(seqs(got.events), [1], 'paused: nothing, even from the read that was in flight')
  subscription.resume()
  t.same(seqs(await got.until(3)), [1, 2, 3], 'resumed: caught up from the log')
  subscription.resume()
  await s.append('d')
  t.same(seqs(await got.until(4)), [1, 2, 3, 4], 'one resume undoes any number of pauses; extra resumes do nothing')

  subscription.pause()
  for (let i = 0; i < 8; i++) await s.append(`x${i}`)
  await sleep(100)
  t.same(got.ends, [])
  subscription.resume()
  t.same(await got.ended(), ['history_gone'], 'what it missed was trimmed: it ends')
  t.equal(got.events.length, 4)
  subscription.close()
})

t.test('pausing inside a delivery holds the rest of the batch and of the backlog', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  const s = await session(backend, 's')
  for (let i = 1; i <= 4; i++) await s.append(`t${i}`)
  const got = collector()
  let subscription: { pause(): void; resume(): void; close(): void } | undefined
  subscription = await backend.events.subscribe(s.ref, 0, {
    event: (event) => {
      got.listener.event(event)
      if (event.seq === 2 || event.seq === 6) subscription!.pause()
    },
    end: got.listener.end,
  })
  await got.until(2)
  await sleep(50)
  t.same(seqs(got.events), [1, 2], 'the backlog stops at the pause')
  subscription.resume()
  await got.until(4)
  for (let i = 5; i <= 8; i++) await s.append(`t${i}`)
  await got.until(6)
  await sleep(100)
  t.same(seqs(got.events), range(1, 6), 'a live batch stops at the pause too')
  subscription.resume()
  t.same(seqs(await got.until(8)), range(1, 8), 'each once, in order')
  subscription.close()
})

t.test('a subscription closed while paused does not hold up the stream for the others', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  const s = await session(backend, 's')
  const stuck = collector()
  const other = collector()
  const stuckSub = await backend.events.subscribe(s.ref, 0, stuck.listener)
  t.teardown((await backend.events.subscribe(s.ref, 0, other.listener)).close)
  await s.append('a')
  await other.until(1)
  stuckSub.pause()
  stuckSub.close()
  stuckSub.resume()
  stuckSub.pause()
  await s.append('b')
  t.same(seqs(await other.until(2)), [1, 2])
  t.same(seqs(stuck.events), [1])
})

t.test('closing the log ends its tail and removes its wake-up key', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  const a = await session(backend, 'a')
  const b = await session(backend, 'b')
  const got = collector()
  await backend.events.subscribe(a.ref, 0, got.listener)
  await sleep(20)
  await backend.events.subscribe(b.ref, 0, got.listener)
  await b.append('x')
  await got.until(1)
  await backend.events.close()
  await backend.events.close()
  t.same((await r.keys()).filter((key) => key.includes(':tail:')), [], 'no wake-up key left')
})

t.test('events and ends that arrive before the caller has reacted are held, then delivered once and in order', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  const s = await session(backend, 's')
  for (let i = 1; i <= 4; i++) await s.append(`t${i}`)
  // A tail that hands over entries 3..6 the moment the subscription is registered, and 5 twice.
  let push: LogListener | undefined
  const calls: string[] = []
  const tail: Tail = {
    add: (_key, _afterSeq, listener) => ((push = listener), 2),
    remove: () => void calls.push('remove'),
    pause: () => void calls.push('pause'),
    resume: () => void calls.push('resume'),
    close: async () => {},
  }
  const log = new RedisEventLog({ commands: new SharedRedis(backend.redis!, 2), tail, prefix: r.prefix })
  const got = collector()
  const subscription = await log.subscribe(s.ref, 0, got.listener)
  for (const seq of [3, 4, 5, 5, 6]) push!.event({ seq, frame: `f${seq}` })
  t.same(got.events, [], 'nothing yet: the caller reacts first')
  await got.until(6)
  t.same(seqs(got.events), [1, 2, 3, 4, 5, 6], 'backlog (1, 2) from Redis, then the held ones, each once')
  push!.event({ seq: 7, frame: 'f7' })
  t.same(seqs(got.events).at(-1), 7, 'live ones at once after that')
  subscription.pause()
  push!.end('deleted')
  t.same(got.ends, [], 'paused: not even the end')
  subscription.resume()
  t.same(got.ends, ['deleted'])
  t.same(calls, ['pause', 'remove'], 'the tail dropped the stream: nothing to resume there')
  subscription.close()
  push!.event({ seq: 8, frame: 'f8' })
  t.equal(got.events.length, 7, 'none after the end')

  const early = collector()
  await log.subscribe(s.ref, 0, early.listener)
  push!.end('deleted')
  t.same(early.ends, [])
  await early.ended()
  t.same(seqs(early.events), [1, 2], 'an end that came first waits for the backlog')
})

t.test('the tail survives a failing listener and a failing read', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const errors: unknown[] = []
  const log = { ...silent, error: (obj: unknown) => void errors.push(obj) }
  const backend = await redisBackend(t, r, { logger: log })
  const s = await session(backend, 's')
  t.teardown((await backend.events.subscribe(s.ref, 0, {
    event: () => {
      throw new Error('listener bug')
    },
    end: () => {},
  })).close)
  const got = collector()
  t.teardown((await backend.events.subscribe(s.ref, 0, got.listener)).close)
  await s.append('one')
  await got.until(1)
  t.equal(errors.length, 1, 'the failure is logged; the other listener got the event')

  // A key that is not a stream makes every read fail (WRONGTYPE) until it is one again.
  const broken = await session(backend, 'broken')
  const key = sessionKeys(r.prefix, broken.ref).events
  await r.redis.set(key, 'not a stream')
  const gotBroken = collector()
  t.teardown((await backend.events.subscribe(broken.ref, 0, gotBroken.listener)).close)
  await sleep(300)
  await r.redis.del(key)
  await broken.append('fixed')
  await s.append('two')
  t.same(seqs(await gotBroken.until(1)), [1], 'reads resumed')
  t.same(seqs(await got.until(2)), [1, 2])
})

t.test('StreamTail: a read that times out reads again; streams paused, resumed and removed', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  const s = await session(backend, 's')
  const key = sessionKeys(r.prefix, s.ref).events
  const blocking = openRedis(r.url, 'test-tail', silent)
  const tail = new StreamTail({ blocking, commands: backend.redis as Redis, wakeKey: `${r.prefix}wake`, log: silent, blockMs: 50 })
  t.teardown(() => tail.close())
  const got = collector()
  t.equal(tail.add(key, 0, got.listener), 0)
  await sleep(200)
  await s.append('late')
  t.same(seqs(await got.until(1)), [1])

  // Every stream paused: the tail waits idle, and a resume wakes it.
  tail.pause(key)
  tail.pause('unknown')
  tail.resume('unknown')
  await sleep(100)
  await s.append('while paused')
  await sleep(100)
  t.equal(got.events.length, 1)
  tail.resume(key)
  tail.resume(key)
  t.same(seqs(await got.until(2)), [1, 2])

  // Removed while a read is in flight: what that read returns for it is dropped.
  const other = collector()
  tail.add(key, 2, other.listener)
  tail.remove(key, got.listener)
  tail.remove(key, other.listener)
  tail.remove(key, other.listener)
  await s.append('unread')
  await sleep(150)
  t.equal(got.events.length + other.events.length, 2, 'nobody tails it any more')
  t.equal(tail.add(key, 3, other.listener), 3, 'added again from its own seq')
  await s.append('read')
  t.same(seqs(await other.until(1)), [4])
})

t.test('StreamTail: a failed wake-up is logged; the next read serves the new stream', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  const a = await session(backend, 'a')
  const b = await session(backend, 'b')
  const debug: string[] = []
  const log = { ...silent, debug: (_obj: unknown, msg?: string) => void debug.push(msg ?? '') }
  const failing = {
    multi: () => ({ xadd: function () { return this }, pexpire: function () { return this }, exec: () => Promise.reject(new Error('down')) }),
    del: () => Promise.reject(new Error('down')),
  } as unknown as Redis
  const blocking = openRedis(r.url, 'test-tail', silent)
  await whenReady(blocking, 3000)
  const tail = new StreamTail({ blocking, commands: failing, wakeKey: `${r.prefix}wake`, log, blockMs: 100 })
  t.teardown(() => tail.close())
  const gotA = collector()
  const gotB = collector()
  tail.add(sessionKeys(r.prefix, a.ref).events, 0, gotA.listener)
  await sleep(30)
  tail.add(sessionKeys(r.prefix, b.ref).events, 0, gotB.listener)
  await sleep(10)
  t.same(debug, ['event tail wake-up failed'], 'logged')
  await b.append('b')
  t.same(seqs(await gotB.until(1)), [1], 'served once the blocked read timed out')
})
