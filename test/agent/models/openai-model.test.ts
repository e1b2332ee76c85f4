import t from 'tap'
import net from 'node:net'
import pino from 'pino'
import OpenAI from 'openai'
import type { FastifyBaseLogger } from 'fastify'
import { createOpenAIModel, classifyError, retryAfterMs, type UpstreamObserver } from '../../../src/agent/models/openai-model.ts'
import { UpstreamError } from '../../../src/agent/upstream-error.ts'
import { createModel } from '../../../src/agent/models/index.ts'
import { testConfig } from '../../helpers/app.ts'
import type { ModelChunk, ModelRequest, OpenAITool } from '../../../src/agent/models/types.ts'
import { createFakeUpstream, textSteps, type RecordedRequest, type Script } from '../../helpers/fake-upstream.ts'

interface Teardown {
  teardown(fn: () => unknown): void
}

const tools: OpenAITool[] = [{ type: 'function', function: { name: 'calculate', description: 'math', parameters: { type: 'object' } } }]

async function setup(t: Teardown, script?: (request: RecordedRequest) => Script, options: { apiKey?: string; log?: FastifyBaseLogger } = {}) {
  const up = await createFakeUpstream(script)
  t.teardown(() => up.close())
  const outcomes: Array<number | string> = []
  const observer: UpstreamObserver = { request: (outcome) => void outcomes.push(outcome), retry: () => {} }
  const model = createOpenAIModel({
    apiKey: 'apiKey' in options ? options.apiKey : 'sk-test',
    baseURL: up.baseURL,
    model: 'gpt-test',
    timeoutMs: 10_000,
    observer,
    ...(options.log ? { log: options.log } : {}),
  })
  return { up, model, outcomes }
}

function request(signal = new AbortController().signal, withTools = false): ModelRequest {
  return { messages: [{ role: 'system', content: 'sys' }, { role: 'user', content: 'hi' }], tools: withTools ? tools : [], signal }
}

async function collect(stream: AsyncIterable<ModelChunk[]>, chunks: ModelChunk[] = []): Promise<ModelChunk[]> {
  for await (const batch of stream) chunks.push(...batch)
  return chunks
}

async function failure(promise: Promise<unknown>): Promise<UpstreamError> {
  try {
    await promise
  } catch (err) {
    return err as UpstreamError
  }
  throw new Error('expected a failure')
}

/** Consecutive text chunks as one: how the upstream's writes fell into reads is the network's business. */
function joinTexts(chunks: ModelChunk[]): ModelChunk[] {
  const out: ModelChunk[] = []
  for (const chunk of chunks) {
    const last = out.at(-1)
    if (chunk.type === 'text' && last?.type === 'text') out[out.length - 1] = { type: 'text', text: last.text + chunk.text }
    else out.push(chunk.type === 'text' ? { type: 'text', text: chunk.text } : chunk)
  }
  return out
}

t.test('streams text, usage and finish; sends what the upstream expects', async (t) => {
  const { up, model, outcomes } = await setup(t, () => ({ steps: textSteps('Hi there', { usage: { prompt_tokens: 5, completion_tokens: 2 } }) }))
  t.equal(model.name, 'openai')
  t.same(joinTexts(await collect(model.stream(request()))), [
    { type: 'text', text: 'Hi there' },
    { type: 'finish', reason: 'stop' },
    { type: 'usage', usage: { prompt_tokens: 5, completion_tokens: 2 } },
  ])
  const sent = up.requests[0]!
  t.match(sent.body, { model: 'gpt-test', stream: true, stream_options: { include_usage: true }, messages: request().messages })
  t.notOk('tools' in sent.body, 'no tools key when there are none')
  t.equal(sent.headers.authorization, 'Bearer sk-test')
  t.equal(sent.headers['x-stainless-retry-count'], '0', 'the SDK does not retry: our layer does')
  t.same(outcomes, [200])
})

