import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Backend, ControlMessage, LoggedEvent, LogListener, SessionRef } from '../../src/store/types.ts'
import { startApp, signToken } from '../helpers/app.ts'
import { closeBackend, redisBackend, startPrivateRedis } from '../helpers/redis.ts'
import { TestClient, bearer, connect } from '../helpers/ws-client.ts'
import { createRedisBackend } from '../../src/store/redis/index.ts'
import { metaKey } from '../../src/store/redis/keys.ts'
import type { UnsequencedRunEvent } from '../../src/protocol/index.ts'

const token = (sessionId: string, content: string): UnsequencedRunEvent => ({ type: 'token', session_id: sessionId, content, metadata: { run_id: 'r' } })
const listener = (into: LoggedEvent[]): LogListener => ({ event: (event) => void into.push(event), end: () => {} })

/**
 * A session with run `r` going. With `gen`, the session is written as that generation
 * (a Redis restarted empty forgot it: this stands for the same session created again).
 */
async function session(backend: Backend, id: string, gen?: string): Promise<SessionRef> {
  if (gen !== undefined) await backend.redis!.hset(metaKey('outage:', 'alice', id), 'owner', 'alice', 'gen', gen, 'createdAt', 1, 'updatedAt', 1)
  const opened = await backend.sessions.open('alice', id, 10)
  if (opened.kind !== 'open') throw new Error('too many')
  const ref = { owner: 'alice', id, gen: opened.session.gen }
  await backend.sessions.beginRun(ref, { runId: 'r', instanceId: 'i', leaseMs: 60_000, input: { kind: 'message', message: { role: 'user', content: 'hi' } }, maxMessages: 10 })
  return ref
}

/** Polls `check` until it holds; how long that took, in ms. */
async function within(timeoutMs: number, check: () => Promise<boolean>): Promise<number> {
  const started = performance.now()
  while (!(await check())) {
    if (performance.now() - started > timeoutMs) throw new Error(`not within ${timeoutMs} ms`)
    await sleep(25)
  }
  return performance.now() - started
}

const succeeds = (work: () => Promise<unknown>) => () => work().then(
  () => true,
  () => false,
)

t.test('commands fail fast while Redis is down; tails and pub/sub heal when it is back', async (t) => {
  const server = await startPrivateRedis(t)
  if (!server) return
  const backend = await redisBackend(t, { url: server.url, prefix: 'outage:' })
  const delivered: LoggedEvent[] = []
  const heard: ControlMessage[] = []
  const s = await session(backend, 's')
  t.teardown((await backend.events.subscribe(s, 0, listener(delivered))).close)
  backend.control.onMessage((message) => heard.push(message))
  const old = await session(backend, 'old')
  for (const text of ['a', 'b']) await backend.sessions.append(old, 'r', token('old', text))
  const oldEvents: LoggedEvent[] = []
  t.teardown((await backend.events.subscribe(old, 0, listener(oldEvents))).close)
  await within(3000, async () => oldEvents.length === 2)

  await server.stop()
  // A second subscriber of a tailed stream reads its backlog first: that read fails, cleanly.
  await t.rejects(backend.events.subscribe(old, 0, listener([])), 'a subscription that cannot read its backlog fails')
  const attempts: Array<[string, () => Promise<unknown>]> = [
    ['ping', () => backend.sessions.ping()],
    ['get', () => backend.sessions.get('alice', 's')],
    ['append', () => backend.sessions.append(s, 'r', token('s', 'x'))],
  ]
  for (const [what, work] of attempts) {
    const started = performance.now()
    await t.rejects(work(), `${what} rejects`)
    t.ok(performance.now() - started < 1000, `${what} fails fast, it does not queue`)
  }

  // Joins while the tail waits for Redis to come back (no read in flight to interrupt).
  await sleep(50)
  const joinedDuringOutage: LoggedEvent[] = []
  const fresh = { owner: 'alice', id: 'new', gen: 'after-restart' }
  t.teardown((await backend.events.subscribe(fresh, 0, listener(joinedDuringOutage))).close)

  await server.start()
  const healed = await within(5000, succeeds(() => backend.sessions.ping()))
  t.ok(healed < 5000, 'reconnected by itself')
  // The restarted server is empty (no persistence here): the session is gone, its writes refused.
  t.equal(await backend.sessions.append(s, 'r', token('s', 'lost')), null, 'the forgotten run is fenced off')
  // Whatever is written to the tailed streams now reaches their tails.
  const sRevived = await session(backend, 's', s.gen)
  const event = await backend.sessions.append(sRevived, 'r', token('s', 'back'))
  await within(3000, async () => delivered.length === 1)
  t.same(delivered, [event], 'the tail re-issued its read on the new connection')
  const revived = await session(backend, 'new', fresh.gen)
  const joined = await backend.sessions.append(revived, 'r', token('new', 'hi'))
  await within(3000, async () => joinedDuringOutage.length === 1)
  t.same(joinedDuringOutage, [joined], 'with the streams that joined during the outage')
  const orphaned: ControlMessage = { kind: 'orphaned', ref: s, runId: 'r' }
  await within(3000, async () => {
    await backend.control.publish(orphaned)
    return heard.length > 0
  })
  t.same(heard[0], orphaned, 'the control channel was subscribed again')
})

