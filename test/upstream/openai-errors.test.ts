import t from 'tap'
import OpenAI from 'openai'
import { classifyError, retryAfterMs } from '../../src/agent/models/openai-model.ts'
import { UpstreamError } from '../../src/agent/upstream-error.ts'

t.test('retryAfterMs reads retry-after-ms, then retry-after in seconds or as an HTTP date', async (t) => {
  const now = Date.parse('2030-01-01T00:00:00Z')
  const headers = (init: Record<string, string>) => new Headers(init)
  t.equal(retryAfterMs(undefined), undefined)
  t.equal(retryAfterMs(headers({})), undefined)
  t.equal(retryAfterMs(headers({ 'retry-after-ms': '250', 'retry-after': '9' })), 250, 'the precise header wins')
  t.equal(retryAfterMs(headers({ 'retry-after-ms': 'soon', 'retry-after': '2' })), 2000, 'an unreadable one is skipped')
  t.equal(retryAfterMs(headers({ 'retry-after': '1.5' })), 1500)
  t.equal(retryAfterMs(headers({ 'retry-after': 'Tue, 01 Jan 2030 00:00:03 GMT' }), now), 3000)
  t.equal(retryAfterMs(headers({ 'retry-after': 'Mon, 31 Dec 2029 23:59:00 GMT' }), now), 0, 'a date in the past: no wait')
  t.equal(retryAfterMs(headers({ 'retry-after': 'whenever' })), undefined)
})

t.test('classifyError: every SDK failure maps onto one of ours', async (t) => {
  const status = (code: number, headers: Record<string, string> = {}) =>
    classifyError(OpenAI.APIError.generate(code, { error: { message: 'x' } }, 'x', new Headers(headers)))
  t.match(status(401), { failure: 'auth', retryable: false, status: 401 })
  t.match(status(403), { failure: 'auth', retryable: false })
  t.match(status(429, { 'retry-after': '3' }), { failure: 'rate_limited', retryable: true, retryAfterMs: 3000 })
  t.match(status(500), { failure: 'server', retryable: true })
  t.match(status(408), { failure: 'server' })
  t.match(status(409), { failure: 'server' })
  t.match(status(400), { failure: 'bad_request', retryable: false })
  t.match(status(404), { failure: 'bad_request' })
  t.match(status(422), { failure: 'bad_request' })
  t.match(classifyError(new OpenAI.APIConnectionError({ message: 'refused' })), { failure: 'connection', retryable: true })
  t.match(classifyError(new OpenAI.APIError(undefined, { message: 'mid-stream' }, undefined, new Headers())), { failure: 'server' })
  t.match(classifyError(new SyntaxError('bad json')), { failure: 'malformed', retryable: true })
  t.match(classifyError(new TypeError('terminated')), { failure: 'connection', retryable: true }, 'a reset is a plain TypeError from fetch')
  const ours = new UpstreamError('timeout', 'idle')
  t.equal(classifyError(ours), ours, 'already classified: unchanged')
})
