import t from 'tap'
import { textSteps } from '../helpers/fake-upstream.ts'
import type { Frame } from '../helpers/ws-client.ts'
import { startWithUpstream, contentOf, serverFrame, tokensOf } from './helpers.ts'
import { sleep } from '../ws/util.ts'

const words = (n: number) => Array.from({ length: n }, (_, i) => `w${i}`).join(' ')
const isResumed = (raw: string) => (JSON.parse(raw) as Frame).type === 'status' && raw.includes('"content":"resumed"')

t.test('RESUME_GRACE_MS=0: a disconnect aborts the upstream at once', async (t) => {
  const { up, client } = await startWithUpstream(t, () => ({ steps: textSteps(words(20), { delayMs: 50 }) }), { RESUME_GRACE_MS: 0 })
  const alice = await client()
  alice.send({ type: 'chat', content: 'go', session_id: 'dropped' })
  await alice.nextOfType('token')
  const request = up.requests[0]!
  const droppedAt = performance.now()
  alice.socket.terminate()
  await request.closed
  t.equal(request.closedByClient, true)
  t.ok(request.closedAt! - droppedAt < 250, `upstream closed ${(request.closedAt! - droppedAt).toFixed(1)} ms after the drop`)

  const again = await client()
  await sleep(20)
  again.send({ type: 'resume', session_id: 'dropped', last_seq: 0 })
  const resumed = await again.next((f) => contentOf(f) === 'resumed')
  t.same(resumed.metadata, { last_seq: again.frames.at(-2)!.seq, active_run: null, pending: [] })
  const replay = again.frames.slice(0, -1)
  t.same(replay.slice(-2).map((f) => `${f.type}:${contentOf(f) === 'cancelled' ? 'cancelled' : f.type}`), ['status:cancelled', 'complete:complete'])
  t.match(replay.at(-1), { metadata: { finish_reason: 'cancelled', reason: 'disconnect' } })
})

t.test('resume within the grace: every missed event exactly once, byte-identical, then resumed, then live', async (t) => {
  const { up, client } = await startWithUpstream(t, () => ({ steps: textSteps(words(12), { delayMs: 40 }) }), { RESUME_GRACE_MS: 2000 })
  const first = await client()
  first.send({ type: 'chat', content: 'go', session_id: 'tabs', id: 'req-tabs' })
  const thinking = await first.nextOfType('status')
  const runId = thinking.metadata?.run_id as string

  // A second tab of the same user watches the same run live.
  const tab = await client()
  tab.send({ type: 'resume', session_id: 'tabs', last_seq: 0 })
  await tab.next((f) => contentOf(f) === 'resumed')

  await first.nextOfType('token')
  await first.nextOfType('token')
  first.socket.terminate()
  await first.closed
  const lastSeen = first.frames.at(-1)!.seq as number
  await sleep(150) // tokens flow meanwhile

  const back = await client()
  back.send({ type: 'resume', session_id: 'tabs', last_seq: lastSeen })
  await back.untilComplete()
  await tab.untilComplete()

  const resumedAt = back.raw.findIndex(isResumed)
  t.ok(resumedAt > 0, 'missed events came before status:resumed')
  const replayed = back.frames.slice(0, resumedAt)
  t.same(replayed.map((f) => f.seq), replayed.map((_, i) => lastSeen + 1 + i), 'the missed events, in order, from last_seq + 1')
  const resumed = back.frames[resumedAt]!
  t.same(resumed, { type: 'status', session_id: 'tabs', content: 'resumed', metadata: { last_seq: replayed.at(-1)!.seq, active_run: runId, pending: [] } })
  t.ok(serverFrame.Check(resumed), 'status:resumed matches ServerFrame')
  t.notOk('seq' in resumed)

  const firstAndBack = [...first.raw, ...back.raw.filter((raw) => !isResumed(raw))]
  const live = tab.raw.filter((raw) => !isResumed(raw))
  t.same(firstAndBack, live, 'byte-identical to what the other tab saw live, each event once')
  t.same(live.map((raw) => (JSON.parse(raw) as Frame).seq), live.map((_, i) => i + 1))
  t.match(JSON.parse(live.at(-1)!), { type: 'complete', content: words(12), metadata: { finish_reason: 'stop' } })
  t.equal(up.requests.length, 1)
  t.equal(up.requests[0]!.closedByClient, false, 'the run was never aborted')
})

t.test('resume within the grace with nobody else watching keeps the run alive', async (t) => {
  // The run (~1.2 s) outlasts the grace (600 ms from the drop): only the resume keeps it going.
  const GRACE = 600
  const { up, client } = await startWithUpstream(t, () => ({ steps: textSteps(words(30), { delayMs: 40 }) }), { RESUME_GRACE_MS: GRACE })
  const first = await client()
  first.send({ type: 'chat', content: 'go', session_id: 'alone' })
  await first.nextOfType('token')
  const droppedAt = performance.now()
  first.socket.terminate()
  await first.closed
  await sleep(100)
  const back = await client()
  back.send({ type: 'resume', session_id: 'alone', last_seq: first.frames.at(-1)!.seq as number })
  const rest = await back.untilComplete()
  t.ok(performance.now() - droppedAt > GRACE + 100, 'the run ended well after the grace')
  t.match(rest.at(-1), { type: 'complete', metadata: { finish_reason: 'stop' } })
  await up.requests[0]!.closed
  t.equal(up.requests[0]!.closedByClient, false, 'the upstream was never aborted')
  const all = [...first.frames, ...back.frames.filter((f) => contentOf(f) !== 'resumed')]
  t.same(all.map((f) => f.seq), all.map((_, i) => i + 1), 'no gap, no duplicate')
  t.equal(tokensOf(all), words(30))

  // A full replay afterwards is byte-identical to what was delivered.
  const later = await client()
  later.send({ type: 'resume', session_id: 'alone', last_seq: 0 })
  await later.next((f) => contentOf(f) === 'resumed')
  t.same(later.raw.filter((raw) => !isResumed(raw)), [...first.raw, ...back.raw.filter((raw) => !isResumed(raw))])
  t.match(later.frames.at(-1), { metadata: { last_seq: all.length, active_run: null } })
})

