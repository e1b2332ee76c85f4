import type { Test } from 'tap'
import { createMemoryBackend } from '../../src/store/memory/index.ts'
import type { Backend } from '../../src/store/types.ts'
import { redisBackend, useRedis } from '../helpers/redis.ts'

/** The two backends a store contract test runs on: memory, and Redis (undefined when none is reachable locally). */
export const storeBackends: Array<[kind: string, make: (t: Test) => Promise<Backend | undefined>]> = [
  ['memory', async (t) => {
    const backend = createMemoryBackend({ ttlSeconds: 60, maxEvents: 100 })
    t.teardown(() => backend.close())
    return backend
  }],
  ['redis', async (t) => {
    const r = await useRedis(t)
    return r && redisBackend(t, r)
  }],
]
