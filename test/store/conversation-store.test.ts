// The store's side of conversation control (protocol.md §2, §4, revision 1.1), the same on the
// memory and on the Redis backend: queued runs (on_busy enqueue / interrupt), regenerate and edit,
// the title, the session list, clearQueue, and the queued run finishRun makes active.
import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { serializeEvent } from '../../src/protocol/serialize.ts'
import type { StatusQueued, UnsequencedRunEvent } from '../../src/protocol/index.ts'
import type { Backend, BeginRun, FinishRun, HistoryMessage, RunInput, SessionRef } from '../../src/store/types.ts'
import { storeBackends } from './backends.ts'

const user = (content: string, id?: string): HistoryMessage => ({ role: 'user', content, ...(id ? { id } : {}) })
const assistant = (content: string, id?: string): HistoryMessage => ({ role: 'assistant', content, ...(id ? { id } : {}) })
const message = (content: string, id?: string): RunInput => ({ kind: 'message', message: user(content, id) })
const edit = (messageId: string, content: string, id?: string): RunInput => ({ kind: 'edit', messageId, message: user(content, id) })
const regenerate: RunInput = { kind: 'regenerate' }

const begin = (runId: string, input: RunInput, extra: Partial<BeginRun> = {}): BeginRun => ({
  runId,
  instanceId: 'i1',
  leaseMs: 60_000,
  input,
  maxMessages: 100,
  ...extra,
})
const queuedEvent = (sessionId: string, runId: string, requestId?: string): Omit<StatusQueued, 'seq'> => ({
  type: 'status',
  session_id: sessionId,
  content: 'queued',
  metadata: { run_id: runId, position: 0, ...(requestId ? { request_id: requestId } : {}) },
})
/** on_busy enqueue (or interrupt), with room for three and its `status:queued`. */
const enqueue = (ref: SessionRef, runId: string, input: RunInput, extra: Partial<BeginRun> = {}): BeginRun =>
  begin(runId, input, { onBusy: 'enqueue', maxQueued: 3, queuedEvent: queuedEvent(ref.id, runId, extra.requestId), ...extra })
const complete = (sessionId: string, runId: string): UnsequencedRunEvent => ({
  type: 'complete',
  session_id: sessionId,
  content: 'done',
  metadata: { run_id: runId, finish_reason: 'stop' },
})
const token = (sessionId: string, runId: string, text: string): UnsequencedRunEvent => ({ type: 'token', session_id: sessionId, content: text, metadata: { run_id: runId } })
const finish = (ref: SessionRef, runId: string, messages: HistoryMessage[] = [], extra: Partial<FinishRun> = {}): FinishRun => ({
  runId,
  instanceId: 'i2',
  leaseMs: 60_000,
  event: complete(ref.id, runId),
  messages,
  maxMessages: 100,
  ...extra,
})

const backends = storeBackends

/** Each test on each backend; what each body returns, by backend. */
function both<T>(name: string, body: (t: Test, backend: Backend) => Promise<T>, after?: (t: Test, results: Map<string, T>) => void): void {
  t.test(name, async (t) => {
    const results = new Map<string, T>()
    for (const [kind, make] of backends) {
      await t.test(kind, async (t) => {
        const backend = await make(t)
        if (backend) results.set(kind, await body(t, backend))
      })
    }
    after?.(t, results)
  })
}

async function open(backend: Backend, id: string, owner = 'alice'): Promise<SessionRef> {
  const opened = await backend.sessions.open(owner, id, 100)
  if (opened.kind !== 'open') throw new Error(`${id}: too many`)
  return { owner, id, gen: opened.session.gen }
}

const frames = async (backend: Backend, ref: SessionRef) => (await backend.events.read(ref, 0)).events.map((event) => event.frame)