t.test('a backend started while Redis is down serves once Redis comes up', async (t) => {
  const server = await startPrivateRedis(t)
  if (!server) return
  await server.stop()
  const warnings: string[] = []
  const log = { info() {}, debug() {}, error() {}, warn: (_obj: unknown, msg?: string) => void warnings.push(msg ?? '') }
  const backend = await createRedisBackend({ url: server.url, ttlSeconds: 60, maxEvents: 10, connectWaitMs: 200, logger: log })
  t.teardown(() => closeBackend(backend))
  t.ok(warnings.includes('redis unreachable at start: serving unready until it is'), warnings.join('; '))
  await t.rejects(backend.sessions.ping())
  await server.start()
  await within(5000, succeeds(() => backend.sessions.ping()))
  t.match(await backend.sessions.open('alice', 's', 10), { kind: 'open', session: { owner: 'alice' } })
  t.ok(warnings.includes('redis unreachable: retrying'), 'the outage was logged')
})

t.test('the service: readiness 503 and upgrades refused fast while Redis is down, then back without a restart', async (t) => {
  const server = await startPrivateRedis(t)
  if (!server) return
  const logs: Array<{ msg: string; reason?: string }> = []
  const logStream = { write: (line: string) => void logs.push(JSON.parse(line)) }
  const { baseUrl, wsUrl } = await startApp(t, { REDIS_URL: server.url, REDIS_KEY_PREFIX: 'svc:', LOG_LEVEL: 'info' }, { logStream })
  const ready = async () => (await fetch(`${baseUrl}/health/ready`)).status
  t.equal(await ready(), 200)

  await server.stop()
  const unready = await within(2000, async () => (await ready()) === 503)
  t.ok(unready < 2000, `readiness 503 after ${Math.round(unready)} ms`)
  const body = (await (await fetch(`${baseUrl}/health/ready`)).json()) as { checks: { store: { ok: boolean } } }
  t.equal(body.checks.store.ok, false, 'the store check says why')
  t.equal((await fetch(`${baseUrl}/health/live`)).status, 200, 'liveness stays 200: no restart wanted')

  const started = performance.now()
  const refused = new TestClient(wsUrl, bearer(signToken('alice')))
  t.teardown(() => refused.socket.terminate())
  const closed = await refused.closed
  t.ok(closed.at - started < 1000, `a new connection fails within 1 s (${Math.round(closed.at - started)} ms)`)
  t.same({ code: closed.code, reason: closed.reason }, { code: 1011, reason: 'store unavailable' }, 'with a close a client can read')
  t.same(refused.frames, [], 'and nothing else first')

  await server.start()
  await within(5000, async () => (await ready()) === 200)
  const client = await connect(t, wsUrl, bearer(signToken('alice')))
  client.send({ type: 'chat', content: 'hello again' })
  const complete = await client.nextOfType('complete')
  t.equal(complete.metadata?.finish_reason, 'stop', 'chats work again')
  const said = logs.filter((line) => line.msg.startsWith('not ready') || line.msg.startsWith('ready: '))
  t.match(said, [{ msg: /^not ready: the store/, reason: String }, { msg: 'ready: the store serves again' }], 'one line when readiness changed, saying why; none per probe')
})
