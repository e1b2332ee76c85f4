import t, { type Test } from 'tap'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer, type TestClient } from '../helpers/ws-client.ts'
import { createFakeUpstream, textSteps, type FakeUpstream } from '../helpers/fake-upstream.ts'
import { CloseCode, ErrorCode, clientFrameSchemas, errorFrame, serverFrameSchemas } from '../../src/protocol/index.ts'
import { fetchFrameSchemas } from './schema.ts'
import { Type } from '@sinclair/typebox'
import { defineTool } from '../../src/agent/tools/index.ts'

async function upstream(t: Test): Promise<FakeUpstream> {
  const up = await createFakeUpstream((request) => {
    const last = request.body.messages.at(-1)
    if (last.role === 'tool') return { steps: textSteps('Five.', { usage: { prompt_tokens: 12, completion_tokens: 2 } }) }
    if (last.content === 'use a tool') {
      return {
        steps: [
          // (1.1) A reasoning delta, relayed because this chat asks with reasoning: true.
          { chunk: { choices: [{ index: 0, delta: { reasoning_content: 'Add them.' }, finish_reason: null }] } },
          { toolCalls: [{ index: 0, id: 'call_1', name: 'calculate', arguments: '{"expression":"2+3"}' }] },
          { finish: 'tool_calls' },
          { done: true },
        ],
      }
    }
    if (last.content === 'report progress') {
      return { steps: [{ toolCalls: [{ index: 0, id: 'call_2', name: 'progress_demo', arguments: '{}' }] }, { finish: 'tool_calls' }, { done: true }] }
    }
    if (last.content === 'ask first') {
      return { steps: [{ toolCalls: [{ index: 0, id: 'call_3', name: 'careful', arguments: '{}' }] }, { finish: 'tool_calls' }, { done: true }] }
    }
    if (last.content === 'use my tool') {
      return { steps: [{ toolCalls: [{ index: 0, id: 'call_4', name: 'my_tool', arguments: '{}' }] }, { finish: 'tool_calls' }, { done: true }] }
    }
    if (last.content === 'go slow') return { steps: textSteps(Array(400).fill(' tick'), { delayMs: 25 }) }
    // Asked to wait longer than we ever do: the run fails at once and passes the wait on.
    return { status: 429, headers: { 'retry-after': '30' } }
  })
  t.teardown(() => up.close())
  return up
}

/** Reports progress once, as an MCP tool would (1.1 status:tool_progress). */
const progressDemo = defineTool({
  name: 'progress_demo',
  description: 'reports progress',
  parameters: Type.Object({}),
  run: (_args, ctx) => {
    ctx.onProgress?.({ progress: 1, total: 2 })
    return 'done'
  },
})

/** Runs only once approved (1.1 approval_required / approval_resolved). */
const careful = defineTool({ name: 'careful', description: 'asks first', parameters: Type.Object({}), needsApproval: true, run: () => 'ok' })

/** Every client frame a test sends, kept for validation. */
function recording(client: TestClient, sent: unknown[]) {
  return (frame: Record<string, unknown>) => {
    sent.push(frame)
    client.send(frame)
  }
}

