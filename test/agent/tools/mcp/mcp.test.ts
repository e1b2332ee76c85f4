import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { Type } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { startApp, signToken } from '../../../helpers/app.ts'
import { connect, bearer, type Frame, type TestClient } from '../../../helpers/ws-client.ts'
import { createFakeUpstream, textSteps, type FakeUpstream, type RecordedRequest, type Script } from '../../../helpers/fake-upstream.ts'
import { createTestMcpServer, text, toolDefinition, type TestMcpServer, type TestTool } from '../../../helpers/mcp-server.ts'
import { freePort } from '../../../helpers/free-port.ts'
import { ServerFrame } from '../../../../src/protocol/index.ts'
import type { McpServerConfig } from '../../../../src/agent/tools/mcp/index.ts'
import type { Tool } from '../../../../src/agent/tools/index.ts'

const validServerFrame = TypeCompiler.Compile(ServerFrame)
const FAST = { reconnectDelayMs: 10, maxReconnectDelayMs: 50, connectTimeoutMs: 2000 }

const echo: TestTool = {
  definition: toolDefinition('echo', { text: { type: 'string' } }),
  run: ({ text: value }) => text(`echo: ${String(value)}`),
}

/** Answers when the signal aborts (the client cancelled), never on its own within a test. */
function waitsForCancel(name: string): TestTool {
  return {
    definition: toolDefinition(name),
    run: ({}, { signal }) =>
      new Promise((resolve) => signal.addEventListener('abort', () => resolve(text('too late')), { once: true })),
  }
}

interface Logs {
  lines: Array<Record<string, unknown>>
  stream: { write(line: string): void }
  /** The n-th (1-based) log line with this message, waited for. */
  waitFor(msg: string, count?: number): Promise<Record<string, unknown>>
}

function collectLogs(): Logs {
  const lines: Array<Record<string, unknown>> = []
  return {
    lines,
    stream: { write: (line) => void lines.push(JSON.parse(line)) },
    async waitFor(msg, count = 1) {
      for (let i = 0; i < 500; i++) {
        const found = lines.filter((line) => line.msg === msg)
        if (found.length >= count) return found[count - 1] as Record<string, unknown>
        await sleep(10)
      }
      throw new Error(`no log line ${JSON.stringify(msg)} (${count})`)
    },
  }
}

/** A bounded wait for a condition that another process brings about. */
async function until(what: string, condition: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await condition()) return
    await sleep(10)
  }
  throw new Error(`gave up waiting: ${what}`)
}

/** The model calls `name` with `args` once, then answers with text, for every chat. */
function callsThenAnswers(up: FakeUpstream, name: string, args: string): void {
  up.script((request): Script => {
    if (request.body.messages.at(-1).role === 'tool') return { steps: textSteps('Done.') }
    return { steps: [{ toolCalls: [{ index: 0, id: `call_${request.index}`, name, arguments: args }] }, { finish: 'tool_calls' }, { done: true }] }
  })
}

interface Setup {
  mcp: TestMcpServer
  up: FakeUpstream
  client: TestClient
  baseUrl: string
  logs: Logs
}

async function setup(
  t: Test,
  tools: TestTool[],
  options: { servers?: (url: string) => McpServerConfig[]; config?: Record<string, unknown>; customTools?: Tool[] } = {},
): Promise<Setup> {
  const mcp = await createTestMcpServer(tools)
  t.teardown(() => mcp.close())
  const up = await createFakeUpstream()
  t.teardown(() => up.close())
  const logs = collectLogs()
  const { wsUrl, baseUrl } = await startApp(
    t,
    {
      modelProvider: 'openai',
      OPENAI_BASE_URL: up.baseURL,
      OPENAI_API_KEY: 'test',
      TOOLS: [],
      LOG_LEVEL: 'info',
      mcpServers: options.servers?.(mcp.url) ?? [{ name: 'files', url: mcp.url, headers: { authorization: 'Bearer mcp-secret' } }],
      ...options.config,
    },
    { mcp: FAST, logStream: logs.stream, ...(options.customTools ? { tools: options.customTools } : {}) },
  )
  const client = await connect(t, wsUrl, bearer(signToken('alice')))
  return { mcp, up, client, baseUrl, logs }
}

