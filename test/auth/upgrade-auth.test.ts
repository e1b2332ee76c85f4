import t, { type Test } from 'tap'
import WebSocket from 'ws'
import type { AddressInfo, Socket } from 'node:net'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer, TestClient } from '../helpers/ws-client.ts'
import { rawUpgrade, closeFrame } from './raw-upgrade.ts'
import { handToken, claims, now } from './tokens.ts'
import { closedWithin } from '../ws/util.ts'

const good = () => signToken('alice')
const bad = signToken('alice', { secret: 'another-secret-another-secret-another!' })

type T = Test

async function accepted(t: T, client: TestClient): Promise<void> {
  client.send({ type: 'ping', session_id: 'probe' })
  const pong = await client.nextOfType('pong')
  t.same(pong, { type: 'pong', session_id: 'probe' })
}

async function refused(t: T, client: TestClient, reason: string): Promise<void> {
  const closed = await closedWithin(client)
  t.equal(closed.code, 4001, `closed 4001 (${reason})`)
  t.equal(closed.reason, reason)
  t.same(client.frames, [], 'no frame before the close')
}

t.test('each auth path is accepted', async (t) => {
  const { wsUrl } = await startApp(t)

  t.test('Authorization: Bearer', async (t) => {
    const client = await connect(t, wsUrl, bearer(good()))
    await accepted(t, client)
  })

  t.test('Authorization scheme is case-insensitive', async (t) => {
    const client = await connect(t, wsUrl, { headers: { authorization: `bearer ${good()}` } })
    await accepted(t, client)
  })

  t.test('Sec-WebSocket-Protocol: agent.v1 + bearer.<jwt>; agent.v1 selected, token never echoed', async (t) => {
    const token = good()
    const client = await connect(t, wsUrl, { protocols: ['agent.v1', `bearer.${token}`] })
    t.equal(client.socket.protocol, 'agent.v1')
    await accepted(t, client)
  })

  t.test('bearer protocol offered first still selects agent.v1', async (t) => {
    const client = await connect(t, wsUrl, { protocols: [`bearer.${good()}`, 'agent.v1'] })
    t.equal(client.socket.protocol, 'agent.v1')
    await accepted(t, client)
  })

  t.test('?token=', async (t) => {
    const client = await connect(t, `${wsUrl}?token=${good()}`)
    await accepted(t, client)
  })
})

t.test('precedence: header, then subprotocol, then query', async (t) => {
  const { wsUrl } = await startApp(t)
  const protocols = (token: string) => ({ protocols: ['agent.v1', `bearer.${token}`] })

  t.test('valid header + invalid query: accepted', async (t) => {
    await accepted(t, await connect(t, `${wsUrl}?token=${bad}`, bearer(good())))
  })
  t.test('invalid header + valid query: rejected', async (t) => {
    await refused(t, await connect(t, `${wsUrl}?token=${good()}`, bearer(bad)), 'invalid token')
  })
  t.test('valid header + invalid subprotocol: accepted', async (t) => {
    await accepted(t, await connect(t, wsUrl, { ...bearer(good()), ...protocols(bad) }))
  })
  t.test('invalid header + valid subprotocol: rejected', async (t) => {
    await refused(t, await connect(t, wsUrl, { ...bearer(bad), ...protocols(good()) }), 'invalid token')
  })
  t.test('valid subprotocol + invalid query: accepted', async (t) => {
    await accepted(t, await connect(t, `${wsUrl}?token=${bad}`, protocols(good())))
  })
  t.test('invalid subprotocol + valid query: rejected', async (t) => {
    await refused(t, await connect(t, `${wsUrl}?token=${good()}`, protocols(bad)), 'invalid token')
  })
  t.test('an empty Bearer header is present, so it is used (and refused)', async (t) => {
    await refused(t, await connect(t, `${wsUrl}?token=${good()}`, { headers: { authorization: 'Bearer   ' } }), 'invalid token')
  })
  t.test('a Bearer header with a space inside the token is refused, not skipped', async (t) => {
    await refused(t, await connect(t, `${wsUrl}?token=${good()}`, { headers: { authorization: `Bearer ${bad} x` } }), 'invalid token')
  })
  t.test('another Authorization scheme is not a bearer token: the next source is used', async (t) => {
    await accepted(t, await connect(t, `${wsUrl}?token=${good()}`, { headers: { authorization: 'Basic YWxpY2U6cHc=' } }))
  })
})

t.test('each 4001 reason', async (t) => {
  const { wsUrl } = await startApp(t)

  t.test('missing token', async (t) => {
    await refused(t, await connect(t, wsUrl), 'missing token')
  })
  t.test('empty ?token= is missing', async (t) => {
    await refused(t, await connect(t, `${wsUrl}?token=`), 'missing token')
  })
  t.test('agent.v1 alone is missing a token', async (t) => {
    const client = await connect(t, wsUrl, { protocols: ['agent.v1'] })
    t.equal(client.socket.protocol, 'agent.v1')
    await refused(t, client, 'missing token')
  })
  t.test('invalid token', async (t) => {
    await refused(t, await connect(t, wsUrl, bearer('not-a-jwt')), 'invalid token')
  })
  t.test('token expired', async (t) => {
    const expired = handToken(claims('alice', { exp: now() - 60 }))
    await refused(t, await connect(t, wsUrl, bearer(expired)), 'token expired')
  })
  t.test('invalid token through the subprotocol: agent.v1 still selected, then 4001', async (t) => {
    const client = await connect(t, wsUrl, { protocols: ['agent.v1', 'bearer.abc.def.ghi'] })
    t.equal(client.socket.protocol, 'agent.v1')
    await refused(t, client, 'invalid token')
  })
})

