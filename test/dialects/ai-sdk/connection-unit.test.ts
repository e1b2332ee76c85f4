// The AI SDK connection's own edges, on a fake socket and a scripted session service: pending
// frames, flow violations, token expiry, refusals, aborts that race the run's end, the
// session ending for its watchers mid-request, and answers that race the run or fail.
import t from 'tap'
import { EventEmitter } from 'node:events'
import pino from 'pino'
import type { WebSocket } from 'ws'
import type { FastifyBaseLogger } from 'fastify'
import { AiSdkConnection, type AiSdkConnectionOptions } from '../../../src/dialects/ai-sdk/connection.ts'
import type { SessionService } from '../../../src/sessions/session-service.ts'
import { ErrorCode, ProtocolError } from '../../../src/protocol/index.ts'

class FakeSocket extends EventEmitter {
  readonly OPEN = 1
  readonly CLOSING = 2
  readonly CLOSED = 3
  readyState = 1
  bufferedAmount = 0
  closes: Array<[number, string]> = []
  sent: Array<Record<string, unknown>> = []
  pause(): void {}
  resume(): void {}
  close(code: number, reason: string): void {
    this.closes.push([code, reason])
    this.readyState = this.CLOSING
    queueMicrotask(() => this.emit('close', code))
  }
  terminate(): void {
    this.readyState = this.CLOSED
  }
  send(frame: string): void {
    this.sent.push(JSON.parse(frame) as Record<string, unknown>)
  }
  request(frame: Record<string, unknown>): void {
    this.emit('message', Buffer.from(JSON.stringify(frame)), false)
  }
}

const silent = pino({ level: 'silent' }) as unknown as FastifyBaseLogger
const flush = () => new Promise((resolve) => setTimeout(resolve, 5))
const sendFrame = (requestId: string, id = 's', text = 'hi') => ({
  type: 'send',
  requestId,
  id,
  trigger: 'submit-message',
  messages: [{ id: 'u', role: 'user', parts: [{ type: 'text', text }] }],
  headers: {},
  body: {},
})

function open(sessions: Partial<SessionService>, options: Partial<AiSdkConnectionOptions> = {}, exp = Date.now() / 1000 + 3600) {
  const socket = new FakeSocket()
  const connection = new AiSdkConnection({
    socket: socket as unknown as WebSocket,
    claims: { sub: 'alice', exp },
    requestId: 'req-1',
    sessions: sessions as SessionService,
    log: silent,
    limits: { maxContentChars: 100, maxPendingFrames: 10, maxWatched: 4, flow: { highWaterMark: 10, maxBufferedBytes: 100, slowClientTimeoutMs: 50 } },
    ...options,
  })
  return { socket, connection }
}

const thinking = (seq: number, request_id: string) => JSON.stringify({ type: 'status', session_id: 's', seq, content: 'thinking', metadata: { run_id: 'run', request_id } })
const complete = (seq: number) => JSON.stringify({ type: 'complete', session_id: 's', seq, content: '', metadata: { run_id: 'run', finish_reason: 'cancelled' } })

t.test('more pending frames than allowed close 1008', async (t) => {
  const { socket } = open({}, { admit: () => new Promise(() => {}) })
  for (let i = 0; i < 11; i++) socket.request({ type: 'abort', requestId: `r${i}` })
  t.same(socket.closes, [[1008, 'too many pending frames']])
})

t.test('a frame whose turn comes after the close is not served', async (t) => {
  let admit!: () => void
  let chats = 0
  const { socket } = open(
    {
      chat: async () => {
        chats++
        return 's'
      },
    },
    { admit: () => new Promise<void>((resolve) => (admit = resolve)) },
  )
  socket.request(sendFrame('r'))
  socket.close(1000, '')
  await flush()
  admit()
  await flush()
  t.equal(chats, 0)
})

t.test('refusals: our failures are internal error; a refused abort says nothing', async (t) => {
  const { socket } = open({ chat: async () => Promise.reject(new Error('boom at line 3')) }, {
    admit: (connection) => (connection.userId === 'alice' && socket.sent.length > 0 ? Promise.reject(new ProtocolError(ErrorCode.rateLimited)) : undefined),
  })
  socket.request(sendFrame('r1'))
  await flush()
  t.same(socket.sent, [{ type: 'error', requestId: 'r1', errorText: 'internal error' }])
  socket.request({ type: 'abort', requestId: 'r1' })
  socket.request(sendFrame('r2'))
  await flush()
  t.same(socket.sent.slice(1), [{ type: 'error', requestId: 'r2', errorText: 'too many messages: slow down' }], 'rate limited: the send hears it, the abort does not')
})