t.test('tool calls arrive as fragments, tools are sent, a keyless server gets a placeholder key', async (t) => {
  const { up, model } = await setup(
    t,
    () => ({
      steps: [
        { toolCalls: [{ index: 0, id: 'call_1', name: 'calculate' }] },
        { toolCalls: [{ index: 0, arguments: '{"expression":' }] },
        { toolCalls: [{ index: 0, arguments: '"1+1"}' }] },
        { finish: 'tool_calls' },
        { done: true },
      ],
    }),
    { apiKey: undefined },
  )
  t.same(await collect(model.stream(request(undefined, true))), [
    { type: 'tool_call', index: 0, id: 'call_1', name: 'calculate' },
    { type: 'tool_call', index: 0, arguments: '{"expression":' },
    { type: 'tool_call', index: 0, arguments: '"1+1"}' },
    { type: 'finish', reason: 'tool_calls' },
  ])
  t.same(up.requests[0]!.body.tools, tools)
  t.equal(up.requests[0]!.headers.authorization, 'Bearer no-key')
})

t.test('legacy finish_reason function_call is a tool_calls finish', async (t) => {
  const chunk = (finish: string) =>
    `data: ${JSON.stringify({ id: 'x', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: {}, finish_reason: finish }] })}\n\n`
  const { model } = await setup(t, () => ({ steps: [{ raw: chunk('function_call') }, { done: true }] }))
  t.same(await collect(model.stream(request())), [{ type: 'finish', reason: 'tool_calls' }])
})

t.test('a body that ends before the model finished: UpstreamError truncated', async (t) => {
  const { model } = await setup(t, () => ({ steps: [{ text: 'par' }, { delayMs: 20 }, { text: 'tial' }] }))
  const got: ModelChunk[] = []
  const error = await failure(collect(model.stream(request()), got))
  t.ok(error instanceof UpstreamError)
  t.equal(error.failure, 'truncated')
  t.equal(error.retryable, true)
  t.same(got.map((c) => (c.type === 'text' ? c.text : c.type)), ['par', 'tial'], 'what came first was yielded')
})

t.test('the chunks of one upstream read come as one batch, their text joined; reads apart stay apart', async (t) => {
  const event = (content: string) => `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content } }] })}\n\n`
  const { model } = await setup(t, () => ({
    steps: [{ raw: event('a') + event('b') + event('c') }, { delayMs: 20 }, { raw: event('d') }, { delayMs: 20 }, { finish: 'stop' }, { done: true }],
  }))
  const batches: ModelChunk[][] = []
  for await (const batch of model.stream(request())) batches.push(batch)
  t.same(batches, [[{ type: 'text', text: 'abc', deltas: 3 }], [{ type: 'text', text: 'd' }], [{ type: 'finish', reason: 'stop' }]], 'the joined text says how many deltas it holds')
})

t.test('reasoning deltas stream as reasoning chunks; an observer without the reasoning hook is fine', async (t) => {
  const { model } = await setup(t, () => ({ steps: [{ chunk: { choices: [{ index: 0, delta: { reasoning_content: 'hm' }, finish_reason: null }] } }, ...textSteps('ok')] }))
  t.same(await collect(model.stream(request())), [{ type: 'reasoning', text: 'hm' }, { type: 'text', text: 'ok' }, { type: 'finish', reason: 'stop' }])
})

t.test('[DONE] without a finish_reason is a whole answer', async (t) => {
  const { model } = await setup(t, () => ({ steps: [{ text: 'all' }, { done: true }] }))
  t.same(await collect(model.stream(request())), [{ type: 'text', text: 'all' }, { type: 'finish', reason: 'stop' }])
})

t.test('finish without [DONE] stands', async (t) => {
  const { model } = await setup(t, () => ({ steps: [{ text: 'ok' }, { finish: 'length' }] }))
  t.same(await collect(model.stream(request())), [{ type: 'text', text: 'ok' }, { type: 'finish', reason: 'length' }])
})

