import t, { type Test } from 'tap'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { createRequire } from 'node:module'
import { signToken, TEST_SECRET } from './helpers/app.ts'
import { bearer, TestClient } from './helpers/ws-client.ts'
import { freePort } from './helpers/free-port.ts'
import { childEnv, collect, ROOT, runNode } from './config/spawn.ts'
import { sleep } from './ws/util.ts'

interface Server {
  child: ChildProcess
  port: number
  output: () => string
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>
}

/** `node src/server.ts` (or another command) on a free port; killed at teardown if still running. */
async function startServer(t: Test, env: Record<string, string> = {}, command: string[] = [process.execPath, 'src/server.ts']): Promise<Server> {
  const port = await freePort()
  const child = spawn(command[0]!, command.slice(1), {
    cwd: ROOT,
    env: childEnv({ HOST: '127.0.0.1', PORT: String(port), JWT_SECRET: TEST_SECRET, DEMO_UI: 'false', MOCK_TOKEN_DELAY_MS: '1', ...env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk))
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal, at: performance.now() })),
  )
  let done = false
  void exited.then(() => (done = true))
  t.teardown(() => {
    if (!done) child.kill('SIGKILL')
  })
  const deadline = performance.now() + 15_000
  while (!output.includes('agent-gateway ready')) {
    if (done || performance.now() > deadline) throw new Error(`the server did not start:\n${output}`)
    await sleep(20)
  }
  return { child, port, output: () => output, exited }
}

function jsonLines(output: string): Array<Record<string, unknown>> {
  return output.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as Record<string, unknown>)
}

async function waitForOutput(server: Server, text: string): Promise<void> {
  const deadline = performance.now() + 10_000
  while (!server.output().includes(text)) {
    if (performance.now() > deadline) throw new Error(`never logged ${text}:\n${server.output()}`)
    await sleep(10)
  }
}

t.test('start-up names the URL, /ws/agent and the demo page; the last line says it stopped', async (t) => {
  const server = await startServer(t, { DEMO_UI: 'true', LOG_LEVEL: 'info' })
  server.child.kill('SIGTERM')
  t.equal((await server.exited).code, 0)
  const lines = jsonLines(server.output())
  const base = `http://127.0.0.1:${server.port}`
  t.match(lines.find((line) => String(line.msg).startsWith('agent-gateway ready')), {
    msg: `agent-gateway ready: ${base}, WebSocket ws://127.0.0.1:${server.port}/ws/agent, demo page ${base}/`,
    url: base,
    websocket: `ws://127.0.0.1:${server.port}/ws/agent`,
    demo: `${base}/`,
  })
  t.match(lines.at(-1), { msg: 'stopped', signal: 'SIGTERM' })
})

t.test('a dead stdout never blocks exit', async (t) => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    const server = await startServer(t)
    // The log reader goes away (`npm start | tee log` with tee killed), then the stop comes.
    server.child.stdout!.destroy()
    await sleep(50)
    const killedAt = performance.now()
    server.child.kill(signal)
    const exit = await Promise.race([server.exited, sleep(10_000).then(() => undefined)])
    t.ok(exit, `${signal}: exited (${exit ? Math.round(exit.at - killedAt) : 'never'} ms)`)
    t.equal(exit?.code, 0, `${signal}: exit 0`)
  }
})

/** A client whose mock run streams for a few seconds (100 ms a token). */
async function streamingClient(t: Test, server: Server): Promise<TestClient> {
  const client = new TestClient(`ws://127.0.0.1:${server.port}/ws/agent`, bearer(signToken('drained')))
  t.teardown(() => client.socket.terminate())
  await client.opened
  client.send({ type: 'chat', content: 'tell me something long' })
  await client.nextOfType('token', 10_000)
  return client
}

t.test('a second SIGTERM during the drain does not cut it short', async (t) => {
  const server = await startServer(t, { MOCK_TOKEN_DELAY_MS: '100', SHUTDOWN_GRACE_MS: '1500', LOG_LEVEL: 'info' })
  const client = await streamingClient(t, server)
  server.child.kill('SIGTERM')
  await waitForOutput(server, '"msg":"draining"')
  await sleep(300)
  server.child.kill('SIGTERM')
  const closed = await client.closed
  const { code } = await server.exited
  t.equal(code, 0, 'exit 0')
  t.equal(closed.code, 1012, 'closed 1012 service restart, not 1006')
  t.equal(client.frames.at(-1)?.type, 'complete', 'the run ended with its complete')
  t.match(server.output(), /already shutting down/)
})

t.test('a second Ctrl-C exits at once; one Ctrl-C delivered twice does not', async (t) => {
  const server = await startServer(t, { MOCK_TOKEN_DELAY_MS: '100', SHUTDOWN_GRACE_MS: '60000', LOG_LEVEL: 'info' })
  await streamingClient(t, server)
  // What npm start does on Ctrl-C: the terminal's SIGINT and npm's forwarded copy.
  server.child.kill('SIGINT')
  server.child.kill('SIGINT')
  await waitForOutput(server, '"msg":"draining"')
  await sleep(400)
  t.equal(server.child.exitCode, null, 'still draining after the doubled signal')
  const secondAt = performance.now()
  server.child.kill('SIGINT')
  const { code, at } = await server.exited
  t.equal(code, 130)
  t.ok(at - secondAt < 5000, `exited ${Math.round(at - secondAt)} ms after the second Ctrl-C (grace: 60 s)`)
})

