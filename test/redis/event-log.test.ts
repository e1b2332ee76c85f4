import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { MemoryEventLog } from '../../src/store/memory.ts'
import { serializeEvent, type LoggedEvent } from '../../src/store/types.ts'
import type { UnsequencedRunEvent } from '../../src/protocol/index.ts'
import { redisBackend, useRedis } from '../helpers/redis.ts'
import { RedisEventLog } from '../../src/store/redis/event-log.ts'
import { SharedRedis, openRedis } from '../../src/store/redis/connections.ts'
import { StreamTail, type Tail } from '../../src/store/redis/stream-tail.ts'

const token = (sessionId: string, text: string): UnsequencedRunEvent => ({
  type: 'token',
  session_id: sessionId,
  content: text,
  metadata: { run_id: 'run-1' },
})

/** Collects what a subscription delivers; `until(n)` waits for the n-th event. */
function collector() {
  const events: LoggedEvent[] = []
  let wake: (() => void) | undefined
  return {
    events,
    listener: (event: LoggedEvent) => {
      events.push(event)
      wake?.()
    },
    async until(count: number, timeoutMs = 3000): Promise<LoggedEvent[]> {
      const deadline = Date.now() + timeoutMs
      while (events.length < count) {
        if (Date.now() > deadline) throw new Error(`got ${events.length} of ${count} events`)
        await new Promise<void>((resolve) => {
          wake = resolve
          setTimeout(resolve, 20)
        })
      }
      return events
    },
  }
}

const seqs = (events: LoggedEvent[]) => events.map((event) => event.seq)
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

t.test('append stores the exact frame with the next seq; read and lastSeq see it', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const { events } = await redisBackend(t, r, { ttlSeconds: 60 })
  t.equal(await events.lastSeq('s'), 0)
  const event = token('s', 'héllo "world" \u2028')
  const first = await events.append('s', event)
  const second = await events.append('s', token('s', 'again'))
  t.same(first, { seq: 1, frame: serializeEvent(event, 1) })
  t.equal(second.seq, 2)
  t.equal(await events.lastSeq('s'), 2)
  t.same((await events.read('s', 0)).events, [first, second], 'replays are byte-identical')
  const ttl = await r.redis.pttl(`${r.prefix}session:{s}:events`)
  t.ok(ttl > 0 && ttl <= 60_000, `the stream expires with the session TTL (${ttl} ms)`)
  await events.delete('s')
  t.same(await r.keys(), [], 'delete removes the stream and its counter')
  t.same(await events.read('s', 0), { events: [], gone: false, lastSeq: 0 })
})

t.test('two writers on different connections never share a seq', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const a = await redisBackend(t, r)
  const b = await redisBackend(t, r)
  const appended = await Promise.all(range(1, 60).map((i) => (i % 2 ? a : b).events.append('s', token('s', `t${i}`))))
  t.same(seqs(appended).sort((x, y) => x - y), range(1, 60), 'seqs 1..60, each once')
  const held = await a.events.read('s', 0)
  t.same(seqs(held.events), range(1, 60), 'the stream is in seq order')
  for (const event of held.events) t.equal(event.frame, appended.find((e) => e.seq === event.seq)?.frame)
})

t.test('read and gone follow the memory log exactly, with a bounded stream', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const maxEvents = 5
  const { events } = await redisBackend(t, r, { maxEvents })
  const memory = new MemoryEventLog({ maxEvents })
  for (const afterSeq of [0, 1, 3]) t.same(await events.read('s', afterSeq), await memory.read('s', afterSeq), `empty log, after ${afterSeq}`)
  for (let i = 1; i <= 12; i++) {
    await events.append('s', token('s', `t${i}`))
    await memory.append('s', token('s', `t${i}`))
    for (let afterSeq = 0; afterSeq <= i + 1; afterSeq++) {
      t.same(await events.read('s', afterSeq), await memory.read('s', afterSeq), `${i} appended, after ${afterSeq}`)
    }
  }
  t.equal(await r.redis.xlen(`${r.prefix}session:{s}:events`), maxEvents, 'MAXLEN bounds the stream')
})

t.test('subscribe: the held backlog then live events, each once, in order, never before the promise resolves', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const writer = await redisBackend(t, r)
  const reader = await redisBackend(t, r)
  for (let i = 1; i <= 3; i++) await writer.events.append('s', token('s', `old${i}`))
  const got = collector()
  const subscription = await reader.events.subscribe('s', 1, got.listener)
  await Promise.resolve()
  t.equal(got.events.length, 0, 'nothing delivered while the caller reacts to the resolved promise')
  for (let i = 4; i <= 20; i++) await writer.events.append('s', token('s', `new${i}`))
  t.same(seqs(await got.until(19)), range(2, 20))
  t.same(
    got.events.map((event) => JSON.parse(event.frame).content),
    [2, 3].map((i) => `old${i}`).concat(range(4, 20).map((i) => `new${i}`)),
  )
  subscription.close()
  await writer.events.append('s', token('s', 'after close'))
  await sleep(100)
  t.equal(got.events.length, 19, 'nothing after close')
})

t.test('a second subscriber from an older seq gets what the tail had already passed', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  const first = collector()
  t.teardown((await backend.events.subscribe('s', 0, first.listener)).close)
  for (let i = 1; i <= 5; i++) await backend.events.append('s', token('s', `t${i}`))
  await first.until(5)
  const second = collector()
  t.teardown((await backend.events.subscribe('s', 2, second.listener)).close)
  const third = collector()
  t.teardown((await backend.events.subscribe('s', 7, third.listener)).close)
  for (let i = 6; i <= 9; i++) await backend.events.append('s', token('s', `t${i}`))
  t.same(seqs(await second.until(7)), range(3, 9), 'caught up from its own seq, then live')
  t.same(seqs(await third.until(2)), [8, 9], 'a subscriber ahead of the tail skips what it has')
  t.same(seqs(first.events), range(1, 9), 'the first one saw each event once')
})

