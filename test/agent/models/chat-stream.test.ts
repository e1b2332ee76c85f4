import t from 'tap'
import OpenAI from 'openai'
import { readChatStream, type ChatStreamState } from '../../../src/agent/models/chat-stream.ts'

/** A response whose body is `reads`, one chunk each. */
function response(...reads: string[]): Response {
  const encoder = new TextEncoder()
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const read of reads) controller.enqueue(encoder.encode(read))
      controller.close()
    },
  })
  return new Response(body, { headers: { 'content-type': 'text/event-stream' } })
}

async function read(res: Response, state: ChatStreamState = { done: false }): Promise<unknown[][]> {
  const batches: unknown[][] = []
  for await (const batch of readChatStream(res, state)) batches.push(batch)
  return batches
}

const chunk = (content: string) => ({ choices: [{ index: 0, delta: { content } }] })
const event = (data: unknown) => `data: ${JSON.stringify(data)}\n\n`

t.test('one batch per read; [DONE] ends the stream and is noted', async (t) => {
  const state = { done: false }
  t.same(await read(response(event(chunk('a')) + event(chunk('b')), event(chunk('c')) + 'data: [DONE]\n\n' + event(chunk('after'))), state), [
    [chunk('a'), chunk('b')],
    [chunk('c')],
  ])
  t.equal(state.done, true)
})

t.test('a body that stops without a blank line or [DONE]: its last event still counts', async (t) => {
  const state = { done: false }
  t.same(await read(response(event(chunk('a')), `data: ${JSON.stringify(chunk('b'))}`), state), [[chunk('a')], [chunk('b')]])
  t.equal(state.done, false)
})

t.test('[DONE] as the last line without its blank line', async (t) => {
  const state = { done: false }
  t.same(await read(response(event(chunk('a')), 'data: [DONE]'), state), [[chunk('a')]])
  t.equal(state.done, true)
})

t.test('a UTF-8 character split between two reads is decoded whole', async (t) => {
  const bytes = new TextEncoder().encode(event(chunk('é😀')))
  const split = bytes.indexOf(0xf0) + 2
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(bytes.slice(0, split))
      controller.enqueue(bytes.slice(split))
      controller.close()
    },
  })
  t.same((await read(new Response(body))).flat(), [chunk('é😀')])
})

t.test('a failure is thrown after the chunks of its read that came before it', async (t) => {
  const batches: unknown[][] = []
  const failure = await (async () => {
    for await (const batch of readChatStream(response(event(chunk('a')) + 'data: {broken\n\n'), { done: false })) batches.push(batch)
  })().catch((err: unknown) => err)
  t.type(failure, SyntaxError)
  t.same(batches, [[chunk('a')]])
  const inBand = await read(response(event({ error: { message: 'overloaded' } }))).catch((err: unknown) => err)
  t.type(inBand, OpenAI.APIError)
  t.match(inBand, { status: undefined, error: { message: 'overloaded' } })
  const named = await read(response(`event: error\ndata: ${JSON.stringify({ message: 'bare' })}\n\n`)).catch((err: unknown) => err)
  t.match(named, { error: { message: 'bare' } }, 'an error event without an `error` key: the whole payload')
  const last = await read(response('data: 42')).catch((err: unknown) => err)
  t.type(last, SyntaxError, 'also in the last, unterminated event')
})

t.test('malformed events are reported with an excerpt', async (t) => {
  const excerpts: string[] = []
  await (async () => {
    for await (const _ of readChatStream(response(`data: ${'z'.repeat(300)}\n\n`), { done: false }, (excerpt) => excerpts.push(excerpt))) void _
  })().catch(() => {})
  t.same(excerpts, ['z'.repeat(200)])
})

t.test('a response without a body', async (t) => {
  const failure = await read(new Response(null)).catch((err: unknown) => err)
  t.type(failure, OpenAI.OpenAIError)
  t.match(failure, { message: 'the response has no body to stream' })
})
