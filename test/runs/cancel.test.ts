import t from 'tap'
import { textSteps } from '../helpers/fake-upstream.ts'
import { startWithUpstream, tokensOf, contentOf, transcript, serverFrame } from './helpers.ts'

const slow = (request: { index: number }) =>
  request.index === 0 ? { steps: textSteps('one two three four five six seven eight nine ten', { delayMs: 40 }) } : { steps: textSteps('next') }

t.test('cancel closes the upstream request at once, then status:cancelled and complete with the partial text', async (t) => {
  const { up, client } = await startWithUpstream(t, slow)
  const alice = await client()
  alice.send({ type: 'chat', content: 'count', id: 'c-1' })
  const thinking = await alice.nextOfType('status')
  const sessionId = thinking.session_id
  await alice.nextOfType('token')
  await alice.nextOfType('token')
  const request = up.requests[0]!
  const sentAt = performance.now()
  alice.send({ type: 'cancel', session_id: sessionId })
  await alice.untilComplete()
  const frames = [...alice.frames]
  await request.closed
  t.equal(request.closedByClient, true, 'we closed it, not the upstream')
  // The deadline is 100 ms (typically ~2 ms here); the margin absorbs a loaded machine
  // running client, service and upstream in this one process.
  const latency = request.closedAt! - sentAt
  t.ok(latency < 250, `upstream closed ${latency.toFixed(1)} ms after cancel (deadline 100 ms + margin)`)

  const cancelledAt = frames.findIndex((f) => f.type === 'status' && contentOf(f) === 'cancelled')
  t.ok(cancelledAt > 0, 'status:cancelled sent')
  t.same(frames.slice(cancelledAt + 1).map((f) => f.type), ['complete'], 'no token after status:cancelled, then complete')
  const complete = frames.at(-1)!
  t.match(complete, { metadata: { finish_reason: 'cancelled', request_id: 'c-1', run_id: thinking.metadata?.run_id } })
  const partial = tokensOf(frames)
  t.ok(partial.length > 0 && partial.length < 'one two three four five six seven eight nine ten'.length, `partial: ${JSON.stringify(partial)}`)
  t.equal(contentOf(complete), partial)
  for (const frame of frames) t.ok(serverFrame.Check(frame), `${frame.type} ${contentOf(frame)} matches ServerFrame`)
  t.same(frames.map((f) => f.seq), frames.map((_, i) => i + 1))

  // Nothing more arrives for that run.
  alice.send({ type: 'ping' })
  t.same(await alice.next(), { type: 'pong', session_id: '' })

  alice.send({ type: 'chat', content: 'go on', session_id: sessionId })
  await alice.untilComplete()
  t.same(transcript(up.requests[1]!).slice(1), ['user:count', `assistant:${partial}`, 'user:go on'], 'the partial answer is in history')
})

t.test('cancel without session_id targets the last session the connection used', async (t) => {
  const { up, client } = await startWithUpstream(t, slow)
  const alice = await client()
  alice.send({ type: 'chat', content: 'count' })
  await alice.nextOfType('token')
  alice.send({ type: 'cancel' })
  const frames = await alice.untilComplete()
  t.match(frames.at(-1), { metadata: { finish_reason: 'cancelled' } })
  await up.requests[0]!.closed
  t.equal(up.requests[0]!.closedByClient, true)
})

t.test('cancel with no active run: no_active_run', async (t) => {
  const { client } = await startWithUpstream(t)
  const alice = await client()
  alice.send({ type: 'cancel' })
  t.match(await alice.next(), { type: 'error', session_id: '', metadata: { code: 'no_active_run', retryable: false } })
  alice.send({ type: 'chat', content: 'hi', session_id: 'done' })
  await alice.untilComplete()
  alice.send({ type: 'cancel', session_id: 'done' })
  const error = await alice.next()
  t.match(error, { type: 'error', session_id: 'done', metadata: { code: 'no_active_run', retryable: false } })
  t.notOk('seq' in error)
  t.ok(serverFrame.Check(error))
})

t.test("cancel of another user's session id: not_found (their own has none), and the run goes on", async (t) => {
  const { client } = await startWithUpstream(t, slow)
  const alice = await client()
  const mallory = await client('mallory')
  alice.send({ type: 'chat', content: 'count', session_id: 'alices' })
  await alice.nextOfType('token')
  mallory.send({ type: 'cancel', session_id: 'alices' })
  const error = await mallory.next()
  t.same(error, { type: 'error', session_id: 'alices', content: 'unknown session', metadata: { code: 'not_found', retryable: false } })
  const frames = await alice.untilComplete()
  t.match(frames.at(-1), { metadata: { finish_reason: 'stop' } })
})

t.test('cancel of an unknown session: not_found', async (t) => {
  const { client } = await startWithUpstream(t)
  const alice = await client()
  alice.send({ type: 'cancel', session_id: 'nobody-here' })
  t.match(await alice.next(), { type: 'error', session_id: 'nobody-here', metadata: { code: 'not_found' } })
})

t.test('cancel closes a stalled upstream request too (not only when the next chunk comes)', async (t) => {
  const { up, client } = await startWithUpstream(t, () => ({ steps: [{ text: 'first' }, { stall: true }] }))
  const alice = await client()
  alice.send({ type: 'chat', content: 'hi', session_id: 'stalled' })
  await alice.nextOfType('token')
  const request = up.requests[0]!
  const sentAt = performance.now()
  alice.send({ type: 'cancel', session_id: 'stalled' })
  await request.closed
  t.equal(request.closedByClient, true)
  t.ok(request.closedAt! - sentAt < 250, `closed ${(request.closedAt! - sentAt).toFixed(1)} ms after cancel`)
  const frames = await alice.untilComplete()
  t.same(frames.map((f) => `${f.type}:${contentOf(f)}`), ['status:cancelled', 'complete:first'])
})

t.test('cancel while the upstream has not answered yet', async (t) => {
  const { up, client } = await startWithUpstream(t, () => ({ steps: [{ delayMs: 5000 }, ...textSteps('late')] }))
  const alice = await client()
  alice.send({ type: 'chat', content: 'hi', session_id: 'waiting' })
  await alice.nextOfType('status')
  const request = await up.nextRequest()
  alice.send({ type: 'cancel', session_id: 'waiting' })
  const frames = await alice.untilComplete()
  t.same(frames.map((f) => `${f.type}:${contentOf(f)}`), ['status:cancelled', 'complete:'])
  await request.closed
  t.equal(request.closedByClient, true)
})