t.test('/v1/protocol validates every frame of a whole conversation', async (t) => {
  const up = await upstream(t)
  const { baseUrl, wsUrl } = await startApp(t, {
    modelProvider: 'openai',
    OPENAI_BASE_URL: up.baseURL,
    OPENAI_API_KEY: 'test',
    MAX_CONTENT_CHARS: 100,
  }, { tools: [progressDemo, careful] })
  const schemas = await fetchFrameSchemas(baseUrl)
  const sent: unknown[] = []
  const a = await connect(t, wsUrl, bearer(signToken('alice')))
  const b = await connect(t, wsUrl, bearer(signToken('alice')))
  const bob = await connect(t, wsUrl, bearer(signToken('bob')))
  const sendA = recording(a, sent)
  const sendB = recording(b, sent)
  const sendBob = recording(bob, sent)

  sendA({ type: 'ping' })
  sendA({ type: 'ping', session_id: 'proto-1' })
  await a.next((f) => f.type === 'pong' && f.session_id === 'proto-1')

  sendA({ type: 'chat', session_id: 'proto-1', content: 'use a tool', id: 'req-1', reasoning: true })
  const toolRun = await a.untilComplete()
  t.same(toolRun.slice(0, 4).map((f) => [f.type, f.content]), [['status', 'thinking'], ['reasoning', 'Add them.'], ['status', 'tool_call'], ['status', 'tool_result']])
  t.match(toolRun.at(-1)!.metadata, { finish_reason: 'stop', request_id: 'req-1', usage: { prompt_tokens: 12, completion_tokens: 2 } })

  sendA({ type: 'chat', session_id: 'proto-1', content: 'report progress' })
  t.match((await a.next((f) => f.content === 'tool_progress')).metadata, { tool: 'progress_demo', progress: 1, total: 2 }, 'a tool reports progress (1.1)')
  await a.untilComplete()

  sendA({ type: 'chat', session_id: 'proto-1', content: 'go slow' })
  await a.nextOfType('token')
  sendA({ type: 'chat', session_id: 'proto-1', content: 'me too' })
  t.match((await a.nextOfType('error')).metadata, { code: 'busy', retryable: true, retry_after_ms: 1000 })
  sendB({ type: 'resume', session_id: 'proto-1', last_seq: toolRun.at(-1)!.seq! })
  const resumedLive = await b.next((f) => f.content === 'resumed')
  t.type(resumedLive.metadata!.active_run, 'string', 'resumed mid-run names the active run')
  await b.nextOfType('token')
  sendA({ type: 'cancel' })
  t.equal((await a.untilComplete()).at(-1)!.metadata!.finish_reason, 'cancelled')
  await b.nextOfType('complete')
  sendA({ type: 'cancel', session_id: 'proto-1' })
  t.equal((await a.nextOfType('error')).metadata!.code, 'no_active_run')

  sendA({ type: 'chat', session_id: 'proto-1', content: 'fail' })
  const failed = await a.untilComplete()
  t.match(failed.find((f) => f.type === 'error')!.metadata, { code: 'upstream_error', retryable: true, retry_after_ms: 30_000 })
  t.equal(failed.at(-1)!.metadata!.finish_reason, 'error')

  sendA({ type: 'chat', content: 'x'.repeat(101) })
  t.equal((await a.nextOfType('error')).metadata!.code, 'payload_too_large')
  sendA({ type: 'auth', token: signToken('alice') })
  sendA({ type: 'auth', token: signToken('bob') })
  t.equal((await a.nextOfType('error')).metadata!.code, 'forbidden')

  sendB({ type: 'resume', session_id: 'proto-1', last_seq: 0 })
  const resumed = await b.next((f) => f.content === 'resumed')
  t.same(resumed.metadata, { last_seq: failed.at(-1)!.seq, active_run: null, pending: [] })
  sendB({ type: 'resume', session_id: 'proto-1', last_seq: 10_000 })
  t.equal((await b.nextOfType('error')).metadata!.code, 'history_gone')
  sendB({ type: 'resume', session_id: 'nobody', last_seq: 0 })
  t.equal((await b.nextOfType('error')).metadata!.code, 'not_found')
  sendBob({ type: 'resume', session_id: 'proto-1', last_seq: 0 })
  t.equal((await bob.nextOfType('error')).metadata!.code, 'not_found', "another user's session id is unknown to bob (1.1)")

  // 1.1: waiting on the client, an approval and a client tool.
  sendA({ type: 'chat', session_id: 'proto-3', content: 'ask first' })
  const asked = await a.next((f) => f.content === 'approval_required')
  sendA({ type: 'tool_approval', session_id: 'proto-3', call_id: asked.metadata!.call_id, approved: true })
  await a.next((f) => f.type === 'complete' && f.session_id === 'proto-3')
  sendA({ type: 'chat', session_id: 'proto-3', content: 'use my tool', client_tools: [{ name: 'my_tool', parameters: { type: 'object' } }] })
  const called = await a.next((f) => f.content === 'tool_call' && f.metadata?.executor === 'client')
  sendA({ type: 'tool_output', session_id: 'proto-3', call_id: called.metadata!.call_id, output: 'done' })
  await a.next((f) => f.type === 'complete' && f.session_id === 'proto-3' && f.seq! > called.seq!)

  // 1.1: a queued run, then the last answer regenerated.
  sendA({ type: 'chat', session_id: 'proto-2', content: 'go slow' })
  await a.next((f) => f.type === 'token' && f.session_id === 'proto-2')
  sendA({ type: 'chat', session_id: 'proto-2', content: 'after that', on_busy: 'enqueue', id: 'later' })
  t.match((await a.next((f) => f.content === 'queued')).metadata, { position: 1, request_id: 'later' })
  sendA({ type: 'cancel', session_id: 'proto-2' })
  t.match((await a.next((f) => f.type === 'complete' && f.metadata?.request_id === 'later')).metadata, { finish_reason: 'error' }, 'the queued run ran')
  sendA({ type: 'regenerate', session_id: 'proto-2', id: 'again' })
  t.match((await a.next((f) => f.type === 'complete' && f.metadata?.request_id === 'again')).metadata, { finish_reason: 'error' })

  // Frames the server refuses are refused by the published schema too.
  const invalid: unknown[] = [
    { type: 'chat' },
    { type: 'chat', content: '' },
    { type: 'chat', content: 'hi', extra: true },
    { type: 'chat', content: 'hi', session_id: 'has spaces' },
    { type: 'resume', session_id: 'proto-1', last_seq: -1 },
    { type: 'resume', session_id: 'proto-1', last_seq: 1.5 },
    { type: 'dance' },
    [],
  ]
  for (const frame of invalid) {
    t.notOk(schemas.client(frame), `the schema refuses ${JSON.stringify(frame)}`)
    a.send(frame)
    t.equal((await a.nextOfType('error')).metadata!.code, 'invalid_message', `the server refuses ${JSON.stringify(frame)}`)
  }
  a.send('{not json')
  a.socket.send(Buffer.from('{"type":"ping"}'), { binary: true })
  t.equal((await a.nextOfType('error')).metadata!.code, 'invalid_message')
  t.equal((await a.nextOfType('error')).metadata!.code, 'invalid_message')

  const clientKinds = new Set<string>()
  for (const frame of sent) {
    t.ok(schemas.client(frame), `client frame ${JSON.stringify(frame)}`)
    const matched = schemas.matches('client', frame)
    t.equal(matched.length, 1, `exactly one client definition fits ${JSON.stringify(frame)}`)
    clientKinds.add(matched[0]!)
  }
  const serverKinds = new Set<string>()
  const received = [...a.frames, ...b.frames, ...bob.frames]
  for (const frame of received) {
    if (!schemas.server(frame)) t.fail(`server frame ${JSON.stringify(frame)}: ${JSON.stringify(schemas.server.errors)}`)
    const matched = schemas.matches('server', frame)
    if (matched.length !== 1) t.fail(`${matched.length} server definitions fit ${JSON.stringify(frame)}`)
    serverKinds.add(matched[0]!)
  }
  t.ok(received.length > 30, `${received.length} server frames validated`)
  t.same([...clientKinds].sort(), Object.values(clientFrameSchemas).map((s) => s.$id).sort(), 'every client frame kind was exercised')
  t.same([...serverKinds].sort(), Object.values(serverFrameSchemas).map((s) => s.$id).sort(), 'every server frame kind was exercised')
})