both(
  'queue order: enqueue appends, interrupt goes first, busy at maxQueued; each queued run logged with its position',
  async (t, backend) => {
    const { sessions } = backend
    const ref = await open(backend, 'q')
    t.match(await sessions.beginRun(ref, begin('r1', message('one', 'm1'), { requestId: 'q1' })), { kind: 'started', runId: 'r1' })
    t.same(await sessions.beginRun(ref, enqueue(ref, 'r2', message('two', 'm2'), { requestId: 'q2' })), { kind: 'queued', runId: 'r2', position: 1, startAfterSeq: 0 })
    await sessions.append(ref, 'r1', token('q', 'r1', 'a1'))
    t.same(await sessions.beginRun(ref, enqueue(ref, 'r3', message('three', 'm3'), { reasoning: true })), { kind: 'queued', runId: 'r3', position: 2, startAfterSeq: 2 }, 'enqueue: behind the others')
    t.same(await sessions.beginRun(ref, enqueue(ref, 'r4', message('four', 'm4'), { onBusy: 'interrupt' })), { kind: 'queued', runId: 'r4', position: 1, startAfterSeq: 3 }, 'interrupt: first in line')
    const active = await sessions.activeRun(ref)
    t.same(await sessions.beginRun(ref, enqueue(ref, 'r5', message('five'))), { kind: 'busy', active }, 'maxQueued queued already: busy')
    t.same(await sessions.beginRun(ref, enqueue(ref, 'r5', message('five'), { onBusy: 'interrupt' })), { kind: 'busy', active }, 'interrupt too')
    t.same(await sessions.beginRun(ref, begin('r5', message('five'), { onBusy: 'enqueue' })), { kind: 'busy', active }, 'no maxQueued: no queue')
    t.same(await sessions.beginRun(ref, enqueue(ref, 'r5', message('five'), { onBusy: 'reject', maxQueued: 10 })), { kind: 'busy', active }, 'reject')
    t.same(await sessions.beginRun(ref, begin('r5', message('five'), { maxQueued: 10 })), { kind: 'busy', active }, 'reject is the default')
    t.same(await sessions.beginRun(ref, enqueue(ref, 'r6', message('again'), { requestId: 'q2' })), { kind: 'duplicate', runId: 'r2', startAfterSeq: 0 }, 'the request id of a queued run: attach to it')
    const logged = await frames(backend, ref)
    t.same(logged, [
      serializeEvent({ ...queuedEvent('q', 'r2', 'q2'), metadata: { run_id: 'r2', position: 1, request_id: 'q2' } }, 1),
      serializeEvent(token('q', 'r1', 'a1'), 2),
      serializeEvent({ ...queuedEvent('q', 'r3'), metadata: { run_id: 'r3', position: 2 } }, 3),
      serializeEvent({ ...queuedEvent('q', 'r4'), metadata: { run_id: 'r4', position: 1 } }, 4),
    ], 'status:queued logged at once, with the position it got')

    // Each finish makes the first in line active, held by the finishing instance.
    const first = await sessions.finishRun(ref, finish(ref, 'r1', [assistant('a1')]))
    t.same(first, {
      event: { seq: 5, frame: serializeEvent(complete('q', 'r1'), 5) },
      next: { runId: 'r4', startAfterSeq: 5, history: [user('one', 'm1'), assistant('a1')], userMessage: user('four', 'm4') },
    })
    t.match(await sessions.activeRun(ref), { runId: 'r4', instanceId: 'i2', startAfterSeq: 5 })
    t.match((await sessions.get('alice', 'q'))?.messages, [user('one', 'm1'), assistant('a1'), user('four', 'm4')], 'its message stored as it starts')
    t.same(await sessions.beginRun(ref, begin('r6', message('x'), { requestId: 'q2' })), { kind: 'duplicate', runId: 'r2', startAfterSeq: 0 }, 'still queued')
    const second = await sessions.finishRun(ref, finish(ref, 'r4', [assistant('a4')]))
    t.same(second?.next, { runId: 'r2', requestId: 'q2', startAfterSeq: 6, history: [user('one', 'm1'), assistant('a1'), user('four', 'm4'), assistant('a4')], userMessage: user('two', 'm2') })
    t.match(await sessions.activeRun(ref), { runId: 'r2', requestId: 'q2' })
    t.same(await sessions.beginRun(ref, begin('r6', message('x'), { requestId: 'q2' })), { kind: 'duplicate', runId: 'r2', startAfterSeq: 6 }, 'started: attach from its start')
    const third = await sessions.finishRun(ref, finish(ref, 'r2'))
    t.match(third?.next, { runId: 'r3', startAfterSeq: 7, reasoning: true }, 'a queued run keeps its reasoning flag')
    t.same(await sessions.finishRun(ref, finish(ref, 'r3')), { event: { seq: 8, frame: serializeEvent(complete('q', 'r3'), 8) }, next: null }, 'the queue is empty')
    t.equal(await sessions.activeRun(ref), null)
    return frames(backend, ref)
  },
  (t, results) => {
    if (results.size === 2) t.strictSame(results.get('redis'), results.get('memory'), 'the two backends log byte-identical frames')
  },
)