t.test('SIGTERM to the `npm start` process stops the server', async (t) => {
  const npm = await startServer(t, {}, ['npm', 'start'])
  npm.child.kill('SIGTERM')
  await npm.exited
  const deadline = performance.now() + 10_000
  let refused = false
  while (!refused && performance.now() < deadline) {
    refused = await fetch(`http://127.0.0.1:${npm.port}/health/live`).then(() => false, () => true)
    if (!refused) await sleep(50)
  }
  t.ok(refused, 'nothing listens on the port any more')
  t.match(npm.output(), /"msg":"stopped"/)
})

t.test('start-up errors are one line naming the variable, exit 1', async (t) => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ TOOLS: 'no_such_tool' }, /^agent-gateway: Invalid TOOLS: unknown no_such_tool \(allowed: get_current_time, calculate\)\n$/],
    [{ MODEL_PROVIDER: 'foo' }, /^agent-gateway: Invalid MODEL_PROVIDER: expected one of openai, mock \(got "foo"\)\n$/],
    [{ LOG_FORMAT: 'xml' }, /^agent-gateway: Invalid LOG_FORMAT: expected one of auto, json, pretty/],
  ]
  for (const [env, message] of cases) {
    const ran = await runNode('src/server.ts', [], { JWT_SECRET: TEST_SECRET, ...env })
    t.equal(ran.code, 1, JSON.stringify(env))
    t.match(ran.stderr, message)
  }
  const taken = createServer()
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
  t.teardown(() => taken.close())
  const port = String((taken.address() as { port: number }).port)
  const ran = await runNode('src/server.ts', [], { JWT_SECRET: TEST_SECRET, HOST: '127.0.0.1', PORT: port, DEMO_UI: 'false' })
  t.equal(ran.code, 1)
  t.match(ran.stderr, new RegExp(`^agent-gateway: cannot listen on HOST=127\\.0\\.0\\.1 PORT=${port}: .*EADDRINUSE[^\\n]*\\n$`))
})

t.test('LOG_FORMAT=pretty: one readable line per event', async (t) => {
  const server = await startServer(t, { LOG_FORMAT: 'pretty' })
  server.child.kill('SIGTERM')
  await server.exited
  const lines = server.output().trimEnd().split('\n')
  t.notOk(lines.some((line) => line.startsWith('{')), 'no JSON lines')
  t.ok(lines.some((line) => /INFO.*agent-gateway ready/.test(line)))
  t.match(lines.at(-1), /INFO.*stopped/)
})

/** npm scripts the README shows; each checks the Node version first. */
const README_SCRIPTS = ['start', 'pretest', 'typecheck', 'token', 'bench', 'env:example']

t.test('every npm script the README shows checks the Node version first', async (t) => {
  const { scripts } = JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as { scripts: Record<string, string> }
  for (const name of README_SCRIPTS) t.match(scripts[name], /^node src\/cli\/require-node\.cjs && /, name)
  const { satisfies } = createRequire(import.meta.url)('../src/cli/require-node.cjs') as { satisfies: (version: string, range: string) => boolean }
  t.ok(satisfies('v22.18.0', '>=22.18'))
  t.ok(satisfies('v24.1.0', '>=22.18'))
  t.ok(satisfies('v23.0.0', '>=22.18.1'))
  t.notOk(satisfies('v22.17.9', '>=22.18'))
  t.notOk(satisfies('v20.20.2', '>=22.18'))
})

const OLD_NODE = '/usr/bin/node'
const oldNodeVersion = existsSync(OLD_NODE) ? spawnSync(OLD_NODE, ['--version'], { encoding: 'utf8' }).stdout.trim() : ''
const oldNodeIsOld = /^v(\d+)\.(\d+)/.test(oldNodeVersion) && (Number(oldNodeVersion.slice(1).split('.')[0]) < 22 || oldNodeVersion.startsWith('v22.1') && Number(oldNodeVersion.split('.')[1]) < 18)

t.test('on an old Node: one line naming the version needed', { skip: oldNodeIsOld ? false : `no Node older than 22.18 at ${OLD_NODE}` }, async (t) => {
  const direct = await collect(spawn(OLD_NODE, ['src/cli/require-node.cjs'], { cwd: ROOT, env: childEnv({}) }), 15_000)
  t.equal(direct.code, 1)
  t.equal(direct.stderr, `agent-gateway needs Node.js 22.18 or newer (it runs its TypeScript directly); this is Node.js ${oldNodeVersion}\n`)
  for (const args of [['start'], ['run', '-s', 'token', '--', 'alice']]) {
    const ran = await collect(spawn('npm', args, { cwd: ROOT, env: childEnv({ PATH: `/usr/bin:${process.env.PATH}`, JWT_SECRET: TEST_SECRET }) }), 30_000)
    t.not(ran.code, 0, `npm ${args.join(' ')}: fails`)
    t.match(ran.stderr, /agent-gateway needs Node\.js 22\.18 or newer/, `npm ${args.join(' ')}: says why`)
    t.notMatch(ran.stderr, /ERR_UNKNOWN_FILE_EXTENSION/)
    t.equal(ran.stdout.includes('eyJ'), false, 'no token printed')
  }
})
