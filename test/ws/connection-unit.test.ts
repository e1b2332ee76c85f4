import t from 'tap'
import { EventEmitter } from 'node:events'
import { mock } from 'node:test'
import pino from 'pino'
import type { WebSocket } from 'ws'
import type { FastifyBaseLogger } from 'fastify'
import { Connection, closeSocket } from '../../src/ws/connection.ts'
import type { SessionService } from '../../src/sessions/session-service.ts'

/** Just enough of a `ws` socket to watch what a Connection does with it. */
class FakeSocket extends EventEmitter {
  readonly OPEN = 1
  readonly CLOSING = 2
  readonly CLOSED = 3
  readyState = 1
  bufferedAmount = 0
  closes: Array<[number, string]> = []
  terminated = 0
  sent: string[] = []
  /** The TCP socket under it: Connection corks it to batch a burst of frames into one write. */
  readonly _socket = Object.assign(new EventEmitter(), { corked: 0, cork: () => void this._socket.corked++, uncork: () => void this._socket.corked-- })
  paused = false
  pause(): void {
    this.paused = true
  }
  resume(): void {
    this.paused = false
  }
  close(code: number, reason: string): void {
    this.closes.push([code, reason])
    this.readyState = this.CLOSING
  }
  terminate(): void {
    this.terminated++
    this.readyState = this.CLOSED
  }
  send(frame: string): void {
    this.sent.push(frame)
  }
}

const MAX_TIMER_MS = 2 ** 31 - 1
const silent = pino({ level: 'silent' }) as unknown as FastifyBaseLogger

function connection(socket: FakeSocket, expSeconds: number): Connection {
  return new Connection({
    socket: socket as unknown as WebSocket,
    claims: { sub: 'alice', exp: expSeconds },
    requestId: 'req-1',
    sessions: {} as unknown as SessionService,
    verifyToken: () => ({ ok: false, reason: 'invalid token' }),
    log: silent,
    limits: {
      maxContentChars: 100,
      invalidFrameLimit: 5,
      invalidFrameWindowMs: 1000,
      maxPendingFrames: 10,
      maxWatched: 4,
      flow: { highWaterMark: 1024, maxBufferedBytes: 4096, slowClientTimeoutMs: 1000 },
    },
  })
}

t.test('closeSocket: close frame, then destroyed within 1 s (at 0.5 s) if the peer stays; no-op once closed', async (t) => {
  mock.timers.enable({ apis: ['setTimeout'] })
  t.teardown(() => mock.timers.reset())
  const socket = new FakeSocket()
  closeSocket(socket as unknown as WebSocket, 4001, 'missing token')
  t.same(socket.closes, [[4001, 'missing token']])
  mock.timers.tick(499)
  t.equal(socket.terminated, 0)
  mock.timers.tick(1)
  t.equal(socket.terminated, 1, 'terminated at 0.5 s')

  const closing = new FakeSocket()
  closing.readyState = closing.CLOSING
  closeSocket(closing as unknown as WebSocket, 1000, '')
  t.same(closing.closes, [], 'already closing: no second close frame')
  mock.timers.tick(1000)
  t.equal(closing.terminated, 1, 'but still destroyed in time')

  const closed = new FakeSocket()
  closed.readyState = closed.CLOSED
  closeSocket(closed as unknown as WebSocket, 1000, '')
  mock.timers.tick(2000)
  t.same([closed.closes, closed.terminated], [[], 0], 'closed: nothing to do')
})

t.test('a token expiry beyond the timer limit is re-armed, then closes 4001 token expired', async (t) => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 0 })
  t.teardown(() => mock.timers.reset())
  const socket = new FakeSocket()
  const exp = Math.ceil((MAX_TIMER_MS * 1.5) / 1000)
  connection(socket, exp)
  mock.timers.tick(MAX_TIMER_MS)
  t.same(socket.closes, [], 'the first timer fired early: re-armed, not closed')
  mock.timers.tick(exp * 1000 - MAX_TIMER_MS - 1)
  t.same(socket.closes, [])
  mock.timers.tick(1)
  t.same(socket.closes, [[4001, 'token expired']])
  socket.emit('close', 4001)
})

t.test('a token already expired when the connection starts closes at once', async (t) => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 10_000 })
  t.teardown(() => mock.timers.reset())
  const socket = new FakeSocket()
  connection(socket, 5)
  mock.timers.tick(0)
  t.same(socket.closes, [[4001, 'token expired']])
  socket.emit('close', 4001)
})

t.test('a burst of frames is written in one go: corked on the first, uncorked once the burst is done', async (t) => {
  const socket = new FakeSocket()
  const conn = connection(socket, Math.floor(Date.now() / 1000) + 60)
  for (let i = 0; i < 5; i++) conn.deliver(`{"n":${i}}`)
  t.equal(socket._socket.corked, 1, 'corked once for the whole burst')
  await Promise.resolve()
  conn.deliver('{"n":5}')
  t.equal(socket._socket.corked, 1, 'microtasks of the same burst join it')
  await new Promise((resolve) => process.nextTick(resolve))
  t.equal(socket._socket.corked, 0, 'uncorked after the burst')
  t.equal(socket.sent.length, 6)
  conn.deliver('{"n":6}')
  t.equal(socket._socket.corked, 1, 'the next burst corks again')
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(socket._socket.corked, 0)
  socket.emit('close', 1000)
})

t.test('nothing is sent once the socket is no longer open', async (t) => {
  const socket = new FakeSocket()
  const conn = connection(socket, Math.floor(Date.now() / 1000) + 60)
  conn.deliver('{"a":1}')
  socket.readyState = socket.CLOSING
  conn.deliver('{"b":2}')
  conn.send({ type: 'pong', session_id: '' })
  t.same(socket.sent, ['{"a":1}'])
  t.equal(conn.bufferedAmount, 0)
  socket.emit('close', 1000)
})

t.test('flow control through the connection: above the mark reading pauses; past the cap it closes 1008', async (t) => {
  const socket = new FakeSocket()
  const conn = connection(socket, Math.floor(Date.now() / 1000) + 60)
  t.ok(conn.writable)
  socket.bufferedAmount = 2000
  conn.deliver('{"a":1}')
  t.notOk(conn.writable, 'above the high-water mark')
  t.ok(socket.paused, 'reading paused')
  let woke = false
  const waiting = conn.whenWritable().then(() => (woke = true))
  socket.bufferedAmount = 0
  socket._socket.emit('drain')
  await waiting
  t.ok(woke && conn.writable && !socket.paused, 'drained: writable again, reading resumed')
  socket.bufferedAmount = 5000
  conn.deliver('{"b":2}')
  t.same(socket.closes, [[1008, 'too much unsent data']])
  t.notOk(conn.isOpen)
  socket.emit('close', 1008)
})