t.test('abort: unknown request, a session gone, a run that ended meanwhile, a store failure', async (t) => {
  let connection!: AiSdkConnection
  let active: { runId: string; requestId?: string } | null = { runId: 'run', requestId: 'r1' }
  let getFails = false
  const cancels: string[] = []
  const sessions: Partial<SessionService> = {
    chat: async () => {
      connection.deliver(thinking(1, 'r1'))
      return 's'
    },
    get: (async () => {
      if (getFails) throw new Error('store down')
      if (active === null) throw new ProtocolError(ErrorCode.notFound)
      return { active }
    }) as unknown as SessionService['get'],
    cancel: async (_owner, sessionId) => {
      cancels.push(sessionId)
      connection.deliver(complete(2))
      throw new ProtocolError(ErrorCode.noActiveRun)
    },
  }
  const opened = open(sessions)
  connection = opened.connection
  const { socket } = opened
  socket.request({ type: 'abort', requestId: 'nobody' })
  socket.request(sendFrame('r1'))
  socket.request({ type: 'abort', requestId: 'r1' })
  await flush()
  t.same(cancels, ['s'], 'cancelled; its no_active_run (ended meanwhile) is no failure')
  t.same(socket.sent.map((frame) => frame.type), ['chunk', 'chunk'], 'start, start-step; nothing after the abort')

  active = { runId: 'other' }
  socket.request(sendFrame('r2'))
  socket.request({ type: 'abort', requestId: 'r2' })
  await flush()
  active = null
  socket.request(sendFrame('r3'))
  socket.request({ type: 'abort', requestId: 'r3' })
  await flush()
  getFails = true
  socket.request(sendFrame('r4'))
  socket.request({ type: 'abort', requestId: 'r4' })
  await flush()
  t.same(cancels, ['s'], 'another run, no session, no store: nothing cancelled')
  t.equal(socket.closes.length, 0)
})

t.test('abort of a resume whose run is no longer the active one; a cancel that fails', async (t) => {
  let active = { runId: 'run' }
  let cancelled = 0
  const { socket } = open({
    get: (async () => ({ active, pending: [] })) as unknown as SessionService['get'],
    resume: async () => {},
    cancel: async () => {
      cancelled++
      throw new Error('control bus down')
    },
  })
  socket.request({ type: 'resume', requestId: 'a', id: 's', headers: {}, body: {} })
  await flush()
  active = { runId: 'next' }
  socket.request({ type: 'abort', requestId: 'a' })
  await flush()
  t.equal(cancelled, 0, 'the run it followed is over: the next one is not cancelled')
  active = { runId: 'run' }
  socket.request({ type: 'resume', requestId: 'b', id: 's', headers: {}, body: {} })
  socket.request({ type: 'abort', requestId: 'b' })
  await flush()
  t.equal(cancelled, 1)
  t.same(socket.sent.map((frame) => frame.type), ['start', 'start'], 'an abort has no answer, even failed')
})

t.test('the session ending for its watchers fails the request; frames of other sessions and resumed pass by', async (t) => {
  const { socket, connection } = open({ chat: async () => 's' })
  socket.request(sendFrame('r1'))
  await flush()
  connection.deliver(JSON.stringify({ type: 'status', session_id: 'elsewhere', seq: 1, content: 'thinking', metadata: { run_id: 'x' } }))
  connection.deliver(JSON.stringify({ type: 'status', session_id: 's', content: 'resumed', metadata: { last_seq: 0, active_run: null } }))
  connection.deliver(JSON.stringify({ type: 'error', session_id: 's', content: 'session deleted', metadata: { code: 'not_found', retryable: false } }))
  connection.deliver(JSON.stringify({ type: 'error', session_id: 's', content: 'again', metadata: { code: 'not_found', retryable: false } }))
  t.same(socket.sent, [{ type: 'error', requestId: 'r1', errorText: 'session deleted' }])
})

t.test('flow: past the cap closes at once; backed up too long closes as slow; whenWritable waits for room', async (t) => {
  const big = open({})
  big.socket.bufferedAmount = 1000
  big.connection.deliver(JSON.stringify({ type: 'status', session_id: 's', content: 'resumed', metadata: { last_seq: 0, active_run: null } }))
  t.same(big.socket.closes, [], 'nothing is sent for a frame no request follows')

  const overflow = open({ chat: async () => 's' })
  const serve = overflow.connection
  overflow.socket.request(sendFrame('r'))
  await flush()
  overflow.socket.bufferedAmount = 1000
  serve.deliver(thinking(1, 'r'))
  t.same(overflow.socket.closes, [[1008, 'too much unsent data']])

  const slow = open({ chat: async () => 's' })
  slow.socket.request(sendFrame('r'))
  await flush()
  slow.socket.bufferedAmount = 50
  slow.connection.deliver(thinking(1, 'r'))
  t.equal(slow.connection.writable, false)
  const waiting = slow.connection.whenWritable()
  await new Promise((resolve) => setTimeout(resolve, 250))
  t.same(slow.socket.closes, [[1008, 'slow client']])
  await waiting
})

t.test('an expired token closes 4001', async (t) => {
  const { socket } = open({}, {}, Date.now() / 1000 + 0.02)
  await new Promise((resolve) => setTimeout(resolve, 60))
  t.same(socket.closes, [[4001, 'token expired']])
})

