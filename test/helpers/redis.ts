import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { createRedisBackend, type RedisBackendOptions } from '../../src/store/redis/index.ts'
import type { Backend } from '../../src/store/types.ts'
import { freePort } from './free-port.ts'
export { freePort }

/** The shared Redis the tests use (CI starts one there: .ci/run). */
export const TEST_REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379'

interface Tap {
  teardown(fn: () => unknown): void
  plan(count: number, comment?: string): void
  fail(message: string): void
}

export interface TestRedis {
  url: string
  /** Unique to the test: pass it as the backend's key prefix. Its keys are deleted at teardown. */
  prefix: string
  /** A client of the test's own, for looking at what the service wrote. */
  redis: Redis
  /** Every key under the prefix. */
  keys(): Promise<string[]>
}

let reachable: Promise<boolean> | undefined

async function ping(url: string): Promise<boolean> {
  const probe = new Redis(url, { lazyConnect: true, retryStrategy: () => null, connectTimeout: 1000, maxRetriesPerRequest: 0 })
  probe.on('error', () => {})
  try {
    await probe.connect()
    await probe.ping()
    return true
  } catch {
    return false
  } finally {
    probe.disconnect()
  }
}

/** Skips the test with `why` (plan 0), or fails it under CI=true, where every test must run. */
function unavailable(t: Tap, why: string): undefined {
  if (process.env.CI === 'true') t.fail(`${why}: CI=true requires the Redis tests to run`)
  else t.plan(0, `skipped: ${why} (under CI=true this fails)`)
  return undefined
}

/** Every key under `prefix` on one server (SCAN, in batches). */
export async function scanKeys(redis: Redis, prefix: string): Promise<string[]> {
  const keys: string[] = []
  let cursor = '0'
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
    cursor = next
    keys.push(...batch)
  } while (cursor !== '0')
  return keys
}

/**
 * Redis for one test, or undefined when the test was skipped (no Redis reachable and not CI):
 *
 *   const r = await useRedis(t)
 *   if (!r) return
 */
export async function useRedis(t: Tap): Promise<TestRedis | undefined> {
  reachable ??= ping(TEST_REDIS_URL)
  if (!(await reachable)) return unavailable(t, `no Redis reachable at ${TEST_REDIS_URL} (start one: redis-server --save "" --appendonly no)`)
  const prefix = `agwtest:${randomBytes(6).toString('hex')}:`
  const redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 0 })
  t.teardown(async () => {
    const keys = await scanKeys(redis, prefix)
    if (keys.length > 0) await redis.unlink(...keys)
    await redis.quit()
  })
  return { url: TEST_REDIS_URL, prefix, redis, keys: () => scanKeys(redis, prefix) }
}

/** A redis-server of the test's own, which it can stop and start again on the same port. */
export interface PrivateRedis {
  url: string
  port: number
  /** Kills the server (SIGKILL: gone at once, like a crash) and waits for its exit. */
  stop(): Promise<void>
  /** Starts it again, empty, and waits until it answers. */
  start(): Promise<void>
  /** SIGSTOP: connections stay open but nothing answers (a hung Redis). */
  freeze(): void
  /** SIGCONT. */
  thaw(): void
}

const hasRedisServer = () => spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0

/** Starts a private redis-server; stopped and removed at teardown. Skipped (or failed under CI) without the binary. */
export async function startPrivateRedis(t: Tap): Promise<PrivateRedis | undefined> {
  if (!hasRedisServer()) return unavailable(t, 'no redis-server binary on this machine (apt-get install redis-server)')
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'agw-redis-'))
  const url = `redis://127.0.0.1:${port}`
  let child: ChildProcess | undefined

  async function start(): Promise<void> {
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir]
    const proc = spawn('redis-server', args, { stdio: 'ignore' })
    child = proc
    for (let i = 0; !(await ping(url)); i++) {
      if (i > 100 || proc.exitCode !== null) throw new Error(`redis-server on port ${port} did not start`)
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }

  async function stop(): Promise<void> {
    const proc = child
    child = undefined
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return
    const exited = once(proc, 'exit')
    proc.kill('SIGKILL')
    await exited
  }

  t.teardown(async () => {
    child?.kill('SIGCONT')
    await stop()
    rmSync(dir, { recursive: true, force: true })
  })
  await start()
  return { url, port, stop, start, freeze: () => child?.kill('SIGSTOP'), thaw: () => child?.kill('SIGCONT') }
}

/** A Redis backend on the test's prefix, closed (every connection) at teardown. */
export async function redisBackend(
  t: Tap,
  redis: Pick<TestRedis, 'url' | 'prefix'>,
  options: Partial<Omit<RedisBackendOptions, 'url' | 'keyPrefix'>> = {},
): Promise<Backend> {
  const backend = await createRedisBackend({ url: redis.url, keyPrefix: redis.prefix, ttlSeconds: 3600, maxEvents: 100, ...options })
  t.teardown(() => closeBackend(backend))
  return backend
}

/** What the sessions plugin does at app close. */
export async function closeBackend(backend: Backend): Promise<void> {
  await backend.close()
}
