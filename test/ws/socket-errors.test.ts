import t, { type Test } from 'tap'
import type { AddressInfo } from 'node:net'
import { WebSocket } from 'ws'
import { buildApp } from '../../src/app.ts'
import { isClientProtocolError, onSocketError } from '../../src/ws/socket-errors.ts'
import { payloadBytesFor } from '../../src/config.ts'
import { signToken, testConfig } from '../helpers/app.ts'
import { bearer, TestClient } from '../helpers/ws-client.ts'
import { rawUpgrade, closeFrame } from '../auth/raw-upgrade.ts'
import { closedWithin, roomy, sleep } from './util.ts'

interface Line {
  level: number
  msg: string
  err?: { stack?: string }
}

async function appWithLogs(t: Test, overrides: Parameters<typeof testConfig>[0] = {}) {
  const lines: Line[] = []
  const app = await buildApp(testConfig({ ...roomy, LOG_LEVEL: 'info', ...overrides }), { logStream: { write: (line) => void lines.push(JSON.parse(line)) } })
  t.teardown(() => app.close())
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as AddressInfo
  return { app, port, wsUrl: `ws://127.0.0.1:${port}/ws/agent`, lines }
}

/** Python's json.dumps: every non-ASCII character as a \uXXXX escape. */
function asciiJson(value: unknown): string {
  return JSON.stringify(value).replace(/[\u0080-\uffff]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

t.test('client misbehaviour is logged at info or warn, never error', async (t) => {
  const { wsUrl, lines } = await appWithLogs(t, { MAX_PAYLOAD_BYTES: 1024 })

  const oversized = new TestClient(wsUrl, bearer(signToken('big')))
  t.teardown(() => oversized.socket.terminate())
  await oversized.opened
  oversized.socket.send('x'.repeat(2048))
  t.equal((await closedWithin(oversized)).code, 1009, 'an oversized frame closes 1009 (not 1006)')

  const garbage = new TestClient(wsUrl, bearer(signToken('garbage')))
  t.teardown(() => garbage.socket.terminate())
  await garbage.opened
  for (const frame of ['not json', '{"type":"nope"}', '[]', '{"type":"chat"}']) garbage.socket.send(frame)
  garbage.socket.send(Buffer.from([0xff, 0xfe]), { binary: true })
  await garbage.nextOfType('error')
  // Invalid UTF-8 in a text frame: ws refuses it with 1007.
  ;(garbage.socket as unknown as { _sender: { sendFrame(list: Buffer[], cb?: () => void): void } })._sender.sendFrame(
    [Buffer.from([0x81, 0x82, 0, 0, 0, 0, 0xc3, 0x28])],
  )
  t.equal((await closedWithin(garbage)).code, 1007, 'bad UTF-8 closes 1007')

  await sleep(50)
  t.ok(lines.some((line) => line.msg === 'client broke the WebSocket protocol: closing' && line.level === 30), 'logged at info')
  const errors = lines.filter((line) => line.level >= 50)
  t.same(errors.map((line) => line.msg), [], 'nothing at error level')
  t.notOk(lines.some((line) => line.err?.stack), 'no stack traces')
})

t.test('?token=a&token=b: upgraded, then closed 4001 invalid token', async (t) => {
  const { port } = await appWithLogs(t)
  const good = signToken('alice')
  const raw = await rawUpgrade(port, `/ws/agent?token=${good}&token=${good}`)
  t.teardown(() => raw.socket.destroy())
  t.equal(raw.status, 101, 'upgraded, not HTTP 400')
  await raw.ended
  t.same(closeFrame(raw.frames[0]!), { code: 4001, reason: 'invalid token' })
})

t.test('a rejected socket whose peer never answers the close is destroyed within 1 s', async (t) => {
  const { port } = await appWithLogs(t)
  const raw = await rawUpgrade(port, '/ws/agent?token=nope')
  t.teardown(() => raw.socket.destroy())
  const upgradedAt = performance.now()
  const endedAt = await raw.ended
  t.equal(closeFrame(raw.frames[0]!).code, 4001)
  t.ok(endedAt - upgradedAt < 1000, `destroyed ${Math.round(endedAt - upgradedAt)} ms after the close`)
})

t.test('default MAX_PAYLOAD_BYTES fits MAX_CONTENT_CHARS escaped characters', async (t) => {
  const { wsUrl } = await appWithLogs(t, { MAX_CONTENT_CHARS: 12_000, MAX_PAYLOAD_BYTES: payloadBytesFor(12_000) })
  const client = new TestClient(wsUrl, bearer(signToken('cjk')))
  t.teardown(() => client.socket.terminate())
  await client.opened

  const cjk = asciiJson({ type: 'chat', content: '漢'.repeat(11_000) })
  t.ok(cjk.length > 65_536, `11,000 CJK characters escaped are ${cjk.length} bytes`)
  client.socket.send(cjk)
  t.equal((await client.nextOfType('complete', 10_000)).type, 'complete', 'served')

  const emoji = asciiJson({ type: 'chat', content: '😀'.repeat(12_000) })
  client.socket.send(emoji)
  t.equal((await client.nextOfType('complete', 10_000)).type, 'complete', `12,000 emoji escaped (${emoji.length} bytes) served too`)

  client.socket.send(asciiJson({ type: 'chat', content: '漢'.repeat(12_001) }))
  const refused = await client.nextOfType('error')
  t.match(refused, { type: 'error', metadata: { code: 'payload_too_large' } })
  t.equal(client.socket.readyState, WebSocket.OPEN, 'too long, but under the frame cap: answered, not closed')
  client.send({ type: 'ping', session_id: 'still-here' })
  t.match(await client.nextOfType('pong'), { session_id: 'still-here' })
})

t.test('onSocketError: our own failures are errors and drop the socket', async (t) => {
  const logged: Array<[string, unknown]> = []
  const log = { info: (obj: unknown) => logged.push(['info', obj]), error: (obj: unknown) => logged.push(['error', obj]) }
  let terminated = 0
  const socket = { terminate: () => terminated++ }
  onSocketError(new Error('handler bug'), socket as never, { log } as never)
  t.equal(terminated, 1)
  t.equal(logged[0]?.[0], 'error')
  t.notOk(isClientProtocolError(null))
  t.notOk(isClientProtocolError(Object.assign(new Error('x'), { code: 42 })))
  t.ok(isClientProtocolError(Object.assign(new RangeError('Max payload size exceeded'), { code: 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' })))
})