function statusOf(frames: Frame[], content: string): Frame[] {
  return frames.filter((frame) => frame.type === 'status' && frame.content === content)
}

function toolMessage(request: RecordedRequest | undefined): string {
  return request?.body.messages.at(-1).content
}

async function ready(baseUrl: string): Promise<{ status: number; body: any }> {
  const response = await fetch(`${baseUrl}/health/ready`)
  return { status: response.status, body: await response.json() }
}

async function metricsText(baseUrl: string): Promise<string> {
  return (await fetch(`${baseUrl}/metrics`)).text()
}

t.test('listed at start-up as <server>__<tool> with the server schema; a call through a run over WebSocket', async (t) => {
  const structured: TestTool = {
    definition: toolDefinition('stat', {}),
    run: () => ({ content: [{ type: 'text', text: '{"size":3}' }], structuredContent: { size: 3 } }),
  }
  const image: TestTool = {
    definition: toolDefinition('thumbnail', {}),
    run: () => ({ content: [{ type: 'image', data: 'aGk=', mimeType: 'image/png' }] }),
  }
  const { up, client, mcp, baseUrl, logs } = await setup(t, [echo, structured, image])
  callsThenAnswers(up, 'files__echo', '{"text":"hi"}')

  client.send({ type: 'chat', content: 'echo hi' })
  const frames = await client.untilComplete()
  for (const frame of frames) t.ok(validServerFrame.Check(frame), `valid ${frame.type}:${frame.content}`)
  t.same(up.requests[0]!.body.tools, [
    { type: 'function', function: { name: 'files__echo', description: 'test tool echo', parameters: echo.definition.inputSchema } },
    { type: 'function', function: { name: 'files__stat', description: 'test tool stat', parameters: structured.definition.inputSchema } },
    { type: 'function', function: { name: 'files__thumbnail', description: 'test tool thumbnail', parameters: image.definition.inputSchema } },
  ], "the model sees the server's tools, prefixed, with their JSON Schema")
  t.match(statusOf(frames, 'tool_call')[0]?.metadata, { tool: 'files__echo', arguments: { text: 'hi' } })
  t.match(statusOf(frames, 'tool_result')[0]?.metadata, { tool: 'files__echo', result: 'echo: hi', is_error: false })
  t.equal(toolMessage(up.requests[1]), '"echo: hi"', 'the text content is what the model reads')
  t.same(mcp.calls, ['echo'], 'the server got the call under its own name')
  t.ok(mcp.headers.every((headers) => headers.authorization === 'Bearer mcp-secret'), 'configured headers go with every request')
  t.notOk(JSON.stringify(logs.lines).includes('mcp-secret'), 'headers are never logged')

  callsThenAnswers(up, 'files__stat', '')
  client.send({ type: 'chat', content: 'stat' })
  t.match(statusOf(await client.untilComplete(), 'tool_result')[0]?.metadata, { result: { size: 3 }, is_error: false }, 'structured content wins')
  callsThenAnswers(up, 'files__thumbnail', '{}')
  client.send({ type: 'chat', content: 'thumbnail' })
  t.match(statusOf(await client.untilComplete(), 'tool_result')[0]?.metadata, { result: [{ type: 'image', mimeType: 'image/png' }] }, 'other content is passed on as blocks')

  t.same(await ready(baseUrl), { status: 200, body: { status: 'ready', checks: { store: { ok: true }, draining: { ok: true }, mcp: { files: { ok: true } } } } })
  const metrics = await metricsText(baseUrl)
  t.match(metrics, /agw_mcp_tool_calls_total\{server="files",outcome="ok"\} 3/)
  t.match(metrics, /agw_mcp_tool_call_duration_seconds_count\{server="files"\} 3/)
  t.match(metrics, /agw_mcp_server_up\{server="files"\} 1/)
})

