import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createFakeUpstream, textSteps } from '../helpers/fake-upstream.ts'
import { connect, bearer } from '../helpers/ws-client.ts'
import { signToken, TEST_SECRET } from '../helpers/app.ts'
import { ROOT, childEnv, collect, runNode } from '../config/spawn.ts'
import { contentOf, tokensOf } from './helpers.ts'
import { freePort } from '../helpers/free-port.ts'

/** `npm start` (node src/server.ts) on loopback; resolves once it listens; SIGTERM at teardown. */
async function startServer(t: Test, env: Record<string, string>, cwd = ROOT) {
  const port = await freePort()
  const child = spawn(process.execPath, [`${ROOT}src/server.ts`], {
    cwd,
    env: childEnv({ HOST: '127.0.0.1', PORT: String(port), JWT_SECRET: TEST_SECRET, ...env }),
  })
  const done = collect(child, 30_000)
  let logs = ''
  child.stdout.on('data', (chunk: Buffer) => (logs += chunk))
  t.teardown(async () => {
    if (child.exitCode === null) child.kill('SIGTERM')
    await done
  })
  await new Promise<void>((resolve, reject) => {
    const onData = () => {
      if (!logs.includes('Server listening')) return
      child.stdout.off('data', onData)
      resolve()
    }
    child.stdout.on('data', onData)
    child.once('exit', (code) => reject(new Error(`server exited ${code}: ${logs}`)))
  })
  return { url: `ws://127.0.0.1:${port}/ws/agent`, logs: () => logs, done, child }
}

t.test('npm start with no key: the loud mock streams an answer', async (t) => {
  const server = await startServer(t, {})
  const warning = server
    .logs()
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as { level: number; msg: string })
    .find((line) => /MODEL PROVIDER IS THE OFFLINE MOCK/.test(line.msg))
  t.ok(warning, 'the mock warning is logged')
  t.equal(warning?.level, 40, 'at warn level')

  const client = await connect(t, server.url, bearer(signToken('alice')))
  client.send({ type: 'chat', content: 'hello from a process' })
  const frames = await client.untilComplete()
  t.match(frames[0], { type: 'status', content: 'thinking', seq: 1 })
  t.match(contentOf(frames.at(-1)), /You said: "hello from a process"/)
  t.equal(contentOf(frames.at(-1)), tokensOf(frames))
  t.ok(frames.filter((f) => f.type === 'token').length > 3, 'streamed in several tokens')

  client.close()
  await client.closed
  server.child.kill('SIGTERM')
  const exit = await server.done
  t.equal(exit.code, 0, 'SIGTERM is a clean exit')
})

t.test('npm start with OPENAI_BASE_URL streams from that server', async (t) => {
  const up = await createFakeUpstream(() => ({ steps: textSteps('from the upstream', { usage: { prompt_tokens: 3, completion_tokens: 3 } }) }))
  t.teardown(() => up.close())
  const server = await startServer(t, { OPENAI_BASE_URL: up.baseURL, OPENAI_API_KEY: 'x', OPENAI_MODEL: 'fake-model' })
  t.notMatch(server.logs(), /OFFLINE MOCK/)
  const client = await connect(t, server.url, bearer(signToken('alice')))
  client.send({ type: 'chat', content: 'hi' })
  const frames = await client.untilComplete()
  t.match(frames.at(-1), { content: 'from the upstream', metadata: { finish_reason: 'stop', usage: { prompt_tokens: 3, completion_tokens: 3 } } })
  const request = up.requests[0]!
  t.equal(request.body.model, 'fake-model')
  t.equal(request.headers.authorization, 'Bearer x')
})

t.test('a fresh checkout with no JWT secret: a dev secret file, and `npm run token` mints tokens for it', async (t) => {
  const dir = t.testdir({})
  const server = await startServer(t, { JWT_SECRET: '' }, dir)
  const lines = server
    .logs()
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as { level: number; msg: string; devSecretFile?: string })
  const hint = lines.find((line) => line.devSecretFile)
  t.match(hint, { level: 40, devSecretFile: '.dev-secret', msg: /npm run token/ }, 'says how to mint a token')
  const secret = readFileSync(join(dir, '.dev-secret'), 'utf8').trim()
  t.ok(secret.length >= 32, 'the secret is kept in the working directory')
  t.notMatch(server.logs(), secret, 'and never logged')

  const minted = await runNode('src/cli/token.ts', ['alice', '--ttl', '5m'], {}, { cwd: dir })
  t.equal(minted.code, 0, minted.stderr)
  const client = await connect(t, server.url, bearer(minted.stdout.trim()))
  client.send({ type: 'ping' })
  t.equal((await client.nextOfType('pong')).type, 'pong', 'the minted token is accepted')
})