t.test('abort: throws the signal reason and closes the request', async (t) => {
  t.test('mid-stream', async (t) => {
    const { up, model } = await setup(t, () => ({ steps: [{ text: 'a' }, { stall: true }] }))
    const controller = new AbortController()
    const reason = new Error('cancelled by the user')
    const got: ModelChunk[] = []
    const consumed = collect(model.stream(request(controller.signal)), got)
    const sent = await up.nextRequest()
    while (got.length === 0) await new Promise((resolve) => setTimeout(resolve, 5))
    controller.abort(reason)
    t.equal(await failure(consumed), reason)
    await sent.closed
    t.equal(sent.closedByClient, true)
  })

  t.test('between chunks, while the caller holds one', async (t) => {
    const { model } = await setup(t, () => ({ steps: textSteps('a b c') }))
    const controller = new AbortController()
    const reason = new Error('stop')
    const consumed = (async () => {
      for await (const batch of model.stream(request(controller.signal))) if (batch.some((chunk) => chunk.type === 'text')) controller.abort(reason)
    })()
    t.equal(await failure(consumed), reason)
  })

  t.test('after the last chunk, while the caller holds it', async (t) => {
    // [DONE] without a finish_reason: the finish is the last batch, made after the body ended.
    const { model } = await setup(t, () => ({ steps: [{ text: 'a' }, { done: true }] }))
    const controller = new AbortController()
    const reason = new Error('too late, still cancelled')
    const consumed = (async () => {
      for await (const batch of model.stream(request(controller.signal))) if (batch.some((chunk) => chunk.type === 'finish')) controller.abort(reason)
    })()
    t.equal(await failure(consumed), reason)
  })

  t.test('before the upstream answered', async (t) => {
    const { up, model, outcomes } = await setup(t, () => ({ steps: [{ stall: true }] }))
    const controller = new AbortController()
    const reason = new Error('early')
    const consumed = collect(model.stream(request(controller.signal)))
    await up.nextRequest()
    controller.abort(reason)
    t.equal(await failure(consumed), reason)
    // The request was read, its answer not yet: the SDK call itself is cut short.
    t.same(outcomes, ['aborted'])
  })

  t.test('already aborted', async (t) => {
    const { model, outcomes } = await setup(t)
    const controller = new AbortController()
    const reason = new Error('never started')
    controller.abort(reason)
    t.equal(await failure(collect(model.stream(request(controller.signal)))), reason)
    t.same(outcomes, ['aborted'])
  })
})

t.test('HTTP failures are classified', async (t) => {
  const cases: Array<[Script, string, boolean, number | undefined]> = [
    [{ status: 401 }, 'auth', false, undefined],
    [{ status: 403 }, 'auth', false, undefined],
    [{ status: 429, headers: { 'retry-after': '2' } }, 'rate_limited', true, 2000],
    [{ status: 429, headers: { 'retry-after-ms': '150' } }, 'rate_limited', true, 150],
    [{ status: 500 }, 'server', true, undefined],
    [{ status: 503, headers: { 'retry-after': '1' } }, 'server', true, 1000],
    [{ status: 408 }, 'server', true, undefined],
    [{ status: 409 }, 'server', true, undefined],
    [{ status: 400 }, 'bad_request', false, undefined],
    [{ status: 404 }, 'bad_request', false, undefined],
    [{ status: 422 }, 'bad_request', false, undefined],
  ]
  for (const [script, kind, retryable, wait] of cases) {
    const { model, outcomes } = await setup(t, () => script)
    const error = await failure(collect(model.stream(request())))
    t.ok(error instanceof UpstreamError, `${script.status}: UpstreamError`)
    t.equal(error.failure, kind, `${script.status}: ${kind}`)
    t.equal(error.status, script.status)
    t.equal(error.retryable, retryable)
    t.equal(error.retryAfterMs, wait, `${script.status}: retryAfterMs ${wait}`)
    t.equal(error.code, 'upstream_error')
    t.same(outcomes, [script.status], 'the observer is told the status')
  }
})

