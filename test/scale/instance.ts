import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import { setTimeout as sleep } from 'node:timers/promises'
import { TEST_SECRET } from '../helpers/app.ts'

const SERVER = new URL('../../src/server.ts', import.meta.url).pathname

/** One `node src/server.ts` process, as production runs it. */
export interface Instance {
  port: number
  baseUrl: string
  /** host:port, for an nginx upstream. */
  address: string
  wsUrl: string
  process: ChildProcess
  /** The last log lines (pino JSON), for failure messages. */
  logs: string[]
  /** Sends `signal` and waits for the exit. */
  kill(signal: NodeJS.Signals): Promise<void>
}

interface Tap {
  teardown(fn: () => unknown): void
}

const KEPT_LOG_LINES = 200

/** The lease the scale tests give their instances: a killed instance's runs end sooner. */
export const TEST_LEASE_MS = 3000

/** Instances sharing the test's Redis (under its key prefix) and streaming from `upstreamURL`. */
export function sharedEnv(redis: { url: string; prefix: string }, upstreamURL: string): Record<string, string> {
  return {
    REDIS_URL: redis.url,
    REDIS_KEY_PREFIX: redis.prefix,
    MODEL_PROVIDER: 'openai',
    OPENAI_BASE_URL: upstreamURL,
    OPENAI_API_KEY: 'test',
    RUN_LEASE_MS: String(TEST_LEASE_MS),
  }
}

/**
 * Starts an instance on a free port (PORT=0; the port is read from its "listening" log line)
 * with `env` on top of a test baseline, and waits until it is ready. Stopped at teardown.
 */
export async function startInstance(t: Tap, env: Record<string, string>): Promise<Instance> {
  const child = spawn(process.execPath, [SERVER], {
    env: {
      // A clean environment: no test runner hooks (NODE_OPTIONS) slowing the start.
      PATH: process.env.PATH ?? '',
      NODE_ENV: 'test',
      HOST: '127.0.0.1',
      PORT: '0',
      JWT_SECRET: TEST_SECRET,
      LOG_LEVEL: 'info',
      DEMO_UI: 'false',
      SHUTDOWN_GRACE_MS: '0',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const logs: string[] = []
  const exited = once(child, 'exit')
  const kill = async (signal: NodeJS.Signals) => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill(signal)
    await exited
  }
  t.teardown(async () => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
    await kill('SIGTERM')
    clearTimeout(timer)
  })
  const { promise: listening, resolve, reject } = Promise.withResolvers<number>()
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on('line', (line) => {
      logs.push(line)
      if (logs.length > KEPT_LOG_LINES) logs.shift()
      const port = /Server listening at http:\/\/127\.0\.0\.1:(\d+)/.exec(line)?.[1]
      if (port) resolve(Number(port))
    })
  }
  void exited.then(() => reject(new Error(`instance exited before listening:\n${logs.join('\n')}`)))
  const timeout = AbortSignal.timeout(30_000)
  const port = await Promise.race([
    listening,
    once(timeout, 'abort').then(() => Promise.reject(new Error(`instance did not listen:\n${logs.join('\n')}`))),
  ])
  const baseUrl = `http://127.0.0.1:${port}`
  for (;;) {
    const ready = await fetch(`${baseUrl}/health/ready`).then(
      (res) => res.status === 200,
      () => false,
    )
    if (ready) break
    if (timeout.aborted) throw new Error(`instance not ready:\n${logs.join('\n')}`)
    await sleep(50)
  }
  return { port, baseUrl, address: `127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}/ws/agent`, process: child, logs, kill }
}
