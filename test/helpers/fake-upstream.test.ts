import t from 'tap'
import http from 'node:http'
import OpenAI, { APIError, APIUserAbortError, RateLimitError } from 'openai'
import { createFakeUpstream, textSteps } from './fake-upstream.ts'
import type { FakeUpstream, RecordedRequest, Script } from './fake-upstream.ts'

async function upstream(
  tt: { teardown(fn: () => unknown): void },
  script?: (req: RecordedRequest) => Script,
): Promise<{ up: FakeUpstream; client: OpenAI }> {
  const up = await createFakeUpstream(script)
  tt.teardown(() => up.close())
  const client = new OpenAI({ baseURL: up.baseURL, apiKey: 'test', maxRetries: 0 })
  return { up, client }
}

const messages = [{ role: 'user' as const, content: 'hi' }]

function stream(client: OpenAI, signal?: AbortSignal) {
  return client.chat.completions.create(
    { model: 'm', messages, stream: true, stream_options: { include_usage: true } },
    { signal },
  )
}

async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const start = Date.now()
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error('waitFor: timed out')
    await new Promise((r) => setTimeout(r, 5))
  }
}

t.test('textSteps splits words and keeps whitespace', async (tt) => {
  const steps = textSteps('Hello big  world ', { usage: { prompt_tokens: 1, completion_tokens: 3 } })
  tt.same(steps, [
    { text: 'Hello' },
    { text: ' big' },
    { text: '  world ' },
    { finish: 'stop' },
    { usage: { prompt_tokens: 1, completion_tokens: 3 } },
    { done: true },
  ])
  tt.same(textSteps(['a', 'b'], { delayMs: 5 }), [
    { delayMs: 5 },
    { text: 'a' },
    { delayMs: 5 },
    { text: 'b' },
    { finish: 'stop' },
    { done: true },
  ])
  tt.same(textSteps(''), [{ finish: 'stop' }, { done: true }])
})

t.test('streams text and usage through the real SDK; records the request', async (tt) => {
  const { up, client } = await upstream(tt, () => ({
    steps: textSteps('Hello big world', { usage: { prompt_tokens: 7, completion_tokens: 3 } }),
  }))
  const s = await stream(client)
  const chunks = []
  for await (const c of s) chunks.push(c)
  const text = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')
  tt.equal(text, 'Hello big world')
  tt.equal(chunks[0]?.choices[0]?.delta.role, 'assistant', 'first delta carries the role')
  tt.equal(chunks[0]?.object, 'chat.completion.chunk')
  tt.equal(chunks[0]?.model, 'm', 'chunk model echoes the request model')
  tt.match(chunks[0]?.id, /^chatcmpl-/)
  tt.equal(chunks[3]?.choices[0]?.finish_reason, 'stop')
  const last = chunks.at(-1)
  tt.same(last?.choices, [])
  tt.same(last?.usage, { prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 })
  tt.equal(chunks[0]?.usage, null, 'with include_usage, other chunks carry usage: null like OpenAI')

  const rec = await up.nextRequest()
  tt.equal(rec.index, 0)
  tt.equal(rec.body.model, 'm')
  tt.equal(rec.body.stream, true)
  tt.same(rec.body.stream_options, { include_usage: true })
  tt.same(rec.body.messages, messages)
  tt.equal(rec.headers.authorization, 'Bearer test')
  await rec.closed
  tt.type(rec.closedAt, 'number')
  tt.equal(rec.closedByClient, false)
  tt.equal(rec.chunksWritten, 6) // 3 text + finish + usage + [DONE]
})

t.test('default script, script() replacement, nextRequest ordering, /chat/completions route', async (tt) => {
  const up = await createFakeUpstream()
  tt.teardown(() => up.close())
  const pending = up.nextRequest()
  const client = new OpenAI({ baseURL: up.baseURL, apiKey: 'test', maxRetries: 0 })
  let text = ''
  for await (const c of await stream(client)) text += c.choices[0]?.delta.content ?? ''
  tt.equal(text, 'Hello world')
  tt.equal((await pending).index, 0)

  up.script((req) => ({ steps: textSteps(`request ${req.index}`) }))
  const bare = new OpenAI({ baseURL: up.baseURL.replace(/\/v1$/, ''), apiKey: 'test', maxRetries: 0 })
  text = ''
  for await (const c of await stream(bare)) text += c.choices[0]?.delta.content ?? ''
  tt.equal(text, 'request 1')
  tt.equal((await up.nextRequest()).index, 1)
  tt.equal(up.requests.length, 2)
})

