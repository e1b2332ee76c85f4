import t, { type Test } from 'tap'
import { EventEmitter } from 'node:events'
import { buildApp } from '../src/app.ts'
import { prettyStream, redactUrl, redactUrlsIn, stdoutStream, usePretty } from '../src/logger.ts'
import { signToken, testConfig } from './helpers/app.ts'

interface Line {
  level: number
  msg: string
  req?: { url: string }
}

async function appWithLogs(t: Test, level = 'info') {
  const raw: string[] = []
  const app = await buildApp(testConfig({ LOG_LEVEL: level as 'info' }), { logStream: { write: (line) => void raw.push(line) } })
  t.teardown(() => app.close())
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as { port: number }
  const lines = () => raw.map((line) => JSON.parse(line) as Line)
  return { baseUrl: `http://127.0.0.1:${port}`, raw, lines }
}

t.test('a token in the query is redacted however its name is percent-encoded', async (t) => {
  const jwt = signToken('alice')
  const { baseUrl, raw } = await appWithLogs(t)
  for (const name of ['token', '%74oken', 't%6Fken', '%54OKEN', 'api%5Fkey']) {
    const response = await fetch(`${baseUrl}/nope?a=1&${name}=${jwt}`)
    t.equal(response.status, 404, name)
  }
  await fetch(`${baseUrl}/health/live?%74oken=${jwt}`)
  t.ok(raw.length > 5, 'requests were logged')
  t.notOk(raw.some((line) => line.includes(jwt)), 'the JWT appears in no log line')
  t.ok(raw.some((line) => line.includes('Route GET:/nope?a=1&%74oken=[redacted] not found')), 'the not-found line keeps the name, not the value')
})

t.test('redactUrl and redactUrlsIn', async (t) => {
  t.equal(redactUrl('/ws/agent?%74oken=abc&x=1'), '/ws/agent?token=%5Bredacted%5D&x=1')
  t.equal(redactUrl('/plain'), '/plain')
  t.equal(redactUrlsIn('GET /a?x=1&Secret=s3 and /b?%zz=1'), 'GET /a?x=1&Secret=[redacted] and /b?%zz=1', 'an undecodable name is left as it is')
  t.equal(redactUrlsIn('no query here'), 'no query here')
  t.equal(redactUrlsIn('/a?q=token'), '/a?q=token', 'only names are judged, not values')
})

t.test('health probes are logged at debug, other requests at info', async (t) => {
  const info = await appWithLogs(t, 'info')
  await fetch(`${info.baseUrl}/health/live`)
  await fetch(`${info.baseUrl}/health/ready`)
  t.notOk(info.lines().some((line) => line.req?.url.startsWith('/health/')), 'no probe line at info')
  await fetch(`${info.baseUrl}/v1/protocol`)
  t.ok(info.lines().some((line) => line.level === 30 && line.req?.url === '/v1/protocol'), 'a normal request at info')

  const debug = await appWithLogs(t, 'debug')
  await fetch(`${debug.baseUrl}/health/live`)
  const probe = debug.lines().filter((line) => line.msg === 'incoming request' || line.msg === 'request completed')
  t.ok(probe.length >= 2 && probe.every((line) => line.level === 20), 'probe lines at debug')
})

t.test('stdoutStream: a write error ends logging instead of blocking', async (t) => {
  const written: string[] = []
  const fake = Object.assign(new EventEmitter(), { write: (line: string) => void written.push(line) })
  const stream = stdoutStream(fake as unknown as NodeJS.WriteStream)
  stream.write('one\n')
  fake.emit('error', Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }))
  stream.write('two\n')
  t.same(written, ['one\n'])
})

t.test('prettyStream: one line per event; usePretty', async (t) => {
  const out: string[] = []
  const pretty = prettyStream({ write: (line) => void out.push(line) }, false)
  pretty.write(`${JSON.stringify({ level: 30, time: Date.now(), pid: 1, hostname: 'h', msg: 'hello', userId: 'u1' })}\n`)
  t.equal(out.length, 1)
  t.match(out[0], /INFO: hello \{"userId":"u1"\}\n$/)
  t.equal(out[0]!.trimEnd().split('\n').length, 1, 'one line')
  t.equal(usePretty('auto', false, true), true, 'a terminal in development')
  t.equal(usePretty('auto', true, true), false, 'production: JSON even on a terminal')
  t.equal(usePretty('auto', false, false), false, 'a pipe: JSON')
  t.equal(usePretty('pretty', true, false), true)
  t.equal(usePretty('json', false, true), false)
})