t.test('the document is generated from the schemas the server validates with', async (t) => {
  const { baseUrl, config } = await startApp(t, { MAX_CONTENT_CHARS: 1234 })
  const response = await fetch(`${baseUrl}/v1/protocol`)
  t.match(response.headers.get('content-type'), /^application\/json/)
  const { document } = await fetchFrameSchemas(baseUrl)
  t.match(document, { version: 1, subprotocol: 'agent.v1', endpoint: '/ws/agent' })
  for (const [side, frames] of [['client', clientFrameSchemas], ['server', serverFrameSchemas]] as const) {
    for (const schema of Object.values(frames)) {
      const { $id, ...rest } = JSON.parse(JSON.stringify(schema))
      t.same(document[side].$defs[$id], { title: $id, ...rest }, `${side} ${$id} is the TypeBox schema`)
    }
    t.equal(Object.keys(document[side].$defs).length, Object.keys(frames).length)
  }
  t.same(
    document.error_codes,
    Object.values(ErrorCode).map((code) => {
      const frame = errorFrame(code, '')
      return { code, retryable: frame.metadata.retryable, message: frame.content }
    }),
  )
  const closeCodes = document.close_codes.map((entry) => entry.code)
  t.same(closeCodes, [...closeCodes].sort((x, y) => x - y), 'close codes in order')
  for (const code of Object.values(CloseCode)) t.ok(closeCodes.includes(code), `close code ${code} is documented`)
  t.ok(closeCodes.includes(1006))
  t.same(document.close_codes.find((entry) => entry.code === 4001)?.reasons, ['missing token', 'invalid token', 'token expired'])
  t.match(document.limits, { max_content_chars: 1234, max_payload_bytes: config.MAX_PAYLOAD_BYTES, rate_limit_messages: config.RATE_LIMIT_MESSAGES })
})