t.test('connection and stream failures are classified', async (t) => {
  t.test('connection refused', async (t) => {
    const server = net.createServer()
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const { port } = server.address() as net.AddressInfo
    await new Promise((resolve) => server.close(resolve))
    const outcomes: Array<number | string> = []
    const model = createOpenAIModel({
      apiKey: 'x',
      baseURL: `http://127.0.0.1:${port}/v1`,
      model: 'm',
      timeoutMs: 5000,
      observer: { request: (o) => void outcomes.push(o), retry: () => {} },
    })
    const error = await failure(collect(model.stream(request())))
    t.equal(error.failure, 'connection')
    t.equal(error.message, 'could not reach the model server')
    t.same(outcomes, ['network'])
  })

  t.test('reset mid-stream', async (t) => {
    const { model } = await setup(t, () => ({ steps: [{ text: 'a' }, { delayMs: 10 }, { reset: true }] }))
    const error = await failure(collect(model.stream(request())))
    t.equal(error.failure, 'connection')
    t.equal(error.message, 'the connection to the model server broke')
  })

  t.test('a malformed chunk: logged through our logger with an excerpt, not to the console', async (t) => {
    const lines: string[] = []
    const log = pino({ level: 'debug' }, { write: (line: string) => void lines.push(line) }) as unknown as FastifyBaseLogger
    const { model } = await setup(t, () => ({ steps: [{ text: 'a' }, { raw: `data: {nope${'x'.repeat(500)}\n\n` }] }), { log })
    const got: ModelChunk[] = []
    const error = await failure(collect(model.stream(request()), got))
    t.equal(error.failure, 'malformed')
    t.same(joinTexts(got), [{ type: 'text', text: 'a' }], 'the text before it was relayed')
    const logged = lines.map((line) => JSON.parse(line) as Record<string, unknown>).find((line) => line.component === 'openai-stream')
    t.match(logged, { level: 40, excerpt: /^\{nopex+$/ })
    t.equal((logged?.excerpt as string).length, 200, 'an excerpt, not the whole event')
  })

  t.test('a chunk that is JSON but not an object is malformed too', async (t) => {
    const { model } = await setup(t, () => ({ steps: [{ raw: 'data: null\n\n' }] }))
    t.equal((await failure(collect(model.stream(request())))).failure, 'malformed')
  })

  t.test('an `error` event inside the stream', async (t) => {
    const { model } = await setup(t, () => ({ steps: [{ raw: `event: error\ndata: ${JSON.stringify({ message: 'quota', code: 'insufficient_quota' })}\n\n` }] }))
    const error = await failure(collect(model.stream(request())))
    t.equal(error.failure, 'rate_limited')
  })

  t.test('an error object inside the stream', async (t) => {
    const { model } = await setup(t, () => ({ steps: [{ raw: `data: ${JSON.stringify({ error: { message: 'overloaded', type: 'server_error' } })}\n\n` }] }))
    const error = await failure(collect(model.stream(request())))
    t.equal(error.failure, 'server')
    t.equal(error.message, 'the model server failed (500 inside the stream)')
    t.equal(error.status, undefined, 'no HTTP status: the response was a 200')
  })

  t.test('an error object that says nothing we know', async (t) => {
    const { model } = await setup(t, () => ({ steps: [{ raw: `data: ${JSON.stringify({ error: { message: 'hmm' } })}\n\n` }] }))
    const error = await failure(collect(model.stream(request())))
    t.equal(error.failure, 'server')
    t.equal(error.message, 'the model server reported an error mid-stream')
  })
})

t.test('classifyError', async (t) => {
  const ours = new UpstreamError('timeout', 'slow')
  t.equal(classifyError(ours), ours, 'already classified: unchanged')
  t.equal(classifyError(ours).code, 'upstream_timeout')
  t.equal(classifyError(new SyntaxError('bad json')).failure, 'malformed')
  t.equal(classifyError(new TypeError('terminated')).failure, 'connection')
  t.equal(classifyError('a string').failure, 'connection')
  t.equal(classifyError(new OpenAI.APIConnectionError({ message: 'refused' })).failure, 'connection')
  t.equal(classifyError(new OpenAI.APIConnectionTimeoutError()).failure, 'connection')
  const cause = new OpenAI.APIError(502, { message: 'bad gateway' }, 'bad gateway', new Headers())
  const classified = classifyError(cause)
  t.equal(classified.failure, 'server')
  t.equal(classified.cause, cause, 'the original is kept as the cause')
})

t.test('retryAfterMs', async (t) => {
  const h = (entries: Record<string, string>) => new Headers(entries)
  const now = Date.parse('2030-01-01T00:00:00Z')
  t.equal(retryAfterMs(undefined), undefined)
  t.equal(retryAfterMs(h({})), undefined)
  t.equal(retryAfterMs(h({ 'retry-after-ms': '250' })), 250)
  t.equal(retryAfterMs(h({ 'retry-after-ms': '0' })), 0)
  t.equal(retryAfterMs(h({ 'retry-after-ms': '250', 'retry-after': '9' })), 250, 'ms wins')
  t.equal(retryAfterMs(h({ 'retry-after-ms': 'soon', 'retry-after': '2' })), 2000, 'a bad ms value falls back')
  t.equal(retryAfterMs(h({ 'retry-after-ms': '-5', 'retry-after': '2' })), 2000, 'a negative ms value falls back')
  t.equal(retryAfterMs(h({ 'retry-after': '1.5' })), 1500)
  t.equal(retryAfterMs(h({ 'retry-after': '-3' })), 0, 'never negative')
  t.equal(retryAfterMs(h({ 'retry-after': 'Tue, 01 Jan 2030 00:00:05 GMT' }), now), 5000, 'an HTTP date')
  t.equal(retryAfterMs(h({ 'retry-after': 'Mon, 31 Dec 2029 23:59:00 GMT' }), now), 0, 'a date in the past')
  t.equal(retryAfterMs(h({ 'retry-after': 'whenever' })), undefined)
})

t.test('createModel: the configured provider, loud about the mock, OpenAI by default', async (t) => {
  const lines: Array<{ level: number; msg: string; baseURL?: string }> = []
  const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) }) as unknown as FastifyBaseLogger
  const mock = createModel(testConfig({ modelProvider: 'mock' }), log)
  t.equal(mock.name, 'mock')
  t.match(lines[0], { level: 40, msg: /MODEL PROVIDER IS THE OFFLINE MOCK/ })
  const openai = createModel(testConfig({ modelProvider: 'openai', OPENAI_API_KEY: 'sk-x', OPENAI_BASE_URL: undefined }), log)
  t.equal(openai.name, 'openai')
  t.match(lines[1], { level: 30, msg: 'model provider: openai', baseURL: 'https://api.openai.com/v1' })
  // Built, never called: no request leaves the machine.
  t.ok(createOpenAIModel({ apiKey: 'sk-x', baseURL: undefined, model: 'm', timeoutMs: 1000 }))
})

