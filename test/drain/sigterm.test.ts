import t from 'tap'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { signToken, TEST_SECRET } from '../helpers/app.ts'
import { bearer, TestClient } from '../helpers/ws-client.ts'
import { createFakeUpstream, textSteps, type RecordedRequest, type Script } from '../helpers/fake-upstream.ts'
import { freePort } from '../helpers/free-port.ts'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const GRACE_MS = 1500
const CLIENTS = 20
const FAST_ANSWER = 'this answer is done well within the grace period'

/** Half the runs end well within the grace (~0.8 s); the other half would talk for ~40 s. */
function byPrompt(request: RecordedRequest): Script {
  const prompt: string = request.body.messages.at(-1).content
  if (prompt.startsWith('fast')) return { steps: textSteps(FAST_ANSWER, { delayMs: 80 }) }
  return { steps: textSteps(Array.from({ length: 400 }, (_, i) => `w${i} `), { delayMs: 100 }) }
}

async function waitUntilReady(baseUrl: string, exited: () => boolean): Promise<void> {
  const deadline = performance.now() + 15_000
  while (performance.now() < deadline && !exited()) {
    const status = await fetch(`${baseUrl}/health/ready`).then((response) => response.status, () => 0)
    if (status === 200) return
    await sleep(50)
  }
  throw new Error('the server never became ready')
}

/** Milliseconds from `since` to the first 503 from /health/ready, or Infinity after `withinMs`. */
async function firstNotReady(baseUrl: string, since: number, withinMs: number): Promise<number> {
  while (performance.now() - since < withinMs) {
    const status = await fetch(`${baseUrl}/health/ready`).then((response) => response.status, () => 0)
    if (status === 503) return performance.now() - since
  }
  return Infinity
}

/** When the server logged that it started draining (readiness flips in that same step). */
function drainLoggedAt(output: string): number | undefined {
  for (const line of output.split('\n')) {
    if (!line.startsWith('{')) continue
    const entry = JSON.parse(line) as { msg?: string; time?: number }
    if (entry.msg === 'draining') return entry.time
  }
  return undefined
}

t.test('SIGTERM with 20 streaming clients: ready 503 at once, grace, cancel, close 1012, exit 0', async (t) => {
  const up = await createFakeUpstream(byPrompt)
  t.teardown(() => up.close())
  const port = await freePort()
  const baseUrl = `http://127.0.0.1:${port}`
  const wsUrl = `ws://127.0.0.1:${port}/ws/agent`

  const server = spawn(process.execPath, ['src/server.ts'], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH,
      HOST: '127.0.0.1',
      PORT: String(port),
      JWT_SECRET: TEST_SECRET,
      // info: the server's 'draining' line times the readiness flip.
      LOG_LEVEL: 'info',
      MODEL_PROVIDER: 'openai',
      OPENAI_BASE_URL: up.baseURL,
      OPENAI_API_KEY: 'test',
      SHUTDOWN_GRACE_MS: String(GRACE_MS),
      DEMO_UI: 'false',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  server.stdout.on('data', (chunk: Buffer) => (output += chunk))
  server.stderr.on('data', (chunk: Buffer) => (output += chunk))
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    server.once('exit', (code, signal) => resolve({ code, signal, at: performance.now() })),
  )
  let exited = false
  void exit.then(() => (exited = true))
  t.teardown(() => {
    if (!exited) server.kill('SIGKILL')
  })

  await waitUntilReady(baseUrl, () => exited)

  const clients = Array.from({ length: CLIENTS }, (_, i) => {
    const client = new TestClient(wsUrl, bearer(signToken(`user-${i}`)))
    t.teardown(() => client.socket.terminate())
    return { client, fast: i % 2 === 0 }
  })
  await Promise.all(clients.map(({ client }) => client.opened))
  for (const { client, fast } of clients) client.send({ type: 'chat', content: fast ? 'fast, please' : 'slow, please' })
  // Every run is streaming when the signal comes.
  await Promise.all(clients.map(({ client }) => client.nextOfType('token', 10_000)))

  const killedWallClock = Date.now()
  const killedAt = performance.now()
  server.kill('SIGTERM')
  // Seen from here, a round trip on a machine shared with other test runs can take longer
  // than the flip itself: the 100 ms deadline is checked on the server's own clock (below).
  const readinessMs = await firstNotReady(baseUrl, killedAt, 1000)
  t.ok(readinessMs < 1000, `a readiness probe got 503 ${Math.round(readinessMs)} ms after SIGTERM`)
  const stillStreaming = clients.filter(({ client }) => !client.frames.some((frame) => frame.type === 'complete'))
  t.ok(stillStreaming.length > CLIENTS / 2, `runs still going at SIGTERM: ${stillStreaming.length} (some of them finish within the grace)`)

  const late = new TestClient(wsUrl, bearer(signToken('late')))
  t.teardown(() => late.socket.terminate())
  await t.rejects(late.opened, { message: 'unexpected response 503' }, 'a new upgrade is refused with HTTP 503')

  const closes = await Promise.all(clients.map(({ client }) => client.closed))
  const { code, signal, at } = await exit
  t.equal(code, 0, `exit code 0${code === 0 ? '' : `; server output:\n${output}`}`)
  t.equal(signal, null)
  const drainAt = drainLoggedAt(output)
  t.ok(drainAt !== undefined && drainAt - killedWallClock < 100, `readiness turned 503 ${drainAt === undefined ? '(never)' : drainAt - killedWallClock} ms after SIGTERM`)
  t.ok(at - killedAt < GRACE_MS + 5000, `exited ${Math.round(at - killedAt)} ms after SIGTERM`)

  t.ok(
    closes.every((closed) => closed.code === 1012 && closed.reason === 'service restart'),
    `every client saw 1012 service restart: ${JSON.stringify(closes.map((closed) => closed.code))}`,
  )
  let withoutComplete = 0
  for (const [i, { client, fast }] of clients.entries()) {
    const types = client.frames.map((frame) => (frame.type === 'status' ? `status:${frame.content}` : frame.type))
    const complete = client.frames.at(-1)
    if (complete?.type !== 'complete') {
      withoutComplete++
      continue
    }
    const text = client.frames.flatMap((frame) => (frame.type === 'token' ? [frame.content] : [])).join('')
    t.equal(complete.content, text, `client ${i}: complete holds exactly the streamed text`)
    if (fast) {
      t.equal(complete.metadata?.finish_reason, 'stop', `client ${i}: finished within the grace, completed normally`)
      t.equal(complete.content, FAST_ANSWER)
    } else {
      t.same(types.slice(-2), ['status:cancelled', 'complete'], `client ${i}: cancelled at the deadline`)
      t.equal(complete.metadata?.finish_reason, 'cancelled')
      t.ok(closes[i]!.at - killedAt >= GRACE_MS - 50, `client ${i}: had the whole grace`)
    }
  }
  t.equal(withoutComplete, 0, 'no client ended without a final complete')
  const slowRequests = up.requests.filter((request) => request.body.messages.at(-1).content.startsWith('slow'))
  t.equal(slowRequests.length, CLIENTS / 2)
  t.ok(slowRequests.every((request) => request.closedAt !== undefined), 'every cancelled run closed its upstream request')
})
