import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { textSteps, type FakeUpstream, type RecordedRequest, type Step } from '../helpers/fake-upstream.ts'
import { chat, scripted, setupUpstream, FAULT_LIMITS, type RunResult } from './setup.ts'

/** Backoff of three attempts is at most 250 + 500 ms (full jitter); the rest is slack for a busy machine. */
const SLACK_MS = 1500
const RETRY_BACKOFF_MAX_MS = 750

/** The exact number of upstream requests, checked again a moment later so a stray retry would show. */
async function requestCount(up: FakeUpstream): Promise<number> {
  const now = up.requests.length
  await sleep(150)
  return up.requests.length === now ? now : -1
}

function closedWithin(request: RecordedRequest | undefined, ms: number): Promise<boolean> {
  if (!request) return Promise.resolve(false)
  return Promise.race([request.closed.then(() => true), sleep(ms, false)])
}

/** The failure shape every fault must end with: `error` (with seq and run_id) then `complete` error. */
function assertFailedRun(t: Test, run: RunResult, expected: { code: string; retryable: boolean; text: string }): void {
  const tokens = run.types.filter((type) => type === 'token')
  t.same(run.types, ['status:thinking', ...tokens, 'error', 'complete'], 'thinking, tokens, error, complete')
  t.equal(run.error?.metadata.code, expected.code, 'error code')
  t.equal(run.error?.metadata.retryable, expected.retryable, 'retryable')
  t.equal(run.error?.metadata.run_id, run.complete.metadata.run_id, 'error names the run')
  t.type(run.error?.seq, 'number', 'error carries a seq')
  t.equal(run.complete.metadata.finish_reason, 'error')
  t.equal(run.complete.content, expected.text, 'complete holds the partial text')
  t.equal(run.text, expected.text, 'tokens concatenate to complete.content')
}

const hello: Step[] = textSteps(['Hello', ' world'])

t.test('429 with retry-after: each wait honoured, three requests, then upstream_error with retry_after_ms', async (t) => {
  // The waits (2 s) fit in the first-token budget, which covers retries.
  const { up, client } = await setupUpstream(t, { UPSTREAM_FIRST_TOKEN_TIMEOUT_MS: 5000 })
  scripted(up, [{ status: 429, headers: { 'retry-after': '1' } }])
  const run = await chat(t, client, 'hi')
  assertFailedRun(t, run, { code: 'upstream_error', retryable: true, text: '' })
  t.equal(run.error?.metadata.retry_after_ms, 1000, 'the client learns how long to wait')
  t.equal(await requestCount(up), 3, 'one request and two retries')
  const [first, second, third] = up.requests.map((request) => request.receivedAt)
  t.ok(second! - first! >= 950 && third! - second! >= 950, 'retry-after: 1 waited for each time')
  t.ok(run.elapsedMs < 2000 + SLACK_MS, `ended in ${Math.round(run.elapsedMs)} ms`)
})

t.test('429 once, then an answer: the retry is invisible to the client', async (t) => {
  const { up, client } = await setupUpstream(t)
  scripted(up, [{ status: 429, headers: { 'retry-after-ms': '200' } }, { steps: hello }])
  const run = await chat(t, client, 'hi')
  t.same(run.types.filter((type, i) => type !== 'token' || run.types[i - 1] !== 'token'), ['status:thinking', 'token', 'complete'], 'thinking, the text (its deltas may come merged), complete')
  t.equal(run.complete.metadata.finish_reason, 'stop')
  t.equal(run.complete.content, 'Hello world', 'no duplicate text')
  t.equal(await requestCount(up), 2)
  t.ok(up.requests[1]!.receivedAt - up.requests[0]!.receivedAt >= 190, 'retry-after-ms honoured')
})

t.test('429 asking for longer than the retry cap: not waited for, the client gets retry_after_ms', async (t) => {
  const { up, client } = await setupUpstream(t)
  scripted(up, [{ status: 429, headers: { 'retry-after': '60' } }])
  const run = await chat(t, client, 'hi')
  assertFailedRun(t, run, { code: 'upstream_error', retryable: true, text: '' })
  t.equal(run.error?.metadata.retry_after_ms, 60_000)
  t.equal(await requestCount(up), 1)
  t.ok(run.elapsedMs < SLACK_MS, `ended in ${Math.round(run.elapsedMs)} ms`)
})

for (const status of [500, 503]) {
  t.test(`${status} every time: three requests with backoff, then upstream_error`, async (t) => {
    const { up, client } = await setupUpstream(t)
    scripted(up, [{ status }])
    const run = await chat(t, client, 'hi')
    assertFailedRun(t, run, { code: 'upstream_error', retryable: true, text: '' })
    t.equal(await requestCount(up), 3)
    t.ok(run.elapsedMs < RETRY_BACKOFF_MAX_MS + SLACK_MS, `ended in ${Math.round(run.elapsedMs)} ms`)
  })
}