t.test('tool_calls deltas arrive', async (tt) => {
  const { client } = await upstream(tt, () => ({
    steps: [
      { toolCalls: [{ index: 0, id: 'call_1', name: 'get_weather', arguments: '' }] },
      { toolCalls: [{ index: 0, arguments: '{"city":' }] },
      { toolCalls: [{ index: 0, arguments: '"Paris"}' }] },
      { toolCalls: [{ index: 1, id: 'call_2', name: 'now' }] },
      { finish: 'tool_calls' },
      { usage: { prompt_tokens: 1, completion_tokens: 2 } },
      { done: true },
    ],
  }))
  const calls: Array<{ id?: string; name: string; args: string }> = []
  let finish: string | null | undefined
  for await (const c of await stream(client)) {
    const choice = c.choices[0]
    if (!choice) continue
    finish = choice.finish_reason ?? finish
    for (const d of choice.delta.tool_calls ?? []) {
      const call = (calls[d.index] ??= { name: '', args: '' })
      if (d.id) call.id = d.id
      if (d.type) tt.equal(d.type, 'function')
      call.name += d.function?.name ?? ''
      call.args += d.function?.arguments ?? ''
    }
  }
  tt.same(calls, [
    { id: 'call_1', name: 'get_weather', args: '{"city":"Paris"}' },
    { id: 'call_2', name: 'now', args: '' },
  ])
  tt.equal(finish, 'tool_calls')
})

t.test('chunk steps are written exactly as given, and ignored by non-streaming answers', async (tt) => {
  const own = { id: '', object: 'chat.completion.chunk', created: 0, model: '', choices: [], prompt_filter_results: [{ prompt_index: 0 }] }
  const { up, client } = await upstream(tt, () => ({ steps: [{ chunk: own }, { text: 'hi' }, { finish: 'stop' }, { done: true }] }))
  const chunks: unknown[] = []
  for await (const c of await stream(client)) chunks.push(c)
  tt.same(chunks[0], own, 'no role, usage or id added')
  tt.equal(chunks.length, 3)
  tt.equal(up.requests[0]?.chunksWritten, 4)
  const completion = await client.chat.completions.create({ model: 'm', messages })
  tt.equal(completion.choices[0]?.message.content, 'hi')
})

t.test('abort via AbortController mid-stream: closedAt set, closedByClient true', async (tt) => {
  const { up, client } = await upstream(tt, () => ({ steps: textSteps('a b c d e f', { delayMs: 20 }) }))
  const ac = new AbortController()
  const s = await stream(client, ac.signal)
  const got: string[] = []
  let threw: unknown
  try {
    for await (const c of s) {
      got.push(c.choices[0]?.delta.content ?? '')
      if (got.length === 2) ac.abort()
    }
  } catch (err) {
    threw = err
  }
  // Observed SDK behaviour (openai v7): aborting a stream that is being iterated ends the
  // for-await loop silently; no APIUserAbortError is thrown. Callers must check signal.aborted.
  tt.equal(threw, undefined, 'SDK ends iteration silently on abort')
  tt.same(got, ['a', ' b'])
  const rec = up.requests[0]!
  await rec.closed
  tt.type(rec.closedAt, 'number')
  tt.equal(rec.closedByClient, true)
  tt.ok(rec.chunksWritten < 8, 'server stopped writing')
})

t.test('abort before the stream is opened rejects with APIUserAbortError', async (tt) => {
  const { client } = await upstream(tt)
  const ac = new AbortController()
  ac.abort()
  let err: unknown
  try {
    await stream(client, ac.signal)
  } catch (e) {
    err = e
  }
  tt.ok(err instanceof APIUserAbortError, 'APIUserAbortError')
  // Surprise: its .name is plain 'Error' (not 'AbortError'/'APIUserAbortError'); use instanceof.
  tt.equal((err as Error).name, 'Error')
})

