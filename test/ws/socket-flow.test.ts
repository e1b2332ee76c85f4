// SocketFlow over a real `ws` pair on loopback: the client stops reading (pauses its TCP
// socket) so the server's unsent bytes pile up, as with a client that never reads.
import t, { type Test } from 'tap'
import type { AddressInfo } from 'node:net'
import WebSocket, { WebSocketServer } from 'ws'
import { SocketFlow, type FlowLimits, type FlowViolation } from '../../src/ws/socket-flow.ts'
import { sleep, waitFor } from './util.ts'

const MARK = 64 * 1024
const CHUNK = 'x'.repeat(256 * 1024)
/** Far more than loopback's kernel buffers hold: most of it stays unsent while the client does not read. */
const FLOOD_BYTES = 32 * 1024 * 1024

async function pair(t: Test) {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' })
  await new Promise<void>((resolve) => wss.once('listening', resolve))
  const accepted = new Promise<WebSocket>((resolve) => wss.once('connection', resolve))
  const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`)
  await new Promise<void>((resolve, reject) => {
    client.once('open', resolve)
    client.once('error', reject)
  })
  const server = await accepted
  const received: string[] = []
  server.on('message', (data) => void received.push(data.toString()))
  t.teardown(async () => {
    client.terminate()
    server.terminate()
    await new Promise<void>((resolve) => wss.close(() => resolve()))
  })
  return { server, client, received }
}

function flowOf(server: WebSocket, limits: Partial<FlowLimits> = {}) {
  const violations: FlowViolation[] = []
  const flow = new SocketFlow(server, { highWaterMark: MARK, maxBufferedBytes: 4 * FLOOD_BYTES, slowClientTimeoutMs: 60_000, ...limits }, (v) => void violations.push(v))
  return { flow, violations }
}

/** Sends until `bytes` were handed over (stops early once the flow refuses more). */
function flood(flow: SocketFlow, bytes = FLOOD_BYTES): void {
  for (let sent = 0; sent < bytes; sent += CHUNK.length) flow.send(CHUNK)
}

function settled(promise: Promise<void>, ms: number): Promise<'done' | 'pending'> {
  return Promise.race([promise.then(() => 'done' as const), sleep(ms).then(() => 'pending' as const)])
}

t.test('writable flips above the mark; reading pauses; both come back once the client reads', async (t) => {
  const { server, client, received } = await pair(t)
  const { flow, violations } = flowOf(server)
  t.ok(flow.writable)
  t.equal(await settled(flow.whenWritable(), 10), 'done', 'writable: resolves at once')
  flow.send('{"small":1}')
  t.ok(flow.writable, 'below the mark')
  client.pause()
  flood(flow)
  t.notOk(flow.writable, 'above the mark')
  t.ok(flow.bufferedAmount > MARK)
  t.ok(server.isPaused, 'reading the client paused')
  await sleep(50)
  t.notOk(flow.writable, 'still backed up: the client does not read')
  flow.send('{"more":1}') // already backed up: stays so
  // What the client sends meanwhile is not read.
  client.send('hello')
  await sleep(50)
  t.same(received, [], 'not read while backed up')
  const waiting = flow.whenWritable()
  t.equal(await settled(waiting, 20), 'pending')
  let got = 0
  client.on('message', () => void got++)
  client.resume()
  t.equal(await settled(waiting, 5000), 'done', 'resolved on drain')
  t.ok(flow.writable)
  t.notOk(server.isPaused, 'reading resumed')
  await waitFor(() => received.length === 1, 5000, 'the client frame')
  t.same(received, ['hello'])
  await waitFor(() => got === FLOOD_BYTES / CHUNK.length + 2, 5000, 'every frame')
  t.same(violations, [])
  flow.end()
})

t.test('end() wakes whoever waits; nothing is sent after it', async (t) => {
  const { server, client } = await pair(t)
  const { flow, violations } = flowOf(server)
  client.pause()
  flood(flow)
  t.notOk(flow.writable)
  const waiting = flow.whenWritable()
  t.equal(await settled(waiting, 20), 'pending')
  flow.end()
  t.equal(await settled(waiting, 100), 'done', 'woken by end()')
  t.equal(await settled(flow.whenWritable(), 100), 'done', 'ended: resolves at once')
  const before = flow.bufferedAmount
  flow.send('{"late":1}')
  t.equal(flow.bufferedAmount, before, 'not sent')
  t.same(violations, [])
})

t.test("past maxBufferedBytes: one 'buffer' violation, then nothing more is sent", async (t) => {
  const { server, client } = await pair(t)
  const { flow, violations } = flowOf(server, { maxBufferedBytes: 1024 * 1024 })
  client.pause()
  const waiting = (() => {
    flow.send(CHUNK)
    flow.send(CHUNK)
    return flow.whenWritable()
  })()
  flood(flow)
  t.same(violations, ['buffer'])
  t.equal(await settled(waiting, 100), 'done', 'waiters are woken')
  t.ok(flow.bufferedAmount <= 1024 * 1024 + CHUNK.length + 64, 'stopped sending at the cap')
})

t.test("backed up past slowClientTimeoutMs: one 'slow' violation", async (t) => {
  const { server, client } = await pair(t)
  const { flow, violations } = flowOf(server, { slowClientTimeoutMs: 150 })
  client.pause()
  flood(flow)
  const waiting = flow.whenWritable()
  await sleep(100)
  t.same(violations, [], 'not before the timeout')
  await waitFor(() => violations.length > 0, 2000, 'slow')
  t.same(violations, ['slow'])
  t.equal(await settled(waiting, 100), 'done', 'waiters are woken')
  await sleep(250)
  t.same(violations, ['slow'], 'reported once')
})

t.test('the timeout counts continuous time backed up', async (t) => {
  const { server, client } = await pair(t)
  const { flow, violations } = flowOf(server, { slowClientTimeoutMs: 300 })
  for (let round = 0; round < 3; round++) {
    client.pause()
    flood(flow, 8 * 1024 * 1024)
    t.notOk(flow.writable)
    await sleep(150)
    client.resume()
    await flow.whenWritable()
  }
  t.same(violations, [], 'backed up 450 ms in all, never 300 ms at a stretch')
  flow.end()
})

t.test('a socket not open is never written; one without a TCP socket is not corked', async (t) => {
  const { server } = await pair(t)
  server.terminate()
  await waitFor(() => server.readyState === server.CLOSED)
  const closed = flowOf(server).flow
  closed.send('{"a":1}')
  t.equal(closed.bufferedAmount, 0)
  closed.end()

  const sent: string[] = []
  const bare = { OPEN: 1, readyState: 1, bufferedAmount: 0, send: (frame: string) => void sent.push(frame), pause() {}, resume() {} }
  const flow = new SocketFlow(bare as unknown as WebSocket, { highWaterMark: 10, maxBufferedBytes: 1000, slowClientTimeoutMs: 1000 }, () => {})
  flow.send('{"a":1}')
  t.same(sent, ['{"a":1}'])
  // Backed up with no 'drain' to listen to: the poll notices the room.
  bare.bufferedAmount = 100
  flow.send('{"b":2}')
  t.notOk(flow.writable)
  bare.bufferedAmount = 0
  await flow.whenWritable()
  t.ok(flow.writable, 'the poll found it drained')
  flow.end()
})
