// Conversation control (protocol.md §2, §4, revision 1.1): on_busy interrupt and enqueue,
// regenerate, edit, message ids, the session list. Each test runs on the memory and on the
// Redis backend; two instances are in test/store/redis/conversation-control.test.ts.
import t, { type Test } from 'tap'
import { textSteps, type RecordedRequest } from '../helpers/fake-upstream.ts'
import type { Frame, TestClient } from '../helpers/ws-client.ts'
import { signToken } from '../helpers/app.ts'
import { useRedis } from '../helpers/redis.ts'
import type { Config } from '../../src/config.ts'
import { startWithUpstream as startOn, transcript, SYSTEM } from '../runs/helpers.ts'

type Start = (t: Test, script: Parameters<typeof startOn>[1], config?: Partial<Config>) => ReturnType<typeof startOn>
const backends: Array<[string, (t: Test) => Promise<Partial<Config> | undefined>]> = [
  ['memory', async () => ({})],
  ['redis', async (t) => {
    const redis = await useRedis(t)
    return redis && { REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix }
  }],
]

/** Each test on each backend. */
function both(name: string, body: (t: Test, startWithUpstream: Start) => Promise<void>): void {
  t.test(name, async (t) => {
    for (const [backend, configure] of backends) {
      await t.test(backend, async (t) => {
        const backendConfig = await configure(t)
        if (!backendConfig) return
        await body(t, (t, script, config = {}) => startOn(t, script, { ...backendConfig, ...config }))
      })
    }
  })
}

const slow = (text: string) => () => ({ steps: textSteps(Array.from({ length: 200 }, (_, i) => `${text}${i} `), { delayMs: 10 }) })
const runOf = (frame: Frame | undefined) => frame?.metadata?.run_id as string
const sequenced = (client: TestClient) => client.frames.filter((frame) => frame.seq !== undefined)

/**
 * Every run's frames are contiguous: once another run's frame came, none of this run follows
 * (a `status:queued` is logged when the run is queued, while another one streams).
 */
function neverInterleaved(t: Test, frames: Frame[]): void {
  const order: string[] = []
  for (const frame of frames) if (frame.content !== 'queued' && order.at(-1) !== runOf(frame)) order.push(runOf(frame))
  t.equal(new Set(order).size, order.length, `runs never interleave (${order.length} runs)`)
  t.same(frames.map((frame) => frame.seq), frames.map((_, i) => frames[0]!.seq! + i), 'seq without gaps')
}

async function rest(baseUrl: string, path: string, user = 'alice'): Promise<any> {
  const response = await fetch(`${baseUrl}${path}`, { headers: { authorization: `Bearer ${signToken(user)}` } })
  return { status: response.status, body: await response.json() }
}

both('on_busy interrupt: the active run ends superseded, the new one starts right after its complete', async (t, startWithUpstream) => {
  const { up, client } = await startWithUpstream(t, slow('a'))
  const alice = await client()
  alice.send({ type: 'chat', session_id: 's', content: 'first', id: 'q1' })
  const first = await up.nextRequest()
  await alice.next((frame) => frame.type === 'token')
  up.script(() => ({ steps: textSteps('second answer') }))
  alice.send({ type: 'chat', session_id: 's', content: 'no, this', id: 'q2', on_busy: 'interrupt' })
  const superseded = await alice.next((frame) => frame.type === 'complete')
  t.match(superseded, { metadata: { request_id: 'q1', finish_reason: 'cancelled', reason: 'superseded' } })
  await first.closed
  t.ok(first.closedByClient, 'the superseded run stopped paying for tokens')
  const next = await alice.next((frame) => frame.type === 'complete')
  t.match(next, { content: 'second answer', metadata: { request_id: 'q2', finish_reason: 'stop' } })
  const frames = sequenced(alice)
  t.match(frames.at(-(frames.length - frames.indexOf(superseded)) + 1), { content: 'thinking', metadata: { request_id: 'q2' } }, "the new run's thinking follows the superseded complete")
  neverInterleaved(t, frames)
  const second = up.requests.at(-1) as RecordedRequest
  t.same(transcript(second), [SYSTEM, 'user:first', `assistant:${superseded.content}`, 'user:no, this'], 'the new run sees what was said so far')

  // A retried interrupt with the same id cancels nothing more.
  const seen = alice.frames.length
  alice.send({ type: 'chat', session_id: 's', content: 'no, this', id: 'q2', on_busy: 'interrupt' })
  alice.send({ type: 'ping' })
  await alice.next((frame) => frame.type === 'pong')
  t.same(alice.frames.slice(seen).map((frame) => frame.type), ['pong'], 'the retry is attached, nothing is cancelled or started')
  t.equal(up.requests.length, 2)
})