const event = (seq: number, content: string, metadata: Record<string, unknown> = {}) => JSON.stringify({ type: 'status', session_id: 's', seq, content, metadata: { run_id: 'run', ...metadata } })
const call = { tool: 't', call_id: 'c', arguments: {} }
const asked = [event(1, 'thinking'), event(2, 'tool_call', call), event(3, 'approval_required', { ...call, expires_at: new Date().toISOString() })]
const resolved = [event(4, 'approval_resolved', { call_id: 'c', approved: true }), event(5, 'tool_result', { ...call, result: 1, is_error: false })]
const resumedFrame = JSON.stringify({ type: 'status', session_id: 's', content: 'resumed', metadata: { last_seq: 0, active_run: 'run', pending: [] } })
const answering = (requestId: string) => ({
  type: 'send',
  requestId,
  id: 's',
  trigger: 'submit-message',
  messages: [{ id: 'run', role: 'assistant', parts: [{ type: 'dynamic-tool', toolName: 't', toolCallId: 'c', state: 'approval-responded', input: {}, approval: { id: 'c', approved: true } }] }],
  headers: {},
  body: {},
})

/** A connection whose session waits on call `c` (or not, `pending: []`); `replay` is what its resume delivers. */
function answeringConnection(replay: string[], answer: () => Promise<void>, pending = [{ call_id: 'c', kind: 'approval' }]) {
  let connection!: AiSdkConnection
  const answers: string[] = []
  const opened = open({
    get: (async () => ({ owner: 'alice', id: 's', gen: 'g', active: { runId: 'run', startAfterSeq: 0 }, pending })) as unknown as SessionService['get'],
    resume: async () => {
      for (const frame of replay) connection.deliver(frame)
    },
    answer: async (_owner, request) => {
      answers.push(request.callId)
      return answer()
    },
  })
  connection = opened.connection
  return { ...opened, answers }
}

const chunks = (sent: Array<Record<string, unknown>>) => sent.map((frame) => (frame.type === 'chunk' ? (frame.chunk as { type: string }).type : frame.type))

t.test('answers: one that lost the race is an error chunk and the stream goes on; a failure of ours is internal error', async (t) => {
  const raced = answeringConnection([...asked, resumedFrame], async () => Promise.reject(new ProtocolError(ErrorCode.notPending, 'call c is not waiting for an approval')))
  raced.socket.request(answering('r'))
  await flush()
  t.same(raced.answers, ['c'])
  t.same(chunks(raced.socket.sent), ['start', 'error'], 'caught up to the turn end: the rest follows')
  t.match(raced.socket.sent[1], { sequence: 1, chunk: { errorText: 'call c is not waiting for an approval' } })
  raced.connection.deliver(resolved[0] as string)
  t.same(chunks(raced.socket.sent).slice(2), ['tool-approval-response'], 'still following the run')

  const broken = answeringConnection([...asked, resumedFrame], async () => Promise.reject(new Error('control bus down')))
  broken.socket.request(answering('r'))
  await flush()
  t.same(broken.socket.sent.at(-1), { type: 'error', requestId: 'r', errorText: 'internal error' })
})

t.test('answers: a run that ended during the replay ends the stream there; one never waited for follows from the replay\'s end', async (t) => {
  const ended = answeringConnection([...asked, ...resolved, JSON.stringify({ type: 'complete', session_id: 's', seq: 6, content: '', metadata: { run_id: 'run', finish_reason: 'stop' } })], async () =>
    Promise.reject(new ProtocolError(ErrorCode.notPending)),
  )
  ended.socket.request(answering('r'))
  await flush()
  t.same(chunks(ended.socket.sent), ['start', 'tool-approval-response', 'tool-output-available', 'start-step', 'finish-step', 'finish', 'end'], 'no error chunk after the end')

  // Nothing pending: where the client's turn ended is unknown (the call was never seen waiting), so the rest is live.
  const serverCall = [event(1, 'thinking'), event(2, 'tool_call', call)]
  const unknown = answeringConnection([...serverCall, resumedFrame], async () => {}, [])
  unknown.socket.request(answering('r'))
  await flush()
  t.same(unknown.answers, [], 'nothing answered')
  t.same(chunks(unknown.socket.sent), ['start', 'error'])
  t.match(unknown.socket.sent[1], { chunk: { errorText: /not waiting any more/ } })

  // The run's end reached while catching up: only the end is sent.
  const over = answeringConnection([...serverCall, event(3, 'tool_result', { ...call, result: 1, is_error: false }), JSON.stringify({ type: 'complete', session_id: 's', seq: 4, content: '', metadata: { run_id: 'run', finish_reason: 'cancelled' } })], async () => {}, [])
  over.socket.request(answering('r'))
  await flush()
  t.same(chunks(over.socket.sent), ['start', 'abort', 'end'])
})

t.test('answers: a replay that never came (the connection closing) still starts the stream before its error chunk', async (t) => {
  const silent = answeringConnection([], async () => {}, [])
  silent.socket.request(answering('r'))
  await flush()
  t.same(chunks(silent.socket.sent), ['start', 'error'])
  t.match(silent.socket.sent, [{ sequence: 0 }, { sequence: 1 }])
})
