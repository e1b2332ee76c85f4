import t from 'tap'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer } from '../helpers/ws-client.ts'
import { rawUpgrade } from './raw-upgrade.ts'
import { redactUrl, redactUrlsIn } from '../../src/logger.ts'

function captureLogs() {
  const lines: string[] = []
  return { lines, stream: { write: (line: string) => void lines.push(line) } }
}

t.test('redactUrl', async (t) => {
  t.equal(redactUrl('/ws/agent'), '/ws/agent')
  t.equal(redactUrl('/ws/agent?'), '/ws/agent', 'an empty query is dropped')
  t.equal(redactUrl('/ws/agent?token=abc'), '/ws/agent?token=%5Bredacted%5D')
  t.equal(redactUrl('/ws/agent?token=abc&x=1'), '/ws/agent?token=%5Bredacted%5D&x=1')
  t.equal(redactUrl('/p?api_key=k&secret=s&password=p&TOKEN=t&keep=me'), '/p?api_key=%5Bredacted%5D&secret=%5Bredacted%5D&password=%5Bredacted%5D&TOKEN=%5Bredacted%5D&keep=me')
})

t.test('redactUrlsIn: secrets inside free text', async (t) => {
  t.equal(redactUrlsIn('no query here'), 'no query here')
  t.equal(redactUrlsIn('Route GET:/x?token=a.b.c not found'), 'Route GET:/x?token=[redacted] not found')
  t.equal(redactUrlsIn('GET /x?a=1&access_token=zz&b=2'), 'GET /x?a=1&access_token=[redacted]&b=2')
  t.equal(redactUrlsIn('what? nothing secret'), 'what? nothing secret')
})

t.test('the raw token never reaches a log line; the redaction marker does', async (t) => {
  const logs = captureLogs()
  const { wsUrl, baseUrl } = await startApp(t, { LOG_LEVEL: 'trace' }, { logStream: logs.stream })
  const good = signToken('alice')
  const bad = signToken('alice', { secret: 'another-secret-another-secret-another!' })
  const headerToken = signToken('bob')
  const protocolToken = signToken('carol')

  // Accepted through the query, refused through the query, and the other two paths.
  const accepted = await connect(t, `${wsUrl}?token=${good}&client=test`)
  accepted.send({ type: 'ping' })
  await accepted.nextOfType('pong')
  const refused = await connect(t, `${wsUrl}?token=${bad}`)
  await refused.closed
  const viaHeader = await connect(t, wsUrl, bearer(headerToken))
  const viaProtocol = await connect(t, wsUrl, { protocols: ['agent.v1', `bearer.${protocolToken}`] })
  viaHeader.send({ type: 'auth', token: headerToken })
  viaHeader.send({ type: 'ping' })
  await viaHeader.nextOfType('pong')
  viaProtocol.send({ type: 'ping' })
  await viaProtocol.nextOfType('pong')

  // A mistyped WebSocket path, an upgrade to a plain HTTP route, and plain HTTP requests.
  const { port } = new URL(baseUrl)
  for (const path of [`/ws/agentx?token=${good}`, `/health/live?token=${good}`]) {
    const raw = await rawUpgrade(Number(port), path)
    t.not(raw.status, 101, `${path.split('?')[0]}: not upgraded (${raw.status})`)
    raw.socket.destroy()
  }
  await fetch(`${baseUrl}/nope?token=${good}`)
  await fetch(`${baseUrl}/health/live?token=${good}`)

  accepted.close()
  viaHeader.close()
  viaProtocol.close()
  await Promise.all([accepted.closed, viaHeader.closed, viaProtocol.closed])

  const text = logs.lines.join('')
  t.ok(logs.lines.length > 10, `${logs.lines.length} log lines captured`)
  for (const [name, secret] of [
    ['query token', good],
    ['refused query token', bad],
    ['header token', headerToken],
    ['subprotocol token', protocolToken],
  ] as const) {
    // A JWT's signature alone is enough to replay nothing, but its payload and header are not secret
    // on their own: look for the whole token and its signature.
    t.notOk(text.includes(secret), `${name} not logged`)
    t.notOk(text.includes(secret.split('.')[2] as string), `${name} signature not logged`)
  }
  t.match(text, /\[redacted\]|%5Bredacted%5D/, 'the redaction marker appears')
  const incoming = logs.lines.map((line) => JSON.parse(line)).filter((line) => line.msg === 'incoming request')
  t.ok(
    incoming.some((line) => line.req.url === '/ws/agent?token=%5Bredacted%5D&client=test' && line.req.upgrade === true),
    'the upgrade URL is logged, marked as an upgrade, without its token',
  )
  t.ok(incoming.some((line) => line.req.url === '/health/live?token=%5Bredacted%5D' && !('upgrade' in line.req)), 'plain requests are not marked')
})