t.test('503 twice, then an answer: recovered within the retry budget', async (t) => {
  const { up, client } = await setupUpstream(t)
  scripted(up, [{ status: 503 }, { status: 503 }, { steps: hello }])
  const run = await chat(t, client, 'hi')
  t.equal(run.complete.metadata.finish_reason, 'stop')
  t.equal(run.complete.content, 'Hello world')
  t.equal(await requestCount(up), 3)
})

t.test('reset mid-stream: no retry after the first token, partial text kept, the process serves on', async (t) => {
  const { up, started, client } = await setupUpstream(t)
  scripted(up, [{ steps: [{ text: 'Hello' }, { delayMs: 20 }, { reset: true }] }, { steps: hello }])
  const run = await chat(t, client, 'hi')
  assertFailedRun(t, run, { code: 'upstream_error', retryable: true, text: 'Hello' })
  t.equal(await requestCount(up), 1, 'never a silent duplicate answer')
  const sessionId = run.complete.session_id
  const session = await started.app.sessions.get('alice', sessionId)
  t.same(
    session.messages.map((message) => [message.role, message.content]),
    [
      ['user', 'hi'],
      ['assistant', 'Hello'],
    ],
    'history keeps what was produced',
  )
  const next = await chat(t, client, 'again', sessionId)
  t.equal(next.complete.metadata.finish_reason, 'stop', 'the next run works')
  t.match(up.requests[1]!.body.messages.map((message: { content: unknown }) => message.content), ['You are a helpful assistant.', 'hi', 'Hello', 'again'])
})

t.test('reset before the first chunk: retried like a connection error', async (t) => {
  const { up, client } = await setupUpstream(t)
  scripted(up, [{ steps: [{ reset: true }] }])
  const run = await chat(t, client, 'hi')
  assertFailedRun(t, run, { code: 'upstream_error', retryable: true, text: '' })
  t.equal(await requestCount(up), 3)
})

t.test('malformed chunk after the first token: upstream_error, one request', async (t) => {
  const { up, client } = await setupUpstream(t)
  scripted(up, [{ steps: [{ text: 'Hel' }, { raw: 'data: {"choices": [\n\n' }, ...hello] }])
  const run = await chat(t, client, 'hi')
  assertFailedRun(t, run, { code: 'upstream_error', retryable: true, text: 'Hel' })
  t.equal(await requestCount(up), 1)
})

t.test('malformed first chunk: retried, then upstream_error', async (t) => {
  const { up, client } = await setupUpstream(t)
  scripted(up, [{ steps: [{ raw: 'data: not json\n\n' }, ...hello] }])
  const run = await chat(t, client, 'hi')
  assertFailedRun(t, run, { code: 'upstream_error', retryable: true, text: '' })
  t.equal(await requestCount(up), 3)
})

t.test('stall after one chunk: the idle watchdog ends the run and aborts the request', async (t) => {
  const { up, client } = await setupUpstream(t)
  scripted(up, [{ steps: [{ text: 'Hel' }, { stall: true }] }])
  const run = await chat(t, client, 'hi')
  assertFailedRun(t, run, { code: 'upstream_timeout', retryable: true, text: 'Hel' })
  t.equal(await requestCount(up), 1)
  t.ok(await closedWithin(up.requests[0], 1000), 'upstream request closed')
  t.equal(up.requests[0]?.closedByClient, true, 'closed by us, not by the upstream')
  t.ok(run.elapsedMs >= FAULT_LIMITS.UPSTREAM_IDLE_TIMEOUT_MS, 'not before the idle limit')
  t.ok(run.elapsedMs < FAULT_LIMITS.UPSTREAM_IDLE_TIMEOUT_MS + SLACK_MS, `ended in ${Math.round(run.elapsedMs)} ms`)
})

t.test('stall with keep-alive comments after one chunk: comments do not feed the idle watchdog', async (t) => {
  const { up, client } = await setupUpstream(t)
  const keepAlive: Step[] = Array.from({ length: 60 }, () => [{ comment: 'keep-alive' }, { delayMs: 50 }] as Step[]).flat()
  scripted(up, [{ steps: [{ text: 'Hel' }, ...keepAlive, { stall: true }] }])
  const run = await chat(t, client, 'hi')
  assertFailedRun(t, run, { code: 'upstream_timeout', retryable: true, text: 'Hel' })
  t.equal(await requestCount(up), 1)
  t.ok(await closedWithin(up.requests[0], 1000), 'upstream request closed')
  t.ok(run.elapsedMs < FAULT_LIMITS.UPSTREAM_IDLE_TIMEOUT_MS + SLACK_MS, `ended in ${Math.round(run.elapsedMs)} ms, long before the comments stop`)
})

t.test('keep-alive comments and nothing else: the first-token watchdog ends the run, no retry', async (t) => {
  const firstTokenMs = 600
  const { up, client } = await setupUpstream(t, { UPSTREAM_FIRST_TOKEN_TIMEOUT_MS: firstTokenMs })
  const keepAlive: Step[] = Array.from({ length: 60 }, () => [{ comment: '' }, { delayMs: 50 }] as Step[]).flat()
  scripted(up, [{ steps: [...keepAlive, ...hello] }])
  const run = await chat(t, client, 'hi')
  assertFailedRun(t, run, { code: 'upstream_timeout', retryable: true, text: '' })
  t.equal(await requestCount(up), 1, 'the first-token budget covers retries: a stalled upstream is asked once')
  t.ok(await closedWithin(up.requests[0], 1000), 'upstream request closed')
  t.ok(run.elapsedMs >= firstTokenMs, 'not before the first-token limit')
  t.ok(run.elapsedMs < firstTokenMs + SLACK_MS, `ended in ${Math.round(run.elapsedMs)} ms`)
})