t.test('arguments are validated against the JSON Schema before the call; a tool error reaches the model', async (t) => {
  const failing: TestTool = { definition: toolDefinition('fail'), run: () => ({ content: [{ type: 'text', text: 'disk full' }], isError: true }) }
  const silent: TestTool = { definition: toolDefinition('mute'), run: () => ({ content: [{ type: 'image', data: 'aGk=', mimeType: 'image/png' }], isError: true }) }
  const { up, client, mcp, baseUrl } = await setup(t, [echo, failing, silent])

  callsThenAnswers(up, 'files__echo', '{"text":5,"extra":true}')
  client.send({ type: 'chat', content: 'bad' })
  const result = statusOf(await client.untilComplete(), 'tool_result')[0]?.metadata
  t.match(result, { is_error: true, result: /^invalid arguments for files__echo: .*must NOT have additional properties.*text must be string/ })
  t.same(mcp.calls, [], 'the server never saw the invalid call')

  callsThenAnswers(up, 'files__fail', '{}')
  client.send({ type: 'chat', content: 'fail' })
  t.match(statusOf(await client.untilComplete(), 'tool_result')[0]?.metadata, { is_error: true, result: 'files__fail failed: disk full' })
  t.equal(toolMessage(up.requests.at(-1)), 'Error: files__fail failed: disk full', 'the model is told')
  callsThenAnswers(up, 'files__mute', '{}')
  client.send({ type: 'chat', content: 'mute' })
  t.match(statusOf(await client.untilComplete(), 'tool_result')[0]?.metadata, { result: /the tool reported an error without a message/ })
  t.match(await metricsText(baseUrl), /agw_mcp_tool_calls_total\{server="files",outcome="error"\} 2/)
})

t.test('progress notifications become status:tool_progress run events, in order, before the result', async (t) => {
  const gates = [Promise.withResolvers<void>(), Promise.withResolvers<void>()]
  const counting: TestTool = {
    definition: toolDefinition('count'),
    async run(_args, { progress }) {
      await progress(1, 2, 'first half')
      await gates[0]!.promise
      await progress(2)
      await gates[1]!.promise
      return text('counted')
    },
  }
  const { up, client } = await setup(t, [counting])
  callsThenAnswers(up, 'files__count', '{}')
  client.send({ type: 'chat', content: 'count' })
  const first = await client.next((frame) => frame.content === 'tool_progress')
  gates[0]!.resolve()
  const second = await client.next((frame) => frame.content === 'tool_progress' && frame !== first)
  gates[1]!.resolve()
  await client.untilComplete()
  const frames = client.frames
  const call = statusOf(frames, 'tool_call')[0]!
  t.same(first.metadata, { run_id: call.metadata!.run_id, tool: 'files__count', call_id: call.metadata!.call_id, progress: 1, total: 2, message: 'first half' })
  t.same(second.metadata, { run_id: call.metadata!.run_id, tool: 'files__count', call_id: call.metadata!.call_id, progress: 2 }, 'total and message only when given')
  t.ok(validServerFrame.Check(first) && validServerFrame.Check(second), 'valid frames')
  const kinds = frames.filter((frame) => frame.type === 'status').map((frame) => frame.content)
  t.same(kinds, ['thinking', 'tool_call', 'tool_progress', 'tool_progress', 'tool_result'])
})

