import t from 'tap'
import v8 from 'node:v8'
import vm from 'node:vm'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer } from '../helpers/ws-client.ts'
import { createFakeUpstream, textSteps, type RecordedRequest } from '../helpers/fake-upstream.ts'
import { Connection } from '../../src/ws/connection.ts'
import { defaultGuardTuning } from '../../src/plugins/guards.ts'
import { MERGE_LIMIT_CHARS } from '../../src/sessions/token-merger.ts'

const SLOW_CLIENT_TIMEOUT_MS = 10_000
const MB = 1024 * 1024
const FLOOD_CHUNKS = 60_000

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc') as () => void

/**
 * Garbage is not growth: what JS holds (heap and the Buffers outside it) right after a full
 * collection. RSS would also count pages the allocator keeps after a burst, which varies with
 * the machine's load, not with what we buffer.
 */
function retainedRss(): number {
  gc()
  const { heapUsed, external } = process.memoryUsage()
  return heapUsed + external
}

async function until(what: string, predicate: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs
  while (!predicate()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

function lastUserMessage(request: RecordedRequest): string {
  return request.body.messages.at(-1).content
}

/** The server side of each user's connection, and every close the server initiated. */
function watchConnections(t: { teardown(fn: () => void): void }) {
  const byUser = new Map<string, Connection>()
  const closes: Array<{ userId: string; code: number; reason: string; at: number }> = []
  const { deliver, close } = Connection.prototype
  Connection.prototype.deliver = function (this: Connection, frame: string) {
    byUser.set(this.userId, this)
    deliver.call(this, frame)
  }
  Connection.prototype.close = function (this: Connection, code: number, reason: string) {
    closes.push({ userId: this.userId, code, reason, at: performance.now() })
    close.call(this, code, reason)
  }
  t.teardown(() => Object.assign(Connection.prototype, { deliver, close }))
  return { byUser, closes }
}

t.test('a client that stops reading throttles its run end to end, then is closed 1008', async (t) => {
  const up = await createFakeUpstream((request) =>
    lastUserMessage(request) === 'flood'
      ? // ~120 MB of SSE if nobody applied backpressure.
        { steps: [{ flood: { text: 'x'.repeat(2000), count: FLOOD_CHUNKS } }, { finish: 'stop' }, { done: true }] }
      : { steps: textSteps('an ordinary answer, streamed while the other client is stuck', { delayMs: 5 }) },
  )
  t.teardown(() => up.close())
  const { app, wsUrl } = await startApp(t, {
    modelProvider: 'openai',
    OPENAI_BASE_URL: up.baseURL,
    OPENAI_API_KEY: 'test',
    TOOLS: [],
    SLOW_CLIENT_TIMEOUT_MS,
    RESUME_GRACE_MS: 0,
  })
  const server = watchConnections(t)

  const bob = await connect(t, wsUrl, bearer(signToken('bob')))
  bob.send({ type: 'chat', content: 'warm up' })
  await bob.untilComplete()
  await up.nextRequest()

  const baselineRss = retainedRss()
  let peakRss = baselineRss
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, retainedRss())), 500)
  t.teardown(() => clearInterval(sampler))

  const slow = await connect(t, wsUrl, bearer(signToken('alice')))
  slow.socket.pause() // reads nothing from now on: its kernel buffers, then the server's, fill up
  slow.send({ type: 'chat', content: 'flood' })
  const startedAt = performance.now()
  const flood = await up.nextRequest()
  await until('the slow socket to pass its high-water mark', () => (server.byUser.get('alice')?.bufferedAmount ?? 0) > defaultGuardTuning.highWaterMark, 30_000)

  // Its run stopped pulling: once the buffers between fill, the upstream writes nothing more.
  let written = flood.chunksWritten
  let since = performance.now()
  await until('the upstream to stop writing', () => {
    if (flood.chunksWritten !== written) [written, since] = [flood.chunksWritten, performance.now()]
    return performance.now() - since > 1000
  }, 8000)
  t.ok(flood.backpressured, `the upstream saw backpressure; paused after ${flood.chunksWritten} of ${FLOOD_CHUNKS} chunks`)
  const pausedAt = flood.chunksWritten
  const bufferedWhileBlocked = server.byUser.get('alice')!.bufferedAmount
  // The frame that crossed the mark holds at most what the merger may hold: its limit, plus one upstream read.
  const frameAtMost = MERGE_LIMIT_CHARS + 64 * 1024
  t.ok(bufferedWhileBlocked < defaultGuardTuning.highWaterMark + frameAtMost, `the socket holds ${bufferedWhileBlocked} bytes: the mark plus a frame`)

  bob.send({ type: 'chat', content: 'hello' })
  const frames = await bob.untilComplete()
  t.match(frames.at(-1), { content: 'an ordinary answer, streamed while the other client is stuck', metadata: { finish_reason: 'stop' } }, 'another session streams normally meanwhile')
  t.equal(flood.closedAt, undefined, 'the stuck run is still waiting, not aborted')
  t.equal(flood.chunksWritten, pausedAt, 'and its upstream is still paused')
  t.same(server.closes, [], 'nobody was closed before the timeout')

  await Promise.race([
    flood.closed,
    new Promise((_, reject) => setTimeout(() => reject(new Error('upstream request never aborted')), SLOW_CLIENT_TIMEOUT_MS + 10_000)),
  ])
  t.ok(flood.closedByClient, 'past the timeout the upstream request was aborted by the gateway')
  t.equal(server.closes.length, 1)
  t.match(server.closes[0], { userId: 'alice', code: 1008, reason: 'slow client' })
  t.ok(server.closes[0]!.at - startedAt >= SLOW_CLIENT_TIMEOUT_MS, `closed ${Math.round(server.closes[0]!.at - startedAt)} ms after the run started`)
  await until('the run to end', () => app.sessions.activeRunCount === 0, 5000)

  clearInterval(sampler)
  const growth = Math.max(peakRss, retainedRss()) - baselineRss
  t.ok(growth < 50 * MB, `retained memory grew by ${(growth / MB).toFixed(1)} MB at most`)
  bob.send({ type: 'ping' })
  await bob.nextOfType('pong')
  t.pass('the other client is untouched')
})