t.test('body ends without [DONE] or a finish_reason: a truncated answer is an error, not a success', async (t) => {
  const { up, client } = await setupUpstream(t)
  scripted(up, [{ steps: [{ text: 'Hello' }, { text: ' wor' }] }])
  const run = await chat(t, client, 'hi')
  assertFailedRun(t, run, { code: 'upstream_error', retryable: true, text: 'Hello wor' })
  t.equal(await requestCount(up), 1)
})

t.test('body ends after finish_reason but without [DONE]: the answer is whole, so it stands', async (t) => {
  const { up, client } = await setupUpstream(t)
  scripted(up, [{ steps: [{ text: 'Hello' }, { finish: 'stop' }] }])
  const run = await chat(t, client, 'hi')
  t.equal(run.complete.metadata.finish_reason, 'stop')
  t.equal(run.complete.content, 'Hello')
  t.equal(await requestCount(up), 1)
})

t.test('401: not retryable, one request, logged loudly, the process serves on', async (t) => {
  const { up, client, logs } = await setupUpstream(t, { LOG_LEVEL: 'warn' })
  scripted(up, [{ status: 401 }, { steps: hello }])
  const run = await chat(t, client, 'hi')
  assertFailedRun(t, run, { code: 'upstream_error', retryable: false, text: '' })
  t.equal(await requestCount(up), 1)
  const loud = logs.find((line) => line.level === 50 && /CREDENTIALS/.test(line.msg))
  t.match(loud, { failure: 'auth', status: 401, runId: run.complete.metadata.run_id }, 'a configuration problem is logged at error')
  t.notOk(JSON.stringify(logs).includes('Bearer test'), 'the API key is not logged')
  const next = await chat(t, client, 'again', run.complete.session_id)
  t.equal(next.complete.metadata.finish_reason, 'stop')
})

t.test('400: a bad request is not retried, and logged at warn only', async (t) => {
  const { up, client, logs } = await setupUpstream(t, { LOG_LEVEL: 'warn' })
  scripted(up, [{ status: 400 }])
  const run = await chat(t, client, 'hi')
  assertFailedRun(t, run, { code: 'upstream_error', retryable: false, text: '' })
  t.equal(await requestCount(up), 1)
  t.match(logs.find((line) => line.msg === 'run failed upstream'), { level: 40, failure: 'bad_request', status: 400 })
  t.notOk(logs.some((line) => line.level >= 50), 'nothing at error')
})

t.test('the whole-run limit (UPSTREAM_TIMEOUT_MS) stops a stream that keeps talking', async (t) => {
  const { up, client } = await setupUpstream(t, { UPSTREAM_TIMEOUT_MS: 500 })
  scripted(up, [{ steps: textSteps(Array.from({ length: 50 }, (_, i) => `w${i} `), { delayMs: 50 }) }])
  const run = await chat(t, client, 'hi')
  assertFailedRun(t, run, { code: 'upstream_timeout', retryable: true, text: run.complete.content })
  t.ok(run.text.length > 0, 'tokens arrived before the limit')
  t.ok(await closedWithin(up.requests[0], 1000), 'upstream request closed')
  t.ok(run.elapsedMs >= 500 && run.elapsedMs < 500 + SLACK_MS, `ended in ${Math.round(run.elapsedMs)} ms`)
})

t.test('an error object inside the stream after the first token: upstream_error, no retry', async (t) => {
  const { up, client } = await setupUpstream(t)
  const streamError = `data: ${JSON.stringify({ error: { message: 'overloaded', type: 'server_error', code: null } })}\n\n`
  scripted(up, [{ steps: [{ text: 'Hel' }, { raw: streamError }, ...hello] }])
  const run = await chat(t, client, 'hi')
  assertFailedRun(t, run, { code: 'upstream_error', retryable: true, text: 'Hel' })
  t.equal(await requestCount(up), 1)
})

t.test('connection refused: retried with backoff, then upstream_error; the process serves on', async (t) => {
  const { up, client, logs } = await setupUpstream(t, { LOG_LEVEL: 'warn' })
  await up.close() // nobody listens on its port any more
  const run = await chat(t, client, 'hi')
  assertFailedRun(t, run, { code: 'upstream_error', retryable: true, text: '' })
  t.same(
    logs.filter((line) => line.msg.includes('retrying')).map((line) => [line.failure, line.retry]),
    [
      ['connection', 1],
      ['connection', 2],
    ],
    'two retries, as the policy says',
  )
  t.ok(run.elapsedMs < RETRY_BACKOFF_MAX_MS + SLACK_MS, `ended in ${Math.round(run.elapsedMs)} ms`)
})