both('no_message: regenerate of an empty history, edit of an unknown or an assistant message, at begin and at enqueue', async (t, backend) => {
  const { sessions } = backend
  const ref = await open(backend, 'n')
  t.same(await sessions.beginRun(ref, begin('r0', regenerate, { requestId: 'k' })), { kind: 'no_message' }, 'nothing to regenerate')
  t.same(await sessions.beginRun(ref, begin('r0', edit('m1', 'x'))), { kind: 'no_message' }, 'no message to edit')
  t.equal(await sessions.activeRun(ref), null, 'nothing started')
  t.match(await sessions.beginRun(ref, begin('r1', message('one', 'm1'), { requestId: 'k' })), { kind: 'started' }, 'the refused request id was not remembered')
  await sessions.finishRun(ref, finish(ref, 'r1', [assistant('a1', 'm2')]))
  t.same(await sessions.beginRun(ref, begin('r2', edit('m2', 'x'))), { kind: 'no_message' }, 'an assistant message is not editable')
  t.same(await sessions.beginRun(ref, begin('r2', edit('nope', 'x'))), { kind: 'no_message' }, 'an unknown id')
  await sessions.beginRun(ref, begin('r2', message('two', 'm3')))
  const before = (await backend.events.read(ref, 0)).lastSeq
  t.same(await sessions.beginRun(ref, enqueue(ref, 'r3', edit('nope', 'x'), { requestId: 'k3' })), { kind: 'no_message' }, 'queued: an unknown id')
  t.same(await sessions.beginRun(ref, enqueue(ref, 'r3', edit('m2', 'x'))), { kind: 'no_message' }, 'queued: an assistant message')
  t.equal((await backend.events.read(ref, 0)).lastSeq, before, 'nothing logged for them')
  t.match(await sessions.beginRun(ref, enqueue(ref, 'r3', regenerate, { requestId: 'k3' })), { kind: 'queued', position: 1 }, 'a regenerate behind a run applies (its message is stored)')
  t.match(await sessions.beginRun(ref, enqueue(ref, 'r4', edit('m1', 'ONE'))), { kind: 'queued', position: 2 }, 'an edit of a user message too')
})

