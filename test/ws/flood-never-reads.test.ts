// Defect: the server kept reading a socket's frames and queueing its answers however much it
// already held unsent for it, so a client that floods and never reads grew server memory
// without bound (§6, 1.1: above the 256 KiB high-water mark the server stops reading the
// socket; above MAX_BUFFERED_BYTES, default 4 MiB, it closes it 1008). Two ways in: `ping`
// frames (each answered by a `pong`), and `resume` frames (each answered by a whole replay).
import t, { type Test } from 'tap'
import v8 from 'node:v8'
import vm from 'node:vm'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer, type TestClient } from '../helpers/ws-client.ts'
import { scrape } from '../metrics/scrape.ts'
import { sleep } from './util.ts'

const MB = 1024 * 1024
/** Generous: twice the default hard cap (4 MiB); the old code buffered 16+ MB. */
const BUFFERED_BOUND = 8 * MB
const RSS_BOUND = 64 * MB
const FLOOD_FRAMES = 200_000
const FLOOD_MS = 10_000
const LONG_ID = 'x'.repeat(128)

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc') as () => void
const retainedRss = () => (gc(), process.memoryUsage.rss())

const config = { RATE_LIMIT_MESSAGES: 10_000_000, MAX_CONNECTIONS_PER_USER: 1000, MOCK_TOKEN_DELAY_MS: 0, TOOLS: [] }

/**
 * Sends `frames` frames from `make`, never holding more than 1 MiB unsent on the client's own
 * side (so the test's memory stays small whatever the server does); stops at the deadline or
 * when the socket closes.
 */
async function flood(client: TestClient, frames: number, make: (i: number) => string, ms: number): Promise<number> {
  const deadline = performance.now() + ms
  let sent = 0
  while (sent < frames && performance.now() < deadline && client.socket.readyState === client.socket.OPEN) {
    if (client.socket.bufferedAmount > MB) {
      await sleep(10)
      continue
    }
    for (let i = 0; i < 500 && sent < frames; i++) client.socket.send(make(sent++))
    await new Promise((resolve) => setImmediate(resolve))
  }
  return sent
}

/** Lets the server take in what it will (until nothing more leaves the client for a while). */
async function settle(client: TestClient): Promise<void> {
  const deadline = performance.now() + 10_000
  let last = -1
  let stableSince = performance.now()
  while (performance.now() < deadline && client.socket.readyState === client.socket.OPEN) {
    const buffered = client.socket.bufferedAmount
    if (buffered !== last) [last, stableSince] = [buffered, performance.now()]
    if (performance.now() - stableSince > 1000) return
    await sleep(50)
  }
}

async function checkBounded(t: Test, baseUrl: string, client: TestClient, baselineRss: number, what: string): Promise<void> {
  // Measured first: the server's side, before the client takes in anything.
  const peakBuffered = (await scrape(baseUrl)).get('agw_ws_buffered_amount_max_bytes')
  const growth = retainedRss() - baselineRss
  // Then the client reads again: a close the server sent is seen behind whatever it had queued.
  client.socket.resume()
  let timer: NodeJS.Timeout | undefined
  const close = await Promise.race([client.closed, new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), 5000)))])
  clearTimeout(timer)
  t.comment(`${what}: peak buffered ${(peakBuffered / MB).toFixed(1)} MB, RSS growth ${(growth / MB).toFixed(1)} MB, closed ${close?.code ?? 'no'}`)
  if (close) {
    t.equal(close.code, 1008, 'the server closed the flooding socket 1008')
    return
  }
  t.ok(peakBuffered < BUFFERED_BOUND, `the socket's unsent bytes stayed bounded (peak ${(peakBuffered / MB).toFixed(1)} MB < ${BUFFERED_BOUND / MB} MB)`)
  t.ok(growth < RSS_BOUND, `server memory stayed bounded (RSS grew ${(growth / MB).toFixed(1)} MB < ${RSS_BOUND / MB} MB)`)
}

t.test('a client that floods and never reads grows server memory without bound', async (t) => {
  const { baseUrl, wsUrl } = await startApp(t, config)
  const client = await connect(t, wsUrl, bearer(signToken('flooder')))
  const baselineRss = retainedRss()
  client.socket.pause() // reads nothing from now on
  const frame = JSON.stringify({ type: 'ping', session_id: LONG_ID })
  const sent = await flood(client, FLOOD_FRAMES, () => frame, FLOOD_MS)
  await settle(client)
  t.comment(`sent ${sent} ping frames`)
  await checkBounded(t, baseUrl, client, baselineRss, 'ping flood')
})

t.test('58 resume frames buffer 16 MB', async (t) => {
  const { baseUrl, wsUrl } = await startApp(t, { ...config, MAX_CONTENT_CHARS: 200_000, MAX_PAYLOAD_BYTES: 1_000_000 })
  const client = await connect(t, wsUrl, bearer(signToken('resumer')))
  // The mock model answers with the prompt's words: ~2000 token events of ~150 bytes held.
  const words = Array.from({ length: 1900 }, (_, i) => `word-${i}-${'y'.repeat(24)}`).join(' ')
  client.send({ type: 'chat', content: words, session_id: 'S' })
  await client.untilComplete(30_000)
  const held = client.raw.reduce((sum, frame) => sum + frame.length, 0)
  t.comment(`one replay is ~${(held / MB).toFixed(2)} MB`)

  const baselineRss = retainedRss()
  client.socket.pause()
  const resume = JSON.stringify({ type: 'resume', session_id: 'S', last_seq: 0 })
  const sent = await flood(client, 58, () => resume, FLOOD_MS)
  t.equal(sent, 58, 'the 58 resume frames are small: all sent')
  await settle(client)
  await sleep(500)
  await checkBounded(t, baseUrl, client, baselineRss, '58 resumes')
})
