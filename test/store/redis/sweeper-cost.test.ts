/**
 * Defect: the lease sweeper (which ends the runs of dead instances) read every watched
 * session's active run from Redis once per sweep, every second, even when nothing ran: the
 * idle Redis load of an instance grew linearly with the sessions its connections watched.
 * Measured from outside: the commands Redis executed (INFO commandstats) while a connection
 * watches K idle sessions, against the same while it watches one.
 */
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { startApp, signToken } from '../../helpers/app.ts'
import { startPrivateRedis } from '../../helpers/redis.ts'
import { bearer, connect, type TestClient } from '../../helpers/ws-client.ts'

const K = 30
const WINDOW_MS = 3000
/**
 * Windows per measurement; the median counts, so that a periodic task (a 10 s refresh) falling
 * in one window, or missing from one, does not. (The quietest window on each side was compared
 * before: one window of the single session that missed a periodic task then made 15 against 9.)
 */
const WINDOWS = 3

/** Commands Redis has executed so far, the probe's own INFO excluded. */
async function commandsExecuted(probe: Redis): Promise<number> {
  const stats = await probe.info('commandstats')
  let total = 0
  for (const match of stats.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) if (match[1] !== 'info') total += Number(match[2])
  return total
}

/** The commands Redis executed in each idle window. */
async function idleLoad(probe: Redis): Promise<number[]> {
  const counts: number[] = []
  for (let i = 0; i < WINDOWS; i++) {
    const before = await commandsExecuted(probe)
    await sleep(WINDOW_MS)
    counts.push((await commandsExecuted(probe)) - before)
  }
  return counts
}

function median(counts: number[]): number {
  return [...counts].sort((a, b) => a - b)[Math.floor(counts.length / 2)] as number
}

async function chatIn(client: TestClient, sessionId: string): Promise<void> {
  client.send({ type: 'chat', session_id: sessionId, content: 'hi' })
  await client.next((frame) => frame.type === 'complete' && frame.session_id === sessionId, 10_000)
}

t.test('the lease sweeper does one Redis read per watched session per second', async (t) => {
  const redis = await startPrivateRedis(t)
  if (!redis) return
  const app = await startApp(t, { REDIS_URL: redis.url, MAX_WATCHED_PER_CONNECTION: 64 } as any)
  const probe = new Redis(redis.url, { maxRetriesPerRequest: 0 })
  t.teardown(() => probe.quit())
  const client = await connect(t, app.wsUrl, bearer(signToken(`user-${randomUUID()}`)))

  await chatIn(client, 'idle-0')
  await sleep(500)
  const one = await idleLoad(probe)

  for (let i = 1; i < K; i++) await chatIn(client, `idle-${i}`)
  await sleep(500)
  const many = await idleLoad(probe)

  // The baseline counts as at least one command a second, so a near-silent instance is not held to 0.
  const baseline = Math.max(WINDOW_MS / 1000, median(one))
  const ratio = median(many) / baseline
  t.comment(`commands per ${WINDOW_MS} ms idle window: watching 1 session ${one.join(', ')}; watching ${K}: ${many.join(', ')}`)
  t.ok(ratio <= 1.5, `idle Redis load does not grow with the sessions watched (ratio ${ratio.toFixed(2)}, at most 1.5)`)
  t.ok(client.socket.readyState === client.socket.OPEN, 'the connection stayed open throughout')
})