both('regenerate and edit: what they do to the history; the title comes from the first message and an edit of it', async (t, backend) => {
  const { sessions } = backend
  const ref = await open(backend, 'h')
  const stored = async () => (await sessions.get('alice', 'h'))!
  t.equal((await stored()).title, '', 'no title before the first run')
  t.match(await sessions.beginRun(ref, begin('r1', message('Hello  world', 'm1'), { title: 'Hello world' })), { history: [], userMessage: user('Hello  world', 'm1') })
  t.equal((await stored()).title, 'Hello world', 'the first message titles the session')
  await sessions.finishRun(ref, finish(ref, 'r1', [assistant('a1', 'm2')]))
  await sessions.beginRun(ref, begin('r2', message('second', 'm3'), { title: 'second' }))
  t.equal((await stored()).title, 'Hello world', 'a later message does not')
  const tool: HistoryMessage = { role: 'tool', content: 'result', tool_call_id: 'c1' }
  await sessions.finishRun(ref, finish(ref, 'r2', [{ role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{}' } }] }, tool, assistant('a2')]))

  t.same(await sessions.beginRun(ref, begin('r3', regenerate)), {
    kind: 'started',
    runId: 'r3',
    startAfterSeq: 2,
    history: [user('Hello  world', 'm1'), assistant('a1', 'm2')],
    userMessage: user('second', 'm3'),
  }, 'regenerate: the last user message again, with the history before it')
  t.same((await stored()).messages, [user('Hello  world', 'm1'), assistant('a1', 'm2'), user('second', 'm3')], 'its answer and tool messages are dropped')
  await sessions.finishRun(ref, finish(ref, 'r3', [assistant('a3')]))

  t.same(await sessions.beginRun(ref, begin('r4', edit('m3', 'SECOND', 'm5'), { title: 'SECOND' })), {
    kind: 'started',
    runId: 'r4',
    startAfterSeq: 3,
    history: [user('Hello  world', 'm1'), assistant('a1', 'm2')],
    userMessage: user('SECOND', 'm5'),
  }, 'edit: the new message in place of the old one')
  t.same((await stored()).messages, [user('Hello  world', 'm1'), assistant('a1', 'm2'), user('SECOND', 'm5')])
  t.equal((await stored()).title, 'Hello world', 'an edit of a later message keeps the title')
  await sessions.finishRun(ref, finish(ref, 'r4', [assistant('a4')]))

  t.match(await sessions.beginRun(ref, begin('r5', edit('m1', 'Fresh start', 'm6'), { title: 'Fresh start' })), { history: [], userMessage: user('Fresh start', 'm6') })
  t.same((await stored()).messages, [user('Fresh start', 'm6')], 'an edit of the first message starts the conversation again')
  t.equal((await stored()).title, 'Fresh start', 'and retitles it')
  await sessions.finishRun(ref, finish(ref, 'r5', [assistant('a5')]))
  t.match(await sessions.beginRun(ref, begin('r6', regenerate)), { history: [], userMessage: user('Fresh start', 'm6') })
  t.equal((await stored()).title, 'Fresh start', 'a regenerate of the first message brings no title: it stays')
  await sessions.finishRun(ref, finish(ref, 'r6'))
  t.match(await sessions.beginRun(ref, begin('r7', edit('m6', '', 'm7'))), { history: [], userMessage: user('', 'm7') })
  t.equal((await stored()).title, 'Fresh start', 'an edit without a title keeps it')
})

both('a queued edit whose message vanished before its turn is skipped: the next one that applies starts', async (t, backend) => {
  const { sessions } = backend
  const ref = await open(backend, 'v')
  await sessions.beginRun(ref, begin('r0', message('zero', 'm0')))
  await sessions.finishRun(ref, finish(ref, 'r0', [assistant('a0')]))
  await sessions.beginRun(ref, begin('r1', message('one', 'm1')))
  t.match(await sessions.beginRun(ref, enqueue(ref, 'r2', edit('m0', 'ZERO', 'm2'))), { kind: 'queued', position: 1 })
  t.match(await sessions.beginRun(ref, enqueue(ref, 'r3', edit('m1', 'ONE'), { requestId: 'q3' })), { kind: 'queued', position: 2 }, 'm1 exists while it is queued')
  t.match(await sessions.beginRun(ref, enqueue(ref, 'r4', message('four', 'm4'))), { kind: 'queued', position: 3 })

  const first = await sessions.finishRun(ref, finish(ref, 'r1', [assistant('a1')]))
  t.same(first?.next, { runId: 'r2', startAfterSeq: 5, history: [], userMessage: user('ZERO', 'm2') }, 'the edit of m0 cuts m1 away')
  const second = await sessions.finishRun(ref, finish(ref, 'r2', [assistant('a2')]))
  t.same(second?.next, { runId: 'r4', startAfterSeq: 6, history: [user('ZERO', 'm2'), assistant('a2')], userMessage: user('four', 'm4') }, 'the edit of m1 was skipped')
  t.match(await sessions.activeRun(ref), { runId: 'r4' })
  t.same((await sessions.get('alice', 'v'))?.messages, [user('ZERO', 'm2'), assistant('a2'), user('four', 'm4')])

  // Only inapplicable ones left: the session is free.
  t.match(await sessions.beginRun(ref, enqueue(ref, 'r5', edit('m2', 'again', 'm5'))), { kind: 'queued' })
  t.match(await sessions.beginRun(ref, enqueue(ref, 'r6', edit('m4', 'FOUR'))), { kind: 'queued' })
  t.match((await sessions.finishRun(ref, finish(ref, 'r4')))?.next, { runId: 'r5' })
  t.same((await sessions.finishRun(ref, finish(ref, 'r5')))?.next, null, 'm4 is gone: r6 never starts')
  t.equal(await sessions.activeRun(ref), null)
  t.match(await sessions.beginRun(ref, begin('r7', message('seven'))), { kind: 'started' }, 'and the queue is empty')
})

both('clearQueue drops the queued runs; their successor never starts', async (t, backend) => {
  const { sessions } = backend
  const ref = await open(backend, 'c')
  t.equal(await sessions.clearQueue({ ...ref, id: 'nope' }), 0, 'no session')
  t.equal(await sessions.clearQueue(ref), 0, 'nothing queued')
  await sessions.beginRun(ref, begin('r1', message('one')))
  await sessions.beginRun(ref, enqueue(ref, 'r2', message('two')))
  await sessions.beginRun(ref, enqueue(ref, 'r3', message('three')))
  t.equal(await sessions.clearQueue({ ...ref, gen: 'other' }), 0, 'another generation')
  t.equal(await sessions.clearQueue(ref), 2)
  t.equal(await sessions.clearQueue(ref), 0)
  t.same((await sessions.finishRun(ref, finish(ref, 'r1')))?.next, null)
  t.equal(await sessions.activeRun(ref), null)
})

both('list: most recently updated first, paged by an exact cursor, limit', async (t, backend) => {
  const { sessions } = backend
  const owner = 'lister'
  t.same(await sessions.list(owner, 10, undefined), { sessions: [] }, 'nobody’s sessions')
  const a = await open(backend, 'a', owner)
  await sleep(5)
  await open(backend, 'b', owner)
  await sleep(5)
  await open(backend, 'c', owner)
  await open(backend, 'd', 'somebody-else')
  const ids = async (limit: number, cursor?: string) => {
    const page = await sessions.list(owner, limit, cursor)
    return { ids: page.sessions.map((session) => session.id), cursor: page.nextCursor }
  }
  t.same((await ids(10)).ids, ['c', 'b', 'a'], 'newest first, only the owner’s')
  await sleep(5)
  await sessions.beginRun(a, begin('r1', message('Title of a'), { title: 'Title of a' }))
  const all = await sessions.list(owner, 10, undefined)
  t.equal(all.nextCursor, undefined, 'all of them: no cursor')
  t.match(all.sessions[0], { id: 'a', title: 'Title of a', activeRunId: 'r1' }, 'a run started: updated')
  t.ok(all.sessions[0]!.updatedAt >= all.sessions[0]!.createdAt)
  t.match(all.sessions[1], { id: 'c', title: '', activeRunId: null })
  const first = await ids(2)
  t.same(first.ids, ['a', 'c'])
  t.type(first.cursor, 'string')
  t.same(await ids(2, first.cursor), { ids: ['b'], cursor: undefined }, 'the rest, and the end')
  t.same((await ids(2, 'garbage')).ids, ['a', 'c'], 'a cursor we did not make: the first page')
  t.same(await ids(0), { ids: [], cursor: undefined }, 'limit 0: nothing')
  await sleep(5)
  await sessions.finishRun(a, finish(a, 'r1'))
  await sessions.delete((await sessions.get(owner, 'c')) as SessionRef)
  t.match((await sessions.list(owner, 10, undefined)).sessions, [{ id: 'a', activeRunId: null }, { id: 'b' }], 'finished and deleted')
})