t.test("cancelling the run sends the MCP cancellation for its call in flight; the server sees it", async (t) => {
  const { up, client, mcp, baseUrl } = await setup(t, [waitsForCancel('wait')])
  callsThenAnswers(up, 'files__wait', '{}')
  client.send({ type: 'chat', content: 'wait', session_id: 'mcp-cancel' })
  await client.next((frame) => frame.content === 'tool_call')
  await until('the server has the call', () => mcp.calls.includes('wait'))
  client.send({ type: 'cancel', session_id: 'mcp-cancel' })
  const frames = await client.untilComplete()
  t.equal(frames.at(-1)?.metadata?.finish_reason, 'cancelled')
  t.same(statusOf(frames, 'tool_result'), [], 'no result for a cancelled call')
  await until('the server saw the cancellation', () => mcp.cancelled.length > 0)
  t.match(mcp.cancelled, [{ tool: 'wait' }])
  t.match(await metricsText(baseUrl), /agw_mcp_tool_calls_total\{server="files",outcome="cancelled"\} 1/)
})

t.test('a call past MCP_CALL_TIMEOUT_MS is cancelled at the server and the model is told', async (t) => {
  const { up, client, mcp } = await setup(t, [waitsForCancel('hang')], { config: { MCP_CALL_TIMEOUT_MS: 100 } })
  callsThenAnswers(up, 'files__hang', '{}')
  client.send({ type: 'chat', content: 'hang' })
  const frames = await client.untilComplete()
  t.match(statusOf(frames, 'tool_result')[0]?.metadata, { is_error: true, result: 'files__hang failed: no answer within 100 ms (MCP_CALL_TIMEOUT_MS); the call was cancelled' })
  t.equal(frames.at(-1)?.metadata?.finish_reason, 'stop', 'the run goes on')
  await until('the server saw the cancellation', () => mcp.cancelled.length > 0)
})

t.test('a server that goes away mid-call: a tool error, readiness degraded but ready, then a reconnect with backoff', async (t) => {
  const { up, client, mcp, baseUrl, logs } = await setup(t, [echo, waitsForCancel('hang')])
  callsThenAnswers(up, 'files__hang', '{}')
  client.send({ type: 'chat', content: 'hang' })
  await until('the server has the call', () => mcp.calls.includes('hang'))
  await mcp.kill()
  const frames = await client.untilComplete()
  t.match(statusOf(frames, 'tool_result')[0]?.metadata, { is_error: true, result: 'files__hang failed: MCP server files went away during the call' })
  t.equal(frames.at(-1)?.metadata?.finish_reason, 'stop', 'the run is not crashed')

  const down = await ready(baseUrl)
  t.equal(down.status, 200, 'still ready')
  t.match(down.body.checks.mcp.files, { ok: false, degraded: true, error: String })
  callsThenAnswers(up, 'files__echo', '{"text":"anyone?"}')
  client.send({ type: 'chat', content: 'echo' })
  t.match(statusOf(await client.untilComplete(), 'tool_result')[0]?.metadata, { is_error: true, result: /^files__echo failed: MCP server files is unavailable: / })
  t.match(await metricsText(baseUrl), /agw_mcp_server_up\{server="files"\} 0/)
  t.match(await metricsText(baseUrl), /agw_mcp_tool_calls_total\{server="files",outcome="failed"\} 2/)
  await logs.waitFor('MCP server unavailable; reconnecting', 2)
  const retries = logs.lines.filter((line) => line.msg === 'MCP server unavailable; reconnecting').map((line) => line.retryInMs as number)
  t.ok(retries[1]! > retries[0]!, `the delay grows: ${retries.join(', ')} ms`)

  await mcp.restart()
  await until('reconnected', async () => (await ready(baseUrl)).body.checks.mcp.files.ok)
  client.send({ type: 'chat', content: 'echo again' })
  t.match(statusOf(await client.untilComplete(), 'tool_result')[0]?.metadata, { is_error: false, result: 'echo: anyone?' })
})