t.test('nobody resumes: the upstream is aborted after the grace', async (t) => {
  const GRACE = 300
  const { up, client } = await startWithUpstream(t, () => ({ steps: textSteps(words(40), { delayMs: 50 }) }), { RESUME_GRACE_MS: GRACE })
  const alice = await client()
  alice.send({ type: 'chat', content: 'go', session_id: 'orphan' })
  await alice.nextOfType('token')
  const droppedAt = performance.now()
  alice.socket.terminate()
  const request = up.requests[0]!
  await request.closed
  const after = request.closedAt! - droppedAt
  t.equal(request.closedByClient, true)
  t.ok(after >= GRACE - 20, `not before the grace: ${after.toFixed(0)} ms`)
  t.ok(after < GRACE + 1000, 'soon after the grace')

  const later = await client()
  later.send({ type: 'resume', session_id: 'orphan', last_seq: 0 })
  await later.next((f) => contentOf(f) === 'resumed')
  const replay = later.frames.slice(0, -1)
  t.match(replay.at(-2), { type: 'status', content: 'cancelled' })
  t.match(replay.at(-1), { type: 'complete', metadata: { finish_reason: 'cancelled', reason: 'disconnect' } })
  t.equal(contentOf(replay.at(-1)), tokensOf(replay))
})

t.test('resume errors: not_found (another user\'s id alike), history_gone', async (t) => {
  // Paced, so that the deltas are events of their own (ready together, they would be one token).
  const { client } = await startWithUpstream(t, () => ({ steps: textSteps(words(6), { delayMs: 20 }) }), { RESUME_BUFFER_EVENTS: 3 })
  const alice = await client()
  const mallory = await client('mallory')
  alice.send({ type: 'chat', content: 'go', session_id: 'held' })
  const run = await alice.untilComplete()
  const lastSeq = run.at(-1)!.seq as number
  t.ok(lastSeq >= 6, `thinking, the tokens, complete: more than the log holds (${lastSeq})`)

  const expectError = async (client: typeof alice, frame: object, code: string) => {
    client.send(frame)
    const error = await client.next()
    t.match(error, { type: 'error', metadata: { code, retryable: false } }, `${JSON.stringify(frame)}: ${code}`)
    t.notOk('seq' in error)
    t.ok(serverFrame.Check(error))
    return error
  }
  t.equal((await expectError(alice, { type: 'resume', session_id: 'nope', last_seq: 0 }, 'not_found')).session_id, 'nope')
  t.same(await expectError(mallory, { type: 'resume', session_id: 'held', last_seq: 0 }, 'not_found'), {
    type: 'error',
    session_id: 'held',
    content: 'unknown session',
    metadata: { code: 'not_found', retryable: false },
  })
  t.equal(mallory.frames.length, 1, 'the other user learns nothing else')
  await expectError(alice, { type: 'resume', session_id: 'held', last_seq: 0 }, 'history_gone')
  await expectError(alice, { type: 'resume', session_id: 'held', last_seq: lastSeq - 4 }, 'history_gone')
  await expectError(alice, { type: 'resume', session_id: 'held', last_seq: lastSeq + 1 }, 'history_gone')

  // The last RESUME_BUFFER_EVENTS are held.
  alice.send({ type: 'resume', session_id: 'held', last_seq: lastSeq - 3 })
  const replay = [await alice.next(), await alice.next(), await alice.next(), await alice.next()]
  t.same(replay.map((f) => f.seq ?? contentOf(f)), [lastSeq - 2, lastSeq - 1, lastSeq, 'resumed'])
  t.equal(JSON.stringify(replay[2]), JSON.stringify(run.at(-1)), 'same frame as first sent')

  alice.send({ type: 'resume', session_id: 'held', last_seq: lastSeq })
  t.same(await alice.next(), { type: 'status', session_id: 'held', content: 'resumed', metadata: { last_seq: lastSeq, active_run: null, pending: [] } })
})

t.test('resuming twice on one connection delivers each live event once', async (t) => {
  const { client } = await startWithUpstream(t, () => ({ steps: textSteps(words(8), { delayMs: 30 }) }))
  const alice = await client()
  alice.send({ type: 'chat', content: 'go', session_id: 'twice' })
  await alice.nextOfType('token')
  alice.send({ type: 'resume', session_id: 'twice', last_seq: 1 })
  await alice.untilComplete()
  const events = alice.frames.filter((f) => contentOf(f) !== 'resumed')
  const seqs = events.map((f) => f.seq as number)
  const firstRepeat = seqs.findIndex((seq, i) => i > 0 && seq <= (seqs[i - 1] as number))
  // The replay repeats what this connection already had (it asked for it), then live events follow once.
  const afterReplay = seqs.slice(firstRepeat)
  t.same(afterReplay, afterReplay.map((_, i) => 2 + i), `replay from 2 then live without duplicates: ${seqs.join(',')}`)
  t.equal(alice.frames.filter((f) => f.type === 'complete').length, 1)
})
