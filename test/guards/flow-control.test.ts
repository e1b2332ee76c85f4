import t from 'tap'
import { EventEmitter } from 'node:events'
import pino from 'pino'
import type { WebSocket } from 'ws'
import { createFlowControl } from '../../src/guards/flow-control.ts'
import type { Subscriber } from '../../src/sessions/subscriber.ts'

const MARK = 1000
const log = pino({ level: 'silent' })

/** Just enough of a ws WebSocket: readyState, 'close', and the TCP socket's 'drain'. */
class FakeSocket extends EventEmitter {
  readonly OPEN = 1
  readonly CLOSING = 2
  readonly CLOSED = 3
  readyState = 1
  _socket: EventEmitter | null = new EventEmitter()
  drain(): void {
    this._socket?.emit('drain')
  }
  closed(): void {
    this.readyState = this.CLOSED
    this.emit('close')
  }
}

class FakeConnection implements Subscriber {
  readonly id: string
  readonly userId = 'alice'
  readonly fake = new FakeSocket()
  readonly socket = this.fake as unknown as WebSocket
  bufferedAmount = 0
  closes: Array<[number, string]> = []
  constructor(id: string) {
    this.id = id
  }
  deliver(): void {}
  close(code: number, reason: string): void {
    this.closes.push([code, reason])
    this.fake.readyState = this.fake.CLOSING
  }
}

/** Settles to 'pending' if the promise has not settled within `ms`. */
function within(promise: Promise<void>, ms: number): Promise<'done' | 'pending'> {
  return Promise.race([promise.then(() => 'done' as const), new Promise<'pending'>((resolve) => setTimeout(resolve, ms, 'pending'))])
}

const setup = (slowClientTimeoutMs = 60_000, pollMs = 60_000) => createFlowControl({ highWaterMark: MARK, slowClientTimeoutMs, log, pollMs })

t.test('resolves at once while every socket is at or below the mark', async (t) => {
  const flowControl = setup()
  const a = new FakeConnection('a')
  const b = new FakeConnection('b')
  b.bufferedAmount = MARK
  const notASocket: Subscriber = { id: 'x', userId: 'x', deliver() {}, bufferedAmount: 10 * MARK }
  t.equal(await within(flowControl('s', new Set([a, b, notASocket])), 50), 'done', 'subscribers without a socket are not waited on')
})

t.test("waits while a socket is above the mark, until its 'drain'", async (t) => {
  const flowControl = setup()
  const a = new FakeConnection('a')
  a.bufferedAmount = MARK + 1
  const waiting = flowControl('s', new Set([a]))
  t.equal(await within(waiting, 50), 'pending')
  a.bufferedAmount = 0
  a.fake.drain()
  t.equal(await within(waiting, 50), 'done')
  t.same(a.closes, [])
})

t.test('re-checks by polling should no drain come', async (t) => {
  const flowControl = setup(60_000, 20)
  const a = new FakeConnection('a')
  a.bufferedAmount = MARK + 1
  a.fake._socket = null
  const waiting = flowControl('s', new Set([a]))
  t.equal(await within(waiting, 60), 'pending')
  a.bufferedAmount = 0
  t.equal(await within(waiting, 200), 'done')
})

t.test("the run's abort ends the wait: a cancel never waits on a slow socket", async (t) => {
  const flowControl = setup()
  const a = new FakeConnection('a')
  a.bufferedAmount = MARK + 1
  const controller = new AbortController()
  const waiting = flowControl('s', new Set([a]), controller.signal)
  t.equal(await within(waiting, 50), 'pending')
  controller.abort()
  t.equal(await within(waiting, 50), 'done')
  t.equal(await within(flowControl('s', new Set([a]), controller.signal), 50), 'done', 'an aborted run is never held')
})

t.test('a socket blocked past the timeout is closed 1008 once, and holds the run until it is gone', async (t) => {
  const flowControl = setup(200, 20)
  const slow = new FakeConnection('slow')
  const fine = new FakeConnection('fine')
  slow.bufferedAmount = MARK + 1
  const waiting = flowControl('s', new Set([slow, fine]))
  t.equal(await within(waiting, 100), 'pending')
  t.same(slow.closes, [], 'not before the timeout')
  await new Promise((resolve) => setTimeout(resolve, 250))
  t.same(slow.closes, [[1008, 'slow client']])
  t.equal(await within(waiting, 100), 'pending', 'closing, with its buffer still full')
  t.same(slow.closes.length, 1, 'closed once')
  slow.fake.closed()
  t.equal(await within(waiting, 50), 'done')
  t.same(fine.closes, [])
})

t.test('a closed socket never holds a run', async (t) => {
  const flowControl = setup()
  const a = new FakeConnection('a')
  a.bufferedAmount = MARK + 1
  a.fake.readyState = a.fake.CLOSED
  t.equal(await within(flowControl('s', new Set([a])), 50), 'done')
})

t.test('the timeout counts continuous time above the mark', async (t) => {
  const flowControl = setup(300, 20)
  const a = new FakeConnection('a')
  for (let round = 0; round < 3; round++) {
    a.bufferedAmount = MARK + 1
    const waiting = flowControl('s', new Set([a]))
    await new Promise((resolve) => setTimeout(resolve, 150))
    a.bufferedAmount = 0
    a.fake.drain()
    t.equal(await within(waiting, 100), 'done')
  }
  t.same(a.closes, [], 'blocked 450 ms in all, never 300 ms at a stretch')
})