t.test('a refused peer that never answers the close is destroyed within 1 s', async (t) => {
  const { app } = await startApp(t)
  const { port } = app.server.address() as AddressInfo
  const serverClosed: Array<Promise<number>> = []
  // The server's end of each upgraded TCP connection: closed means the server destroyed it.
  app.server.on('upgrade', (_request, socket: Socket) => {
    serverClosed.push(new Promise((resolve) => socket.once('close', () => resolve(performance.now()))))
  })

  t.test('peer reads the close frame but never replies', async (t) => {
    const raw = await rawUpgrade(port, '/ws/agent')
    t.teardown(() => raw.socket.destroy())
    const upgradedAt = performance.now()
    t.equal(raw.status, 101)
    const endedAt = await raw.ended
    t.ok(endedAt - upgradedAt < 1500, `connection ended after ${Math.round(endedAt - upgradedAt)} ms`)
    t.equal(raw.frames.length, 1, 'exactly one frame: the close')
    t.equal(raw.frames[0]?.opcode, 0x8)
    t.same(closeFrame(raw.frames[0]!), { code: 4001, reason: 'missing token' })
  })

  t.test('peer stops reading altogether', async (t) => {
    const before = serverClosed.length
    const raw = await rawUpgrade(port, '/ws/agent?token=nope', { read: false })
    t.teardown(() => raw.socket.destroy())
    const upgradedAt = performance.now()
    t.equal(raw.status, 101)
    t.equal(serverClosed.length, before + 1, 'the server saw the connection')
    const closedAt = await serverClosed[before]!
    t.ok(closedAt - upgradedAt < 1500, `server ended it after ${Math.round(closedAt - upgradedAt)} ms`)
    await raw.ended
  })
})

t.test('Origin allow-list', async (t) => {
  const { wsUrl } = await startApp(t, { ALLOWED_ORIGINS: ['https://chat.example'] })

  t.test('an allowed origin is served', async (t) => {
    await accepted(t, await connect(t, wsUrl, { ...bearer(good()), origin: 'https://chat.example' }))
  })
  t.test('no Origin (a server-side client) is judged by its token alone', async (t) => {
    await accepted(t, await connect(t, wsUrl, bearer(good())))
  })
  t.test('another origin is closed 4003 even with a valid token', async (t) => {
    const client = await connect(t, wsUrl, { ...bearer(good()), origin: 'https://evil.example' })
    t.same(await closedWithin(client), { code: 4003, reason: 'forbidden origin' })
    t.same(client.frames, [])
  })
})

t.test('the token expiring during the connection closes it 4001 token expired', async (t) => {
  const { wsUrl } = await startApp(t)
  // exp has one-second resolution: this token expires within (0, 1] s.
  const exp = now() + 1
  const client = await connect(t, wsUrl, bearer(handToken(claims('alice', { exp }))))
  await accepted(t, client)
  t.same(await closedWithin(client), { code: 4001, reason: 'token expired' })
  t.ok(Date.now() >= exp * 1000, 'not before exp')
})

t.test('auth frame', async (t) => {
  const { wsUrl } = await startApp(t)

  t.test('a fresh token for the same sub pushes the expiry out', async (t) => {
    const exp = now() + 1
    const client = await connect(t, wsUrl, bearer(handToken(claims('alice', { exp }))))
    client.send({ type: 'auth', token: signToken('alice') })
    await accepted(t, client)
    await new Promise((resolve) => setTimeout(resolve, exp * 1000 - Date.now() + 300))
    t.equal(client.socket.readyState, WebSocket.OPEN, 'still open past the first exp')
    await accepted(t, client)
  })

  t.test('a token for another user is refused with forbidden; the connection stays', async (t) => {
    const client = await connect(t, wsUrl, bearer(good()))
    client.send({ type: 'auth', token: signToken('mallory') })
    const error = await client.nextOfType('error')
    t.equal(error.metadata?.code, 'forbidden')
    t.equal(error.metadata?.retryable, false)
    t.notOk('seq' in error)
    await accepted(t, client)
  })

  t.test('an invalid or expired token is refused with forbidden', async (t) => {
    const client = await connect(t, wsUrl, bearer(good()))
    client.send({ type: 'auth', token: 'garbage' })
    t.match(await client.nextOfType('error'), { metadata: { code: 'forbidden' }, content: /invalid token/ })
    client.send({ type: 'auth', token: handToken(claims('alice', { exp: now() - 5 })) })
    t.match(await client.nextOfType('error'), { metadata: { code: 'forbidden' }, content: /token expired/ })
    await accepted(t, client)
  })
})
