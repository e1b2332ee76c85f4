import type { Test } from 'tap'
import { randomUUID } from 'node:crypto'
import type { Config } from '../../../src/config.ts'
import { startApp, type StartedApp } from '../../helpers/app.ts'
import { createFakeUpstream, textSteps, type FakeUpstream } from '../../helpers/fake-upstream.ts'
import { useRedis, type TestRedis } from '../../helpers/redis.ts'

export const words = (count: number) => Array.from({ length: count }, (_, i) => ` w${i}`)

export interface Pair {
  a: StartedApp
  b: StartedApp
  upstream: FakeUpstream
  redis: TestRedis
  /** A prefix for user ids of this test only (rate limits and connection caps are shared through Redis). */
  user: (name: string) => string
}

/** Two in-process app instances on one Redis key prefix, both streaming from one scriptable upstream. */
export async function pair(t: Test, config: Partial<Config> = {}): Promise<Pair | undefined> {
  const redis = await useRedis(t)
  if (!redis) return undefined
  const upstream = await createFakeUpstream(() => ({ steps: textSteps(words(40), { delayMs: 15 }) }))
  t.teardown(() => upstream.close())
  const shared: Partial<Config> = {
    REDIS_URL: redis.url,
    REDIS_KEY_PREFIX: redis.prefix,
    modelProvider: 'openai',
    OPENAI_BASE_URL: upstream.baseURL,
    OPENAI_API_KEY: 'test',
    ...config,
  }
  const [a, b] = await Promise.all([startApp(t, shared), startApp(t, shared)])
  const tag = randomUUID().slice(0, 8)
  return { a: a!, b: b!, upstream, redis, user: (name) => `${name}-${tag}` }
}

/** DELETE /v1/sessions/{id} as the bearer of `token`; the status code. */
export async function deleteSession(baseUrl: string, sessionId: string, token: string): Promise<number> {
  const response = await fetch(`${baseUrl}/v1/sessions/${sessionId}`, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } })
  await response.body?.cancel()
  return response.status
}