t.test('429 with retry-after surfaces as RateLimitError', async (tt) => {
  const { up, client } = await upstream(tt, () => ({ status: 429, headers: { 'retry-after': '1' } }))
  let err: unknown
  try {
    await stream(client)
  } catch (e) {
    err = e
  }
  tt.ok(err instanceof RateLimitError, 'RateLimitError')
  const e = err as RateLimitError
  tt.equal(e.status, 429)
  tt.equal(e.headers?.get('retry-after'), '1')
  tt.equal(e.code, 'rate_limit_exceeded')
  tt.equal(e.type, 'requests')
  tt.equal(up.requests.length, 1)
  tt.equal(up.requests[0]?.closedByClient, false)
})

t.test('retry-after-ms is honoured by the SDK retry loop', async (tt) => {
  const up = await createFakeUpstream((req) =>
    req.index === 0 ? { status: 429, headers: { 'retry-after-ms': '10' } } : { steps: textSteps('ok') },
  )
  tt.teardown(() => up.close())
  const client = new OpenAI({ baseURL: up.baseURL, apiKey: 'test', maxRetries: 1 })
  let text = ''
  for await (const c of await stream(client)) text += c.choices[0]?.delta.content ?? ''
  tt.equal(text, 'ok')
  tt.equal(up.requests.length, 2)
  const [first, second] = up.requests
  tt.ok(second!.receivedAt - first!.receivedAt >= 9, 'waited ~retry-after-ms')
  tt.equal(second!.headers['x-stainless-retry-count'], '1')
})

t.test('errorBody override and 500', async (tt) => {
  const { client } = await upstream(tt, () => ({
    status: 500,
    errorBody: { error: { message: 'custom boom', type: 'server_error', code: 'x' } },
  }))
  await tt.rejects(stream(client), { status: 500, message: /custom boom/, code: 'x' })
})

t.test('stall + abort closes the request', async (tt) => {
  const { up, client } = await upstream(tt, () => ({ steps: [{ text: 'a' }, { stall: true }] }))
  const ac = new AbortController()
  const s = await stream(client, ac.signal)
  const got: string[] = []
  for await (const c of s) {
    got.push(c.choices[0]?.delta.content ?? '')
    setTimeout(() => ac.abort(), 30)
  }
  tt.same(got, ['a'])
  const rec = up.requests[0]!
  await rec.closed
  tt.equal(rec.closedByClient, true)
  tt.type(rec.closedAt, 'number')
})

t.test('close() does not hang with a stalled stream and rejects pending nextRequest', async (tt) => {
  const up = await createFakeUpstream(() => ({ steps: [{ stall: true }] }))
  const client = new OpenAI({ baseURL: up.baseURL, apiKey: 'test', maxRetries: 0 })
  const s = await stream(client)
  const consumed = (async () => {
    try {
      for await (const _ of s) {
        // nothing arrives
      }
      return 'ended'
    } catch (err) {
      return err
    }
  })()
  const rec = await up.nextRequest()
  const waiting = up.nextRequest()
  const start = performance.now()
  await up.close()
  tt.ok(performance.now() - start < 1000, 'close() is quick')
  await rec.closed
  tt.equal(rec.closedByClient, false, 'closed by the server, not the client')
  await tt.rejects(waiting, /closed/)
  const outcome = await consumed
  tt.ok(outcome instanceof Error, 'SDK iteration errors when the server drops the connection')
  await up.close() // idempotent
})

