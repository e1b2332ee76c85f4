import t from 'tap'
import net from 'node:net'
import { randomBytes } from 'node:crypto'
import { readdirSync } from 'node:fs'
import { startApp, signToken } from '../helpers/app.ts'
import { TestClient, bearer } from '../helpers/ws-client.ts'
import { tokenExpiringAt } from './tokens.ts'

const openFds = (): number => readdirSync('/proc/self/fd').length

/** Every way a token can be bad, in turn. */
function badAuth(i: number): { headers?: Record<string, string> } {
  switch (i % 4) {
    case 0:
      return {}
    case 1:
      return bearer('not.a.jwt')
    case 2:
      return bearer(signToken('alice', { secret: 'another-secret-another-secret-!!' }))
    default:
      return bearer(tokenExpiringAt('alice', Math.floor(Date.now() / 1000) - 60))
  }
}

/**
 * A peer that reads the server's close frame but never answers it: only the server's own
 * deadline frees that socket. Resolves once the upgrade was answered (101).
 */
async function unansweringPeer(port: number, headers: Record<string, string>): Promise<void> {
  const socket = net.connect(port, '127.0.0.1')
  socket.on('error', () => {})
  socket.on('end', () => socket.destroy())
  const request = {
    host: `127.0.0.1:${port}`,
    upgrade: 'websocket',
    connection: 'Upgrade',
    'sec-websocket-key': randomBytes(16).toString('base64'),
    'sec-websocket-version': '13',
    ...headers,
  }
  socket.write(`GET /ws/agent HTTP/1.1\r\n${Object.entries(request).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`)
  await new Promise<void>((resolve, reject) => {
    socket.once('data', (chunk) => (chunk.toString('latin1').startsWith('HTTP/1.1 101') ? resolve() : reject(new Error('not upgraded'))))
    socket.once('close', () => reject(new Error('closed before the upgrade')))
  })
}

/** `count` refused upgrades, `concurrency` at a time; every tenth peer never answers the close. */
async function refusedUpgrades(url: string, count: number, concurrency: number): Promise<number[]> {
  const port = Number(new URL(url).port)
  const codes: number[] = []
  for (let start = 0; start < count; start += concurrency) {
    const batch = Array.from({ length: Math.min(concurrency, count - start) }, (_, k) => start + k)
    const closed = await Promise.all(
      batch.map((i) => {
        const auth = badAuth(i)
        if (i % 10 === 9) return unansweringPeer(port, auth.headers ?? {}).then(() => undefined)
        return new TestClient(url, auth).closed.then(({ code }) => code)
      }),
    )
    for (const code of closed) if (code !== undefined) codes.push(code)
  }
  return codes
}

async function settledFds(baseline: number, withinMs: number): Promise<number> {
  const deadline = performance.now() + withinMs
  let fds = openFds()
  while (fds > baseline && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50))
    fds = openFds()
  }
  return fds
}

t.test('1,000 bad-token upgrades leave no file descriptor behind', async (t) => {
  const { wsUrl } = await startApp(t)
  // Warm up: descriptors opened lazily on first use (and the unanswering peers' deadline) are not leaks.
  await refusedUpgrades(wsUrl, 20, 20)
  await new Promise((resolve) => setTimeout(resolve, 1500))
  const baseline = openFds()

  const codes = await refusedUpgrades(wsUrl, 1000, 100)
  t.equal(codes.length, 900)
  t.ok(codes.every((code) => code === 4001), 'each answering client saw 4001')

  const fds = await settledFds(baseline, 2000)
  t.ok(fds <= baseline, `open descriptors: ${fds}, baseline ${baseline}`)
})
