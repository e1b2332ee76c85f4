import t from 'tap'
import { textSteps } from '../helpers/fake-upstream.ts'
import { startWithUpstream, serverFrame, tokensOf, contentOf, transcript, SYSTEM } from './helpers.ts'

t.test('a run: thinking, tokens, complete; every frame matches the contract', async (t) => {
  const { up, client } = await startWithUpstream(t, () => ({
    steps: textSteps('Hello big world', { usage: { prompt_tokens: 7, completion_tokens: 3 } }),
  }))
  const alice = await client()
  alice.send({ type: 'chat', content: 'hi', id: 'req-1' })
  const frames = await alice.untilComplete()
  const [thinking, ...rest] = frames
  const complete = frames.at(-1)!
  const sessionId = thinking!.session_id
  t.match(sessionId, /^[0-9a-f-]{36}$/, 'a generated session id')
  const runId = thinking!.metadata?.run_id as string
  t.match(runId, /^[0-9a-f-]{36}$/)

  t.same(thinking, { type: 'status', session_id: sessionId, seq: 1, content: 'thinking', metadata: { run_id: runId, request_id: 'req-1' } })
  const tokens = rest.slice(0, -1)
  t.ok(tokens.length >= 1 && tokens.every((f) => f.type === 'token'), 'then tokens (deltas ready together come as one)')
  t.equal(tokens.map(contentOf).join(''), 'Hello big world')
  t.same(complete, {
    type: 'complete',
    session_id: sessionId,
    seq: tokens.length + 2,
    content: 'Hello big world',
    metadata: { run_id: runId, finish_reason: 'stop', usage: { prompt_tokens: 7, completion_tokens: 3 }, request_id: 'req-1' },
  })
  t.equal(contentOf(complete), tokensOf(frames), 'complete.content is the concatenated tokens')
  t.same(frames.map((f) => f.seq), frames.map((_, i) => i + 1))
  for (const frame of frames) {
    t.ok(serverFrame.Check(frame), `${frame.type} ${contentOf(frame) ?? ''} matches ServerFrame`)
    t.equal(frame.session_id, sessionId)
    t.equal(frame.metadata?.run_id, runId)
  }
  t.match(alice.raw[0], /^\{"type":"status","session_id":"[^"]+","seq":1,/, 'type, session_id, seq first on the wire')

  const request = await up.nextRequest()
  t.same(transcript(request), [SYSTEM, 'user:hi'])
  t.equal(request.body.stream, true)
  t.same(request.body.stream_options, { include_usage: true })
  t.same(
    request.body.tools.map((tool: { function: { name: string } }) => tool.function.name).sort(),
    ['calculate', 'get_current_time'],
    'the configured tools are offered',
  )
})

t.test('without an id: no request_id anywhere', async (t) => {
  const { client } = await startWithUpstream(t)
  const alice = await client()
  alice.send({ type: 'chat', content: 'hi', session_id: 'my-session' })
  const frames = await alice.untilComplete()
  t.equal(frames[0]?.session_id, 'my-session', 'a new session with the name asked for')
  for (const frame of frames) t.notOk('request_id' in (frame.metadata ?? {}), `${frame.type}: no request_id`)
  t.notOk('usage' in (frames.at(-1)!.metadata ?? {}), 'no usage when the upstream sent none')
})

t.test('two runs in a session: seq continues by one; the second request carries the first turn', async (t) => {
  const { up, client } = await startWithUpstream(t, (request) => ({ steps: textSteps(`answer ${request.index}`) }))
  const alice = await client()
  alice.send({ type: 'chat', content: 'first' })
  const one = await alice.untilComplete()
  const sessionId = one[0]!.session_id
  alice.send({ type: 'chat', content: 'second', session_id: sessionId })
  const two = await alice.untilComplete()
  const seqs = [...one, ...two].map((f) => f.seq)
  t.same(seqs, seqs.map((_, i) => i + 1), 'strictly increasing by one across runs')
  t.not(one[0]!.metadata?.run_id, two[0]!.metadata?.run_id, 'a new run id')
  t.equal(contentOf(two.at(-1)), 'answer 1')
  t.same(transcript(up.requests[1]!), [SYSTEM, 'user:first', 'assistant:answer 0', 'user:second'], 'system prompt first, then history')
})

t.test('HISTORY_MAX_MESSAGES trims the oldest first and keeps the system prompt', async (t) => {
  const { up, client } = await startWithUpstream(t, (request) => ({ steps: textSteps(`a${request.index}`) }), {
    HISTORY_MAX_MESSAGES: 2,
    SYSTEM_PROMPT: 'Be brief.',
  })
  const alice = await client()
  for (const content of ['u0', 'u1', 'u2']) {
    alice.send({ type: 'chat', content, session_id: 'trimmed' })
    await alice.untilComplete()
  }
  t.same(transcript(up.requests[0]!), ['system:Be brief.', 'user:u0'])
  t.same(transcript(up.requests[1]!), ['system:Be brief.', 'user:u0', 'assistant:a0', 'user:u1'])
  t.same(transcript(up.requests[2]!), ['system:Be brief.', 'user:u1', 'assistant:a1', 'user:u2'], 'u0 and a0 dropped')
})

t.test('trimming never leaves a tool result without the call that asked for it', async (t) => {
  const { up, client } = await startWithUpstream(
    t,
    (request) =>
      request.index === 0
        ? { steps: [{ toolCalls: [{ index: 0, id: 'call_1', name: 'calculate', arguments: '{"expression":"6*7"}' }] }, { finish: 'tool_calls' }, { done: true }] }
        : { steps: textSteps(`a${request.index}`) },
    { HISTORY_MAX_MESSAGES: 2 },
  )
  const alice = await client()
  alice.send({ type: 'chat', content: 'compute', session_id: 'tools' })
  const frames = await alice.untilComplete()
  t.same(
    frames.map((f) => `${f.type}:${contentOf(f) ?? ''}`),
    ['status:thinking', 'status:tool_call', 'status:tool_result', 'token:a1', 'complete:a1'],
  )
  t.match(frames[1], { metadata: { tool: 'calculate', call_id: 'call_1', arguments: { expression: '6*7' } } })
  t.match(frames[2], { metadata: { tool: 'calculate', call_id: 'call_1', result: { result: 42 }, is_error: false } })
  t.same(transcript(up.requests[1]!), [SYSTEM, 'user:compute', 'assistant:[calculate]', 'tool:{"expression":"6*7","result":42}'])
  alice.send({ type: 'chat', content: 'again', session_id: 'tools' })
  await alice.untilComplete()
  // History is [..., assistant(tool_calls), tool, assistant] trimmed to 2: the orphaned tool
  // result must not lead the request (OpenAI answers 400 to that).
  const sent = transcript(up.requests[2]!)
  t.equal(sent[0], SYSTEM)
  t.notMatch(sent[1], /^tool:/, `no orphan tool result: ${JSON.stringify(sent)}`)
  t.equal(sent.at(-1), 'user:again')
})

t.test('an upstream failure: error (with seq and run_id) then complete finish_reason error', async (t) => {
  const { client } = await startWithUpstream(t, () => ({ status: 500 }))
  const alice = await client()
  alice.send({ type: 'chat', content: 'hi', id: 'r-err' })
  const frames = await alice.untilComplete()
  t.same(frames.map((f) => f.type), ['status', 'error', 'complete'])
  const [thinking, error, complete] = frames
  t.match(error, { seq: 2, metadata: { code: 'upstream_error', retryable: true, run_id: thinking!.metadata?.run_id, request_id: 'r-err' } })
  t.notMatch(contentOf(error), /at |Error:|test/, 'no stack trace or secret in the text')
  t.match(complete, { seq: 3, content: '', metadata: { finish_reason: 'error', request_id: 'r-err' } })
  for (const frame of frames) t.ok(serverFrame.Check(frame), `${frame.type} matches ServerFrame`)
})

t.test('an upstream 429: upstream_error with the retry_after_ms it asked for', async (t) => {
  const { client } = await startWithUpstream(t, () => ({ status: 429, headers: { 'retry-after': '2' } }))
  const alice = await client()
  alice.send({ type: 'chat', content: 'hi' })
  const frames = await alice.untilComplete()
  t.match(frames[1], { type: 'error', metadata: { code: 'upstream_error', retryable: true, retry_after_ms: 2000 } })
  t.ok(serverFrame.Check(frames[1]))
})

t.test('a rejected credential is not retryable', async (t) => {
  const { client } = await startWithUpstream(t, () => ({ status: 401 }))
  const alice = await client()
  alice.send({ type: 'chat', content: 'hi' })
  const frames = await alice.untilComplete()
  t.match(frames[1], { type: 'error', metadata: { code: 'upstream_error', retryable: false } })
})

t.test('a stream cut after some tokens: error then complete with the partial text', async (t) => {
  const { client } = await startWithUpstream(t, () => ({ steps: [{ text: 'par' }, { text: 'tial' }] }))
  const alice = await client()
  alice.send({ type: 'chat', content: 'hi' })
  const frames = await alice.untilComplete()
  t.same(frames.map((f) => f.type).filter((type, i, all) => type !== 'token' || all[i - 1] !== 'token'), ['status', 'token', 'error', 'complete'], 'thinking, the text, error, complete')
  t.equal(tokensOf(frames), 'partial')
  t.match(frames.at(-1), { content: 'partial', metadata: { finish_reason: 'error' } })
})