both('on_busy enqueue: queued with its position, runs start in order, cancel ends only the active one, MAX_QUEUED_RUNS', async (t, startWithUpstream) => {
  const { up, client, baseUrl } = await startWithUpstream(t, slow('x'), { MAX_QUEUED_RUNS: 2 })
  const alice = await client()
  alice.send({ type: 'chat', session_id: 'q', content: 'one', id: 'c1' })
  await up.nextRequest()
  up.script(() => ({ steps: textSteps('queued answer') }))
  alice.send({ type: 'chat', session_id: 'q', content: 'two', id: 'c2', on_busy: 'enqueue' })
  const queued2 = await alice.next((frame) => frame.content === 'queued')
  alice.send({ type: 'chat', session_id: 'q', content: 'three', id: 'c3', on_busy: 'enqueue' })

  const queued3 = await alice.next((frame) => frame.content === 'queued' && frame.metadata?.request_id === 'c3')
  t.match(queued2, { type: 'status', seq: Number, metadata: { position: 1, request_id: 'c2' } })
  t.match(queued3, { metadata: { position: 2 } })
  alice.send({ type: 'chat', session_id: 'q', content: 'four', id: 'c4', on_busy: 'enqueue' })
  const refused = await alice.next((frame) => frame.type === 'error')
  t.match(refused, { metadata: { code: 'busy', request_id: 'c4' } }, 'beyond MAX_QUEUED_RUNS: busy')
  t.equal(refused.seq, undefined)

  const listed = await rest(baseUrl, '/v1/sessions')
  t.match(listed.body.sessions[0], { session_id: 'q', title: 'one', active_run: runOf(alice.frames[0]) })

  alice.send({ type: 'cancel', session_id: 'q' })
  const completes: Frame[] = []
  for (let i = 0; i < 3; i++) completes.push(await alice.next((frame) => frame.type === 'complete' && !completes.includes(frame)))
  t.same(
    completes.map((frame) => [frame.metadata?.request_id, frame.metadata?.finish_reason]),
    [['c1', 'cancelled'], ['c2', 'stop'], ['c3', 'stop']],
    'cancel ended the active run only; the queued ones ran in order',
  )
  t.same(runOf(completes[1]), runOf(queued2), 'the queued run keeps the run id it was announced with')
  neverInterleaved(t, sequenced(alice))
  t.same(transcript(up.requests[2] as RecordedRequest).slice(-3), ['user:two', 'assistant:queued answer', 'user:three'], 'each queued run sees the answers before it')
})

both('a queued run without an idempotency key', async (t, startWithUpstream) => {
  const { up, client } = await startWithUpstream(t, slow('y'))
  const alice = await client()
  alice.send({ type: 'chat', session_id: 'n', content: 'first' })
  await up.nextRequest()
  alice.send({ type: 'chat', session_id: 'n', content: 'no id', on_busy: 'enqueue' })
  const queued = await alice.next((frame) => frame.content === 'queued')
  t.same(Object.keys(queued.metadata ?? {}), ['run_id', 'position'])
})

both('regenerate answers the last user message again, without the answer it replaces', async (t, startWithUpstream) => {
  const { up, client, baseUrl, app } = await startWithUpstream(t, () => ({ steps: textSteps('first try') }))
  const alice = await client()
  alice.send({ type: 'chat', session_id: 'r', content: 'hello' })
  await alice.untilComplete()
  up.script(() => ({ steps: textSteps('second try') }))
  alice.send({ type: 'regenerate', session_id: 'r', id: 'g1' })
  const frames = await alice.untilComplete()
  t.match(frames[0], { content: 'thinking', metadata: { request_id: 'g1' } })
  t.match(frames.at(-1), { content: 'second try', metadata: { request_id: 'g1' } })
  t.same(transcript(up.requests[1] as RecordedRequest), [SYSTEM, 'user:hello'], 'the upstream sees exactly what the client now sees')
  const { body } = await rest(baseUrl, '/v1/sessions/r')
  t.same(body.messages.map((m: any) => `${m.role}:${m.content}`), ['user:hello', 'assistant:second try'])
  t.equal(body.messages[1].run_id, runOf(frames[0]))
  t.equal(body.active_run, null)

  alice.send({ type: 'regenerate', session_id: 'nope' })
  t.match(await alice.next((frame) => frame.type === 'error'), { session_id: 'nope', metadata: { code: 'not_found' } })

  // A session with no user message yet (created, its first run never begun).
  await app.backend.sessions.open('alice', 'empty', 100)
  alice.send({ type: 'regenerate', session_id: 'empty' })
  t.match(await alice.next((frame) => frame.type === 'error'), { session_id: 'empty', content: 'nothing to regenerate', metadata: { code: 'not_found' } })
})