t.test('a stream ended by [DONE] before its body ends keeps its connection: the next request reuses it', async (t) => {
  // [DONE], then the end of the chunked body 20 ms later: servers flush them apart.
  const { up, model } = await setup(t, () => ({ steps: [...textSteps('Hi there'), { delayMs: 20 }] }))
  for (let run = 0; run < 3; run++) {
    t.same(joinTexts(await collect(model.stream(request()))).filter((chunk) => chunk.type === 'text'), [{ type: 'text', text: 'Hi there' }], `run ${run}`)
    // The answer is whole at [DONE]; the connection is free once the body has ended.
    await new Promise((resolve) => setTimeout(resolve, 60))
  }
  t.equal(up.requests.length, 3)
  t.equal(up.connections, 1, 'one connection for the three requests')
})

t.test('after [DONE], what else the body holds is read and dropped; a body that never ends is cut off within the limit', async (t) => {
  const { up, model } = await setup(t, (request) =>
    request.index === 0 ? { steps: [...textSteps('Hi'), { delayMs: 10 }, { raw: `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: 'ignored' } }] })}\n\n` }, { delayMs: 20 }] } : { steps: [...textSteps('Hi'), { stall: true }] },
  )
  t.same(joinTexts(await collect(model.stream(request()))).filter((chunk) => chunk.type === 'text'), [{ type: 'text', text: 'Hi' }], 'nothing after [DONE] is relayed')
  await up.requests[0]!.closed
  t.notOk(up.requests[0]!.closedByClient, 'the first body was read to its end')
  t.same(joinTexts(await collect(model.stream(request()))).filter((chunk) => chunk.type === 'text'), [{ type: 'text', text: 'Hi' }], 'the answer is whole at [DONE]')
  t.equal(up.requests[1]!.closedAt, undefined, 'the run ended without waiting for the body')
  await up.requests[1]!.closed
  t.ok(up.requests[1]!.closedByClient, 'the stalled body was cancelled by us')
})
