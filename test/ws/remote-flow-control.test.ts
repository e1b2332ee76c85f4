/**
 * Defect: flow control only looked at the sockets of the instance running the run. A watcher
 * on another instance (B) that stopped reading was sent every frame the run on A logged: B
 * buffered them all in memory, without bound, and never closed it as a slow client. The
 * contract (protocol.md §6): the service never buffers without bound for a slow client; this
 * holds for run events from any instance. A socket above the hard cap (MAX_BUFFERED_BYTES) is
 * closed 1008 at once; one blocked past SLOW_CLIENT_TIMEOUT_MS is closed 1008.
 */
import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Duplex } from 'node:stream'
import { signToken } from '../helpers/app.ts'
import { textSteps } from '../helpers/fake-upstream.ts'
import { scrape } from '../metrics/scrape.ts'
import { bearer, connect } from '../helpers/ws-client.ts'
import { pair } from '../store/redis/pair.ts'

const CAP = 1024 * 1024
/** A socket may exceed the cap by what one write adds (one merged frame) before it is closed. */
const BOUND = 2 * CAP
/** About 5 MB of frames: more than loopback TCP buffers absorb for a reader that stopped. */
const TOKENS = 30_000
const TOKEN_TEXT = 'x'.repeat(100)

t.test('a remote subscriber is not flow-controlled', async (t) => {
  const p = await pair(t, { SLOW_CLIENT_TIMEOUT_MS: 1000, MAX_BUFFERED_BYTES: CAP } as any)
  if (!p) return
  const token = signToken(p.user('alice'))
  const onA = await connect(t, p.a.wsUrl, bearer(token))
  p.upstream.script(() => ({ steps: textSteps(['ok']) }))
  onA.send({ type: 'chat', session_id: 'firehose', content: 'hi' })
  await onA.nextOfType('complete')

  // B's watcher follows the session, then stops reading: TCP fills up, then B's own buffer.
  const onB = await connect(t, p.b.wsUrl, bearer(token))
  onB.send({ type: 'resume', session_id: 'firehose', last_seq: 0 })
  await onB.next((frame) => frame.type === 'status' && frame.content === 'resumed')
  const tcp = (onB.socket as unknown as { _socket: Duplex })._socket
  tcp.pause()

  p.upstream.script(() => ({ steps: [{ flood: { text: TOKEN_TEXT, count: TOKENS } }, { finish: 'stop' }, { done: true }] }))
  onA.send({ type: 'chat', session_id: 'firehose', content: 'flood me' })
  let peak = 0
  let closed1008 = 0
  const observe = async () => {
    const metrics = await scrape(p.b.baseUrl)
    peak = Math.max(peak, metrics.get('agw_ws_buffered_amount_max_bytes'))
    closed1008 = metrics.get('agw_ws_connections_closed_total', { code: '1008' })
  }
  const done = onA.next((frame) => frame.type === 'complete', 60_000)
  let finished = false
  void done.then(
    () => (finished = true),
    () => (finished = true),
  )
  while (!finished) {
    await observe()
    await sleep(100)
  }
  t.match(await done, { metadata: { finish_reason: 'stop' } }, 'the run on A ends')
  // B relays what A logged a moment later: keep looking for a while.
  for (let i = 0; i < 20; i++) {
    await observe()
    await sleep(100)
  }
  // A socket B gave up on: its metric may say 1006 (no close frame came back); the client sees it go.
  tcp.resume()
  const closed = await Promise.race([onB.closed, sleep(3000).then(() => undefined)])
  const closedByB = closed !== undefined && [1008, 1006].includes(closed.code)
  t.comment(`B: largest bufferedAmount ${peak} bytes; closed 1008 (metric): ${closed1008}; watcher closed: ${closed?.code ?? 'no'}`)
  t.ok(
    peak <= BOUND || closed1008 >= 1 || closedByB,
    `B holds a bounded buffer for its stalled watcher (peak ${peak} B, at most ${BOUND}) or closes it 1008`,
  )
})