t.test('a server that forgets the session (404) or fails a request: reconnected, or the call fails alone', async (t) => {
  const { up, client, mcp, logs } = await setup(t, [echo])
  callsThenAnswers(up, 'files__echo', '{"text":"x"}')
  mcp.failNextCall = 500
  client.send({ type: 'chat', content: 'one' })
  t.match(statusOf(await client.untilComplete(), 'tool_result')[0]?.metadata, { is_error: true, result: /^files__echo failed: Streamable HTTP error: .*upstream trouble/ })
  t.ok(logs.lines.some((line) => line.msg === 'MCP transport error'), 'logged, still connected')

  mcp.forgetSessions()
  client.send({ type: 'chat', content: 'two' })
  t.match(statusOf(await client.untilComplete(), 'tool_result')[0]?.metadata, { is_error: true, result: 'files__echo failed: MCP server files went away during the call' })
  await logs.waitFor('MCP server connected', 2)
  client.send({ type: 'chat', content: 'three' })
  t.match(statusOf(await client.untilComplete(), 'tool_result')[0]?.metadata, { is_error: false, result: 'echo: x' })
})

t.test('the tool list changes at runtime (notifications/tools/list_changed)', async (t) => {
  const { up, client, mcp, logs } = await setup(t, [echo])
  await logs.waitFor('MCP tools listed')
  const added: TestTool = { definition: toolDefinition('added'), run: () => text('new') }
  await mcp.setTools([added])
  const listed = await logs.waitFor('MCP tools listed', 2)
  t.same(listed.tools, ['files__added'])
  callsThenAnswers(up, 'files__added', '{}')
  client.send({ type: 'chat', content: 'new tool' })
  const frames = await client.untilComplete()
  t.same(up.requests.at(-2)!.body.tools.map((tool: any) => tool.function.name), ['files__added'], 'the model sees the new list')
  t.match(statusOf(frames, 'tool_result')[0]?.metadata, { is_error: false, result: 'new' })

  callsThenAnswers(up, 'files__echo', '{"text":"gone?"}')
  client.send({ type: 'chat', content: 'old tool' })
  t.match(statusOf(await client.untilComplete(), 'tool_result')[0]?.metadata, { is_error: true, result: /^unknown tool: files__echo/ })

  mcp.failListings = 'listing broke'
  await mcp.setTools([echo])
  await logs.waitFor('MCP tools could not be listed again after list_changed; keeping the previous list')
  client.send({ type: 'chat', content: 'old tool again' })
  t.match(statusOf(await client.untilComplete(), 'tool_result')[0]?.metadata, { is_error: true, result: /^unknown tool: files__echo; available tools: files__added/ })
})

t.test('what is exposed: the allow-list, names made valid, tools that cannot be exposed left out with a warning', async (t) => {
  const tools: TestTool[] = [
    echo,
    { definition: toolDefinition('fs.read/v2'), run: () => text('read') },
    { definition: toolDefinition('fs_read_v2'), run: () => text('clash') },
    { definition: toolDefinition('x'.repeat(61)), run: () => text('long') },
    { definition: { name: 'broken', inputSchema: { type: 'object', properties: { a: { $ref: '#/nope' } } } }, run: () => text('never') },
    { definition: { name: 'titled', title: 'A title', inputSchema: { type: 'object' } }, run: () => text('titled') },
    { definition: { name: 'bare', inputSchema: { type: 'object' } }, run: () => text('bare') },
    { definition: toolDefinition('hidden'), run: () => text('hidden') },
  ]
  const { up, client, logs } = await setup(t, tools, {
    servers: (url) => [{ name: 'fs', url, tools: ['echo', 'fs.read/v2', 'fs_read_v2', 'x'.repeat(61), 'broken', 'titled', 'bare'] }],
  })
  callsThenAnswers(up, 'fs__fs_read_v2', '')
  client.send({ type: 'chat', content: 'read' })
  const frames = await client.untilComplete()
  t.same(
    up.requests[0]!.body.tools.map((tool: any) => [tool.function.name, tool.function.description]),
    [['fs__echo', 'test tool echo'], ['fs__fs_read_v2', 'test tool fs.read/v2'], ['fs__titled', 'A title'], ['fs__bare', '']],
  )
  t.match(statusOf(frames, 'tool_result')[0]?.metadata, { result: 'read' }, 'the call goes out under the original name')
  const warnings = logs.lines.filter((line) => String(line.msg).startsWith('MCP tool left out')).map((line) => line.msg)
  t.match(warnings, [/another of its tools is also exposed as fs__fs_read_v2/, /longer than 64 characters/, /input schema does not compile/])
})

