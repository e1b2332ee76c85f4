import t from 'tap'
import { textSteps } from '../helpers/fake-upstream.ts'
import { startWithUpstream, contentOf, serverFrame, tokensOf } from './helpers.ts'
import { sleep } from '../ws/util.ts'

const slow = () => ({ steps: textSteps('one two three four five six', { delayMs: 40 }) })

t.test('chat while a run is active: busy, retryable, retry_after_ms; the run is untouched', async (t) => {
  const { up, client } = await startWithUpstream(t, slow)
  const alice = await client()
  alice.send({ type: 'chat', content: 'first', session_id: 'busy' })
  const thinking = await alice.nextOfType('status')
  alice.send({ type: 'chat', content: 'second', session_id: 'busy', id: 'second-try' })
  const busy = await alice.nextOfType('error')
  t.same(busy, {
    type: 'error',
    session_id: 'busy',
    content: busy.type === 'error' ? contentOf(busy) : '',
    metadata: { code: 'busy', retryable: true, retry_after_ms: 1000, request_id: 'second-try', run_id: thinking.metadata?.run_id },
  })
  t.notOk('seq' in busy, 'an answer that starts no run carries no seq')
  t.ok(serverFrame.Check(busy))
  await alice.untilComplete()
  t.equal(up.requests.length, 1, 'no second upstream request')
  const seqs = alice.frames.filter((f) => f.type !== 'error').map((f) => f.seq)
  t.same(seqs, seqs.map((_, i) => i + 1), 'the busy answer took no seq')

  alice.send({ type: 'chat', content: 'second', session_id: 'busy', id: 'second-try' })
  const retried = await alice.untilComplete()
  t.match(retried[0], { type: 'status', content: 'thinking', metadata: { request_id: 'second-try' } }, 'the retry after complete is served')
  t.equal(up.requests.length, 2)
})

t.test('a chat id already seen: no new upstream request; the sender is attached to that run', async (t) => {
  const { up, client } = await startWithUpstream(t, slow)
  const alice = await client()
  alice.send({ type: 'chat', content: 'hello', session_id: 'idem', id: 'once' })
  await alice.nextOfType('token')

  t.test('a new connection retrying mid-run gets the run from its thinking', async (t) => {
    const retry = await client()
    retry.send({ type: 'chat', content: 'hello', session_id: 'idem', id: 'once' })
    const frames = await retry.untilComplete()
    t.match(frames[0], { type: 'status', content: 'thinking', seq: 1, metadata: { request_id: 'once' } })
    t.equal(tokensOf(frames), 'one two three four five six')
    await alice.untilComplete()
    t.same(retry.raw, alice.raw, 'the same frames, byte for byte')
    t.equal(up.requests.length, 1, 'never billed twice')
  })

  t.test('a retry after the run ended replays it; a new id starts a new run', async (t) => {
    const late = await client()
    late.send({ type: 'chat', content: 'hello', session_id: 'idem', id: 'once' })
    const frames = await late.untilComplete()
    t.same(late.raw, alice.raw.slice(0, frames.length))
    t.equal(up.requests.length, 1)

    // The same connection retrying an id it already watches gets nothing new.
    late.send({ type: 'chat', content: 'hello', session_id: 'idem', id: 'once' })
    late.send({ type: 'ping' })
    t.same(await late.next(), { type: 'pong', session_id: '' })
    t.equal(up.requests.length, 1)

    late.send({ type: 'chat', content: 'again', session_id: 'idem', id: 'twice' })
    const next = await late.untilComplete()
    t.match(next[0], { seq: frames.length + 1, metadata: { request_id: 'twice' } })
    await sleep(10)
    t.equal(up.requests.length, 2)
  })
})

t.test('a chat id whose events are no longer held: history_gone', async (t) => {
  // Paced: six events of their own, more than the log holds (ready together, they would be one token).
  const { up, client } = await startWithUpstream(t, () => ({ steps: textSteps('a b c d e f', { delayMs: 20 }) }), { RESUME_BUFFER_EVENTS: 3 })
  const alice = await client()
  alice.send({ type: 'chat', content: 'hi', session_id: 'gone', id: 'old' })
  await alice.untilComplete()
  const other = await client()
  other.send({ type: 'chat', content: 'hi', session_id: 'gone', id: 'old' })
  t.match(await other.next(), { type: 'error', session_id: 'gone', metadata: { code: 'history_gone', request_id: 'old' } })
  t.equal(up.requests.length, 1)
})

t.test("ownership (1.1): another user's chat with the same session id opens a session of their own", async (t) => {
  const { up, client } = await startWithUpstream(t)
  const alice = await client()
  const mallory = await client('mallory')
  alice.send({ type: 'chat', content: 'mine', session_id: 'private' })
  await alice.untilComplete()
  const seen = alice.frames.length
  mallory.send({ type: 'chat', content: 'let me in', session_id: 'private', id: 'm1' })
  const frames = await mallory.untilComplete()
  t.match(frames[0], { type: 'status', content: 'thinking', session_id: 'private', seq: 1 }, 'a new session: seq starts at 1')
  t.equal(up.requests.length, 2)
  t.notMatch(JSON.stringify(up.requests[1]), /mine/, "mallory's run never sees alice's history")
  await sleep(20)
  t.equal(alice.frames.length, seen, 'alice saw nothing of it')
})

t.test('a second tab of the same user, via resume, sees the same events live', async (t) => {
  const { client } = await startWithUpstream(t, slow)
  const one = await client()
  const two = await client()
  one.send({ type: 'chat', content: 'hi', session_id: 'shared' })
  await one.nextOfType('status')
  two.send({ type: 'resume', session_id: 'shared', last_seq: 0 })
  await one.untilComplete()
  await two.untilComplete()
  t.same(two.raw.filter((raw) => !raw.includes('"content":"resumed"')), one.raw)
})

t.test('sessions are per user even with the same name', async (t) => {
  const { client } = await startWithUpstream(t)
  const alice = await client()
  alice.send({ type: 'chat', content: 'hi' })
  const a = await alice.untilComplete()
  alice.send({ type: 'chat', content: 'hi' })
  const b = await alice.untilComplete()
  t.not(a[0]!.session_id, b[0]!.session_id, 'a chat without session_id starts a new session each time')
  t.equal(b[0]!.seq, 1)
})
