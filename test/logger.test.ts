import t, { type Test } from 'tap'
import { EventEmitter } from 'node:events'
import { spawn } from 'node:child_process'
import { buildApp } from '../src/app.ts'
import { pino, type Logger } from 'pino'
import type { FastifyBaseLogger } from 'fastify'
import { logsAt, prettyStream, redactUrl, redactUrlsIn, stdoutStream, usePretty } from '../src/logger.ts'
import { signToken, testConfig } from './helpers/app.ts'
import { bearer, connect } from './helpers/ws-client.ts'
import { aiSdkUrl } from './dialects/ai-sdk/helpers.ts'

interface Line {
  level: number
  msg: string
  req?: { url: string }
  reqId?: string
  connId?: string
  userId?: string
}

async function appWithLogs(t: Test, level = 'info') {
  const raw: string[] = []
  const app = await buildApp(testConfig({ LOG_LEVEL: level as 'info' }), { logStream: { write: (line) => void raw.push(line) } })
  t.teardown(() => app.close())
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as { port: number }
  const lines = () => raw.map((line) => JSON.parse(line) as Line)
  return { app, baseUrl: `http://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}/ws/agent`, raw, lines }
}

// The connection's logger is made on first use (src/ws/connection.ts): at info its lines still carry every id.
for (const dialect of ['agent', 'ai-sdk'] as const) {
  t.test(`an ${dialect} connection's lines at info carry the upgrade's request id, its own id and the user`, async (t) => {
    const info = await appWithLogs(t, 'info')
    const children: Array<Record<string, unknown>> = []
    ;(info.app.log as Logger).onChild = (child) => void children.push(child.bindings())
    const client = await connect(t, dialect === 'agent' ? info.wsUrl : aiSdkUrl(info.wsUrl), bearer(signToken('alice')))
    client.socket.close(1000)
    await client.closed
    let lines: Line[] = []
    for (let tries = 0; tries < 50 && !lines.some((line) => line.msg === 'disconnected'); tries++) {
      await new Promise((resolve) => setTimeout(resolve, 10))
      lines = info.lines()
    }
    const [connected, disconnected] = ['connected', 'disconnected'].map((msg) => lines.find((line) => line.msg === msg))
    const upgrade = lines.find((line) => line.msg === 'incoming request')
    t.match(connected, { level: 30, userId: 'alice', connId: /^[0-9a-f-]{36}$/, reqId: upgrade?.reqId })
    t.match(disconnected, { level: 30, userId: 'alice', connId: connected?.connId, reqId: upgrade?.reqId })
    t.notOk(children.some((bindings) => 'connId' in bindings), 'through the instance logger: the connection made no child for them')
  })
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

t.test('logsAt: what pino writes; a logger that cannot tell is taken to write', async (t) => {
  t.equal(logsAt(pino({ level: 'warn' }), 'info'), false)
  t.equal(logsAt(pino({ level: 'info' }), 'info'), true)
  t.equal(logsAt(pino({ level: 'silent' }), 'error'), false)
  const quiet = () => {}
  const plain = { level: 'info', info: quiet, error: quiet, debug: quiet, fatal: quiet, warn: quiet, trace: quiet, silent: quiet } as unknown as FastifyBaseLogger
  t.equal(logsAt(plain, 'info'), true)
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

const turn = () => new Promise<void>((resolve) => setImmediate(resolve))

function fakeStdout() {
  const written: string[] = []
  const stdout = Object.assign(new EventEmitter(), { write: (chunk: string) => void written.push(chunk) })
  return { written, stdout: stdout as unknown as NodeJS.WriteStream & EventEmitter }
}

t.test('stdoutStream: a write error ends logging instead of blocking', async (t) => {
  const { written, stdout } = fakeStdout()
  const stream = stdoutStream(stdout, new EventEmitter())
  stream.write('one\n')
  await turn()
  stdout.emit('error', Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }))
  stream.write('two\n')
  await turn()
  t.same(written, ['one\n'])
})

t.test('stdoutStream: one write per turn, at once past 64 KiB, and what is pending at exit', async (t) => {
  const { written, stdout } = fakeStdout()
  const exit = new EventEmitter()
  const stream = stdoutStream(stdout, exit)
  stream.write('a\n')
  stream.write('b\n')
  t.same(written, [], 'nothing yet within the turn')
  await turn()
  t.same(written, ['a\nb\n'], 'the turn’s lines in one write, in order')
  const big = `${'x'.repeat(64 * 1024)}\n`
  stream.write(big)
  t.same(written, ['a\nb\n', big], 'a full batch goes out without waiting for the turn')
  stream.write('last\n')
  exit.emit('exit', 1)
  t.same(written.at(-1), 'last\n', 'written at exit')
  await turn()
  t.equal(written.length, 3, 'and not again at the turn’s end')
})

t.test('stdoutStream: a line logged just before process.exit() is out', async (t) => {
  const module = new URL('../src/logger.ts', import.meta.url).href
  const script = `const { stdoutStream } = await import(${JSON.stringify(module)}); stdoutStream().write('fatal line\\n'); process.exit(3)`
  const { stdout, code } = await new Promise<{ stdout: string; code: number | null }>((resolve) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (chunk: Buffer) => (out += chunk))
    child.on('close', (exitCode) => resolve({ stdout: out, code: exitCode }))
  })
  t.equal(code, 3)
  t.equal(stdout, 'fatal line\n')
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