both('chat.edit cuts the history before that user message and answers the new content', async (t, startWithUpstream) => {
  const { up, client, baseUrl } = await startWithUpstream(t, (request) => ({ steps: textSteps(`answer ${request.index}`) }))
  const alice = await client()
  for (const content of ['one', 'two', 'three']) {
    alice.send({ type: 'chat', session_id: 'e', content })
    await alice.untilComplete()
  }
  const before = (await rest(baseUrl, '/v1/sessions/e')).body
  t.equal(new Set(before.messages.map((m: any) => m.id)).size, 6, 'every message has its own id')
  const two = before.messages.find((m: any) => m.content === 'two')
  alice.send({ type: 'chat', session_id: 'e', content: 'TWO', edit: two.id, id: 'ed' })
  await alice.untilComplete()
  t.same(transcript(up.requests[3] as RecordedRequest), [SYSTEM, 'user:one', 'assistant:answer 0', 'user:TWO'])
  const after = (await rest(baseUrl, '/v1/sessions/e')).body
  t.same(after.messages.map((m: any) => m.content), ['one', 'answer 0', 'TWO', 'answer 3'])
  t.equal(after.messages[0].id, before.messages[0].id, 'ids before the edit are kept')

  alice.send({ type: 'chat', session_id: 'e', content: 'x', edit: 'no-such-message', id: 'bad' })
  t.match(await alice.next((frame) => frame.type === 'error'), { metadata: { code: 'not_found', request_id: 'bad' } })
  alice.send({ type: 'chat', session_id: 'never', content: 'x', edit: two.id })
  t.match(await alice.next((frame) => frame.type === 'error'), { session_id: 'never', metadata: { code: 'not_found' } })
  t.equal((await rest(baseUrl, '/v1/sessions/never')).status, 404, 'an edit never creates a session')
})

both('GET /v1/sessions: the caller\'s sessions, newest first, with titles, cursor pages of 1..100', async (t, startWithUpstream) => {
  const { client, baseUrl } = await startWithUpstream(t, () => ({ steps: textSteps('ok') }))
  const alice = await client()
  const bob = await client('bob')
  for (const id of ['s1', 's2', 's3']) {
    alice.send({ type: 'chat', session_id: id, content: `about ${id} `.repeat(20) })
    await alice.untilComplete()
  }
  bob.send({ type: 'chat', session_id: 's1', content: 'mine' })
  await bob.untilComplete()
  alice.send({ type: 'chat', session_id: 's1', content: 'again' })
  await alice.untilComplete()

  const all = await rest(baseUrl, '/v1/sessions')
  t.equal(all.status, 200)
  t.same(all.body.sessions.map((s: any) => s.session_id), ['s1', 's3', 's2'], 'most recently updated first')
  t.equal(all.body.sessions[0].title, `about s1 `.repeat(20).trim().slice(0, 80), 'the first user message, cut to 80 characters')
  t.equal(all.body.next_cursor, null)
  const first = await rest(baseUrl, '/v1/sessions?limit=2')
  t.same(first.body.sessions.map((s: any) => s.session_id), ['s1', 's3'])
  const second = await rest(baseUrl, `/v1/sessions?limit=2&cursor=${first.body.next_cursor}`)
  t.same(second.body.sessions.map((s: any) => s.session_id), ['s2'])
  t.equal(second.body.next_cursor, null)
  t.same((await rest(baseUrl, '/v1/sessions', 'bob')).body.sessions.map((s: any) => [s.session_id, s.title]), [['s1', 'mine']], 'only the caller\'s own')
  for (const bad of ['limit=0', 'limit=101', 'limit=x']) t.equal((await rest(baseUrl, `/v1/sessions?${bad}`)).status, 400, bad)
  t.equal((await rest(baseUrl, '/v1/sessions?cursor=garbage')).body.sessions.length, 3, 'a cursor we did not make starts from the top')
})