t.test('a server down at start-up does not stop the gateway: degraded, then connected when it comes up', async (t) => {
  const port = await freePort()
  const neverPort = await freePort()
  const up = await createFakeUpstream()
  t.teardown(() => up.close())
  const logs = collectLogs()
  const { baseUrl, wsUrl } = await startApp(
    t,
    { modelProvider: 'openai', OPENAI_BASE_URL: up.baseURL, OPENAI_API_KEY: 'test', LOG_LEVEL: 'info', mcpServers: [{ name: 'late', url: `http://127.0.0.1:${port}/mcp` }, { name: 'never', url: `http://127.0.0.1:${neverPort}/mcp` }] },
    { mcp: FAST, logStream: logs.stream },
  )
  const down = await ready(baseUrl)
  t.equal(down.status, 200)
  t.match(down.body, { status: 'ready', checks: { store: { ok: true }, mcp: { late: { ok: false, degraded: true, error: String }, never: { ok: false } } } })
  const mcp = await createTestMcpServer([echo], port)
  t.teardown(() => mcp.close())
  await until('connected', async () => (await ready(baseUrl)).body.checks.mcp.late.ok)
  callsThenAnswers(up, 'late__echo', '{"text":"late"}')
  const client = await connect(t, wsUrl, bearer(signToken('alice')))
  client.send({ type: 'chat', content: 'late' })
  const frames = await client.untilComplete()
  t.same(up.requests.at(-2)!.body.tools.map((tool: any) => tool.function.name), ['get_current_time', 'calculate', 'late__echo'], 'next to the built-ins')
  t.match(statusOf(frames, 'tool_result')[0]?.metadata, { is_error: false, result: 'echo: late' })
})

t.test('a name another tool already holds: the listing is refused and logged, the gateway goes on', async (t) => {
  const clash: Tool = { name: 'files__echo', description: 'compiled in', parameters: Type.Object({}), run: () => 'local' }
  const { up, client, logs } = await setup(t, [echo], { customTools: [clash] })
  await logs.waitFor('MCP tools could not be registered; keeping the previous ones')
  callsThenAnswers(up, 'files__echo', '{}')
  client.send({ type: 'chat', content: 'echo' })
  t.match(statusOf(await client.untilComplete(), 'tool_result')[0]?.metadata, { result: 'local' }, 'the compiled-in tool stays')
})

t.test('TOOLS_REQUIRING_APPROVAL names MCP tools by their exposed names: nothing reaches the server before the approval', async (t) => {
  const { up, client, mcp } = await setup(t, [echo], { config: { TOOLS_REQUIRING_APPROVAL: ['files__echo'] } })
  callsThenAnswers(up, 'files__echo', '{"text":"careful"}')
  client.send({ type: 'chat', session_id: 'mcp-approval', content: 'echo carefully' })
  const required = await client.next((frame) => frame.type === 'status' && frame.content === 'approval_required')
  t.match(required.metadata, { tool: 'files__echo', arguments: { text: 'careful' } })
  t.same(mcp.calls, [], 'the server has not been called')
  client.send({ type: 'tool_approval', session_id: 'mcp-approval', call_id: required.metadata?.call_id, approved: true })
  const frames = await client.untilComplete()
  t.match(statusOf(frames, 'tool_result')[0]?.metadata, { tool: 'files__echo', result: 'echo: careful', is_error: false })
  t.same(mcp.calls, ['echo'], 'called once, after the approval')
})