t.test('one blocking connection serves every live tail, and a new stream interrupts its wait', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const reader = await redisBackend(t, r)
  const writer = await redisBackend(t, r)
  const sessions = range(1, 12).map((i) => `s${i}`)
  const got = new Map(sessions.map((sessionId) => [sessionId, collector()]))
  // Subscribed one after the other: each joins while the tail is blocked on the others.
  for (const sessionId of sessions) {
    t.teardown((await reader.events.subscribe(sessionId, 0, got.get(sessionId)!.listener)).close)
    await sleep(5)
  }
  const started = Date.now()
  await Promise.all(sessions.map((sessionId) => writer.events.append(sessionId, token(sessionId, sessionId))))
  for (const sessionId of sessions) t.same(seqs(await got.get(sessionId)!.until(1)), [1], `${sessionId} delivered`)
  t.ok(Date.now() - started < 2000, 'live events arrive without waiting out a blocked read')
  const name = reader.redis!.options.connectionName!.replace(/-commands$/, '')
  const clients = (await r.redis.client('LIST')) as string
  const mine = clients.split('\n').filter((line) => line.includes(` name=${name}-`))
  t.equal(mine.length, 3, 'three connections per instance: commands, tail, control')
  t.equal(mine.filter((line) => line.includes(` name=${name}-tail `)).length, 1, 'one tail connection')
})

t.test('closing the log ends its tail and removes its wake-up key', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  const got = collector()
  await backend.events.subscribe('a', 0, got.listener)
  await sleep(20)
  await backend.events.subscribe('b', 0, got.listener)
  await backend.events.append('b', token('b', 'x'))
  await got.until(1)
  await backend.events.close()
  await backend.events.close()
  t.same((await r.keys()).filter((key) => key.includes(':tail:')), [], 'no wake-up key left')
})

t.test('events that arrive before the caller has reacted are held, then delivered once and in order', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  for (let i = 1; i <= 4; i++) await backend.events.append('s', token('s', `t${i}`))
  // A tail that hands over entries 3..6 the moment the subscription is registered, and 5 twice.
  let push: ((event: LoggedEvent) => void) | undefined
  const tail: Tail = {
    add: (_key, _afterSeq, listener) => ((push = listener), 2),
    remove: () => {},
    close: async () => {},
  }
  const log = new RedisEventLog({ commands: new SharedRedis(backend.redis!, 2), tail, prefix: r.prefix, ttlSeconds: 60, maxEvents: 100 })
  const got = collector()
  const subscription = await log.subscribe('s', 0, got.listener)
  for (const seq of [3, 4, 5, 5, 6]) push!({ seq, frame: `f${seq}` })
  t.same(got.events, [], 'nothing yet: the caller reacts first')
  await got.until(6)
  t.same(seqs(got.events), [1, 2, 3, 4, 5, 6], 'backlog (1, 2) from Redis, then the held ones, each once')
  push!({ seq: 7, frame: 'f7' })
  t.same(seqs(got.events).at(-1), 7, 'live ones at once after that')
  subscription.close()
  push!({ seq: 8, frame: 'f8' })
  t.equal(got.events.length, 7, 'none after close')
})

t.test('the tail survives a failing listener and a failing read', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const errors: unknown[] = []
  const log = { info() {}, warn() {}, debug() {}, error: (obj: unknown) => void errors.push(obj) }
  const backend = await redisBackend(t, r, { logger: log })
  t.teardown((await backend.events.subscribe('s', 0, () => {
    throw new Error('listener bug')
  })).close)
  const got = collector()
  t.teardown((await backend.events.subscribe('s', 0, got.listener)).close)
  await backend.events.append('s', token('s', 'one'))
  await got.until(1)
  t.equal(errors.length, 1, 'the failure is logged; the other listener got the event')

  // A key that is not a stream makes every read fail (WRONGTYPE) until it is one again.
  await r.redis.set(`${r.prefix}session:{broken}:events`, 'not a stream')
  const broken = collector()
  t.teardown((await backend.events.subscribe('broken', 0, broken.listener)).close)
  await sleep(300)
  await r.redis.del(`${r.prefix}session:{broken}:events`)
  await backend.events.append('broken', token('broken', 'fixed'))
  await backend.events.append('s', token('s', 'two'))
  t.same(seqs(await broken.until(1)), [1], 'reads resumed')
  t.same(seqs(await got.until(2)), [1, 2])
})

t.test('a tail whose read times out with nothing new reads again', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const backend = await redisBackend(t, r)
  const silent = { info() {}, warn() {}, error() {}, debug() {} }
  const blocking = openRedis(r.url, 'test-tail', silent)
  const tail = new StreamTail({ blocking, commands: backend.redis!, wakeKey: `${r.prefix}wake`, log: silent, blockMs: 50 })
  t.teardown(() => tail.close())
  const got = collector()
  tail.add(`${r.prefix}session:{s}:events`, 0, got.listener)
  await sleep(200)
  await backend.events.append('s', token('s', 'late'))
  t.same(seqs(await got.until(1)), [1])
  tail.remove(`${r.prefix}session:{s}:events`, got.listener)
  tail.remove(`${r.prefix}session:{s}:events`, got.listener)
})