t.test('flood against a paused consumer sets backpressured', async (tt) => {
  const count = 1_000_000
  const { up } = await upstream(tt, () => ({ steps: [{ flood: { text: 'tok', count } }] }))
  const body = JSON.stringify({ model: 'm', messages, stream: true })
  const req = http.request(`${up.baseURL}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    agent: false,
  })
  const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
    req.on('response', resolve)
    req.on('error', reject)
    req.end(body)
  })
  req.on('error', () => {}) // destroy() below may surface ECONNRESET
  res.on('error', () => {})
  res.pause() // never read
  tt.equal(res.statusCode, 200)
  tt.match(res.headers['content-type'], /^text\/event-stream/)
  const rec = await up.nextRequest()
  await waitFor(() => rec.backpressured)
  tt.type(rec.pausedAt, 'number')
  const writtenAtPause = rec.chunksWritten
  await new Promise((r) => setTimeout(r, 50))
  tt.equal(rec.chunksWritten, writtenAtPause, 'server waits for drain while the consumer is paused')
  tt.ok(writtenAtPause < count)
  req.destroy()
  await rec.closed
  tt.equal(rec.closedByClient, true)
})

t.test('flood against a reading consumer delivers every chunk', async (tt) => {
  const { up, client } = await upstream(tt, () => ({
    steps: [{ flood: { text: 'x', count: 5000 } }, { finish: 'stop' }, { done: true }],
  }))
  let n = 0
  for await (const c of await stream(client)) if (c.choices[0]?.delta.content === 'x') n++
  tt.equal(n, 5000)
  tt.equal(up.requests[0]?.chunksWritten, 5002)
})

t.test('SDK behaviour on malformed and truncated streams', async (tt) => {
  tt.test('body ending without [DONE] ends iteration normally', async (t2) => {
    const { up, client } = await upstream(t2, () => ({ steps: [{ text: 'a' }] }))
    const got: string[] = []
    for await (const c of await stream(client)) got.push(c.choices[0]?.delta.content ?? '')
    t2.same(got, ['a'])
    await up.requests[0]?.closed
    t2.equal(up.requests[0]?.closedByClient, false)
  })

  tt.test('reset mid-stream throws a TypeError (terminated, cause ECONNRESET)', async (t2) => {
    const { up, client } = await upstream(t2, () => ({ steps: [{ text: 'a' }, { delayMs: 10 }, { reset: true }] }))
    const got: string[] = []
    let err: unknown
    try {
      for await (const c of await stream(client)) got.push(c.choices[0]?.delta.content ?? '')
    } catch (e) {
      err = e
    }
    t2.same(got, ['a'])
    t2.ok(err instanceof TypeError, 'raw fetch TypeError, not an APIError')
    t2.notOk(err instanceof APIError)
    await up.requests[0]?.closed
    t2.equal(up.requests[0]?.closedByClient, false)
  })

  tt.test('malformed data throws SyntaxError', async (t2) => {
    const { client } = await upstream(t2, () => ({
      steps: [{ comment: 'keep-alive' }, { text: 'a' }, { raw: 'data: {nope\n\n' }],
    }))
    const orig = console.error
    console.error = () => {} // the SDK logs the unparsable chunk
    t2.teardown(() => {
      console.error = orig
    })
    const got: string[] = []
    let err: unknown
    try {
      for await (const c of await stream(client)) got.push(c.choices[0]?.delta.content ?? '')
    } catch (e) {
      err = e
    }
    t2.same(got, ['a'], 'comments are skipped')
    t2.ok(err instanceof SyntaxError)
  })

  tt.test('an {error} payload inside the stream throws APIError without status', async (t2) => {
    const { client } = await upstream(t2, () => ({
      steps: [{ text: 'a' }, { raw: 'data: {"error":{"message":"boom","type":"server_error"}}\n\n' }],
    }))
    let err: unknown
    try {
      for await (const _ of await stream(client)) {
        // drain
      }
    } catch (e) {
      err = e
    }
    t2.ok(err instanceof APIError)
    t2.equal((err as APIError).status, undefined)
    t2.match((err as APIError).message, /boom/)
  })

  tt.test('after [DONE] the SDK stops reading and closes a still-open response', async (t2) => {
    const { up, client } = await upstream(t2, () => ({ steps: [{ text: 'a' }, { done: true }, { stall: true }] }))
    const got: string[] = []
    for await (const c of await stream(client)) got.push(c.choices[0]?.delta.content ?? '')
    t2.same(got, ['a'])
    await up.requests[0]?.closed
    t2.equal(up.requests[0]?.closedByClient, true)
  })
})

t.test('non-streaming requests get one chat.completion', async (tt) => {
  const { client } = await upstream(tt, () => ({
    steps: [
      ...textSteps('Hi there').slice(0, -2),
      { toolCalls: [{ index: 0, id: 'call_1', name: 'f', arguments: '{}' }] },
      { finish: 'tool_calls' },
      { usage: { prompt_tokens: 2, completion_tokens: 3 } },
    ],
  }))
  const completion = await client.chat.completions.create({ model: 'm', messages })
  tt.equal(completion.object, 'chat.completion')
  tt.equal(completion.choices[0]?.message.content, 'Hi there')
  tt.equal(completion.choices[0]?.finish_reason, 'tool_calls')
  tt.same(completion.choices[0]?.message.tool_calls, [
    { id: 'call_1', type: 'function', function: { name: 'f', arguments: '{}' } },
  ])
  tt.same(completion.usage, { prompt_tokens: 2, completion_tokens: 3, total_tokens: 5 })
})
