// Defect: disconnect() dropped the connection's subscription map before unsubscribing, so a
// closed connection's subscriptions were never closed. With Redis, every session stream any
// connection ever watched stayed in the instance's one blocking XREAD: after many short-lived
// connections, each XREAD named every stream ever watched. Observed with MONITOR: one XREAD
// during a run after the cycles must name about as many streams as one on a fresh instance.
import t, { type Test } from 'tap'
import { Redis } from 'ioredis'
import { randomUUID } from 'node:crypto'
import { startApp, signToken } from '../../helpers/app.ts'
import { connect, bearer } from '../../helpers/ws-client.ts'
import { useRedis } from '../../helpers/redis.ts'
import { roomy } from '../../ws/util.ts'

const CYCLES = 300

interface Watch {
  /** Stream keys named by each XREAD seen, in order. */
  reads: string[][]
  stop(): Promise<void>
}

/** Records every XREAD naming a key under `prefix`, from a MONITOR connection of the test's own. */
async function watchXreads(url: string, prefix: string): Promise<Watch> {
  const client = new Redis(url, { maxRetriesPerRequest: 0 })
  const monitor = await client.monitor()
  const reads: string[][] = []
  monitor.on('monitor', (_time: string, args: string[]) => {
    if (String(args[0]).toLowerCase() !== 'xread') return
    const at = args.findIndex((arg) => String(arg).toLowerCase() === 'streams')
    if (at === -1) return
    const rest = args.slice(at + 1)
    const keys = rest.slice(0, rest.length / 2)
    if (keys.some((key) => key.startsWith(prefix))) reads.push(keys)
  })
  return {
    reads,
    async stop() {
      monitor.disconnect()
      client.disconnect()
    },
  }
}

/** One chat to completion in a new session, the XREADs issued meanwhile recorded. */
async function measuredRun(url: string, prefix: string, wsUrl: string, token: string, sessionId: string, t: Test) {
  const watch = await watchXreads(url, prefix)
  t.teardown(() => watch.stop())
  const client = await connect(t, wsUrl, bearer(token))
  client.send({ type: 'chat', content: 'measured', session_id: sessionId })
  await client.untilComplete()
  client.close()
  await client.closed
  await watch.stop()
  return watch.reads
}

t.test('closed connections are never unsubscribed (Redis: the blocking XREAD names only live streams)', async (t) => {
  const redis = await useRedis(t)
  if (!redis) return
  const { wsUrl } = await startApp(t, {
    ...roomy,
    REDIS_URL: redis.url,
    REDIS_KEY_PREFIX: redis.prefix,
    MOCK_TOKEN_DELAY_MS: 5,
    TOOLS: [],
  })
  const token = signToken(`cycler-${randomUUID()}`)

  const fresh = await measuredRun(redis.url, redis.prefix, wsUrl, token, 'fresh-run', t)
  const freshMax = Math.max(0, ...fresh.map((keys) => keys.length))

  for (let i = 0; i < CYCLES; i++) {
    const client = await connect(t, wsUrl, bearer(token))
    client.send({ type: 'chat', content: 'x', session_id: `cycle-${i}` })
    await client.untilComplete()
    client.close()
    await client.closed
  }

  const after = await measuredRun(redis.url, redis.prefix, wsUrl, token, 'after-run', t)
  const afterMax = Math.max(0, ...after.map((keys) => keys.length))
  const stale = new Set(after.flat().filter((key) => /cycle-\d+/.test(key)))
  t.equal(stale.size, 0, `no XREAD during the later run names a stream of a closed connection's session (named ${stale.size})`)
  t.ok(afterMax <= freshMax * 1.5, `keys named per XREAD after ${CYCLES} cycles (${afterMax}) ≤ 1.5 × on a fresh instance (${freshMax})`)
})
