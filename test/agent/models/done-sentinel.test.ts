import t from 'tap'
import { createSentinelFetch } from '../../../src/agent/models/done-sentinel.ts'

/** A fetch answering with `parts` as the body, written one read each. */
function answering(parts: string[], contentType = 'text/event-stream; charset=utf-8', status = 200): typeof fetch {
  return async () => {
    const encoder = new TextEncoder()
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (const part of parts) controller.enqueue(encoder.encode(part))
        controller.close()
      },
    })
    return new Response(status === 204 ? null : body, { status, headers: { 'content-type': contentType } })
  }
}

async function read(sentinel: ReturnType<typeof createSentinelFetch>): Promise<{ text: string; done: boolean; response: Response }> {
  const response = await sentinel.fetch('http://127.0.0.1/')
  const text = await response.text()
  return { text, done: sentinel.sawDone(response), response }
}

t.test('[DONE] is noticed at the start of a line, also split across reads; the body passes unchanged', async (t) => {
  const whole = await read(createSentinelFetch(answering(['data: {"a":1}\n\n', 'data: [DONE]\n\n'])))
  t.same([whole.text, whole.done], ['data: {"a":1}\n\ndata: [DONE]\n\n', true])
  t.equal(whole.response.status, 200)
  t.equal((await read(createSentinelFetch(answering(['data: [DONE]'])))).done, true, 'the very first line, no newline after')
  t.equal((await read(createSentinelFetch(answering(['data: {}\n\ndata: [DO', 'NE]\n\n', 'data: {}\n\n'])))).done, true, 'split across reads')
  t.equal((await read(createSentinelFetch(answering(['data:[DONE]\n\n'])))).done, true, 'no space after the colon')
})

t.test('a [DONE] inside a JSON string, or no [DONE] at all, is not the sentinel', async (t) => {
  t.equal((await read(createSentinelFetch(answering(['data: {"content":"data: [DONE]"}\n\n'])))).done, false)
  t.equal((await read(createSentinelFetch(answering(['data: {"a":1}\n\n'])))).done, false)
})

t.test('other responses are left as they are', async (t) => {
  const json = answering(['{"error":{}}'], 'application/json', 400)
  const sentinel = createSentinelFetch(json)
  const response = await sentinel.fetch('http://127.0.0.1/')
  t.equal(response.status, 400)
  t.equal(await response.text(), '{"error":{}}')
  t.equal(sentinel.sawDone(response), false)
  const empty = await createSentinelFetch(answering([], 'text/event-stream', 204)).fetch('http://127.0.0.1/')
  t.equal(empty.body, null, 'no body, nothing to watch')
  const untyped = await createSentinelFetch(async () => new Response('data: [DONE]\n\n')).fetch('http://127.0.0.1/')
  t.match(untyped.headers.get('content-type'), /text\/plain/, 'not an event stream')
})
