import t from 'tap'
import WebSocket from 'ws'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer, type TestClient } from '../helpers/ws-client.ts'
import { tokenExpiringAt } from './tokens.ts'

const nowSeconds = (): number => Math.floor(Date.now() / 1000)
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

async function served(client: TestClient): Promise<boolean> {
  client.send({ type: 'ping', session_id: 'check' })
  return Promise.race([client.nextOfType('pong').then(() => true, () => false), client.closed.then(() => false)])
}

/** The close, with the wall-clock time it reached the client (exp is wall-clock). */
async function closedAt(client: TestClient): Promise<{ code: number; reason: string; wall: number }> {
  const { code, reason } = await client.closed
  return { code, reason, wall: Date.now() }
}

t.test('token expiry during the connection', async (t) => {
  const { wsUrl } = await startApp(t)

  t.test('closes 4001 token expired within a second of exp', async (t) => {
    const exp = nowSeconds() + 2
    const client = await connect(t, wsUrl, bearer(tokenExpiringAt('alice', exp)))
    t.ok(await served(client))
    const closed = await closedAt(client)
    t.same({ code: closed.code, reason: closed.reason }, { code: 4001, reason: 'token expired' })
    t.ok(closed.wall >= exp * 1000 && closed.wall - exp * 1000 < 1000, `closed ${closed.wall - exp * 1000} ms after exp`)
  })

  t.test('an auth refresh before exp keeps it open', async (t) => {
    const exp = nowSeconds() + 2
    const client = await connect(t, wsUrl, bearer(tokenExpiringAt('alice', exp)))
    client.send({ type: 'auth', token: signToken('alice') })
    t.ok(await served(client), 'the auth frame has been served (frames are served in order)')
    await sleep(exp * 1000 - Date.now() + 1200)
    t.equal(client.socket.readyState, WebSocket.OPEN, 'open past the first exp')
    t.ok(await served(client))
    t.notOk(client.frames.some((frame) => frame.type === 'error'), 'the refresh is answered by nothing')
  })

  t.test('the refreshed exp is enforced in turn', async (t) => {
    const first = nowSeconds() + 1
    const client = await connect(t, wsUrl, bearer(tokenExpiringAt('alice', first)))
    const second = first + 2
    client.send({ type: 'auth', token: tokenExpiringAt('alice', second) })
    t.ok(await served(client))
    const closed = await closedAt(client)
    t.equal(closed.code, 4001)
    t.ok(closed.wall >= second * 1000 && closed.wall - second * 1000 < 1000, `closed ${closed.wall - second * 1000} ms after the new exp`)
  })

  t.test('a token for another sub is forbidden and changes nothing', async (t) => {
    const exp = nowSeconds() + 2
    const client = await connect(t, wsUrl, bearer(tokenExpiringAt('alice', exp)))
    client.send({ type: 'auth', token: signToken('mallory') })
    const error = await client.nextOfType('error')
    t.match(error, { session_id: '', metadata: { code: 'forbidden', retryable: false } })
    t.ok(await served(client), 'the connection keeps serving')
    const closed = await closedAt(client)
    t.equal(closed.code, 4001, 'and still expires with the original token')
    t.ok(closed.wall - exp * 1000 < 1000)
  })
})

t.test('ALLOWED_ORIGINS: exact matches only', async (t) => {
  const allowed = ['https://chat.example.com', 'http://localhost:3000']
  const { wsUrl } = await startApp(t, { ALLOWED_ORIGINS: allowed })
  const good = bearer(signToken('alice'))

  for (const origin of allowed) {
    t.test(`${origin} is served`, async (t) => {
      t.ok(await served(await connect(t, wsUrl, { ...good, origin })))
    })
  }

  const lookalikes = [
    'https://chat.example.com.evil.net', // suffix
    'https://evil-chat.example.com', // prefix
    'https://evil.chat.example.com', // subdomain
    'https://chat.example.co', // truncated
    'http://chat.example.com', // scheme
    'https://chat.example.com:8443', // port
    'https://chat.example.com/', // not a serialized origin
    'HTTPS://CHAT.EXAMPLE.COM', // browsers send it lower-case
    'http://localhost:30001',
    'null', // sandboxed frames, file://
  ]
  for (const origin of lookalikes) {
    t.test(`${origin} is closed 4003`, async (t) => {
      const client = await connect(t, wsUrl, { ...good, origin })
      const closed = await closedAt(client)
      t.same({ code: closed.code, reason: closed.reason }, { code: 4003, reason: 'forbidden origin' })
      t.same(client.frames, [], 'nothing is sent first')
    })
  }

  t.test('the origin is judged before the token', async (t) => {
    const client = await connect(t, wsUrl, { ...bearer('not.a.jwt'), origin: 'https://chat.example.com.evil.net' })
    t.equal((await closedAt(client)).code, 4003)
  })

  t.test('without an Origin header (not a browser) only the token decides', async (t) => {
    t.ok(await served(await connect(t, wsUrl, good)))
    const bad = await connect(t, wsUrl, bearer('not.a.jwt'))
    t.equal((await closedAt(bad)).code, 4001)
  })
})

t.test('without ALLOWED_ORIGINS any origin is served', async (t) => {
  const { wsUrl } = await startApp(t)
  t.ok(await served(await connect(t, wsUrl, { ...bearer(signToken('alice')), origin: 'https://anywhere.example' })))
})
