// Lossless coalescing (protocol.md §3, §6; contract revision 1.1): text deltas that are ready
// together, those of one upstream read, become one `token` event before they are sequenced;
// deltas that come apart in time stay events of their own. The text and complete.content never
// change, and the merged event is logged (and replayed) as one.
import t from 'tap'
import { startWithUpstream, contentOf, tokensOf } from './helpers.ts'

const delta = (content: string, first = false) =>
  `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 0, model: 'm', choices: [{ index: 0, delta: first ? { role: 'assistant', content } : { content }, finish_reason: null }] })}\n\n`
const finish = `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 0, model: 'm', choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\n\ndata: [DONE]\n\n`

t.test('the deltas of one upstream read are one token event; the replay has the same one', async (t) => {
  const words = ['Hello', ' big', ' wide', ' world']
  // One write: the four deltas reach the service in one read.
  const { client } = await startWithUpstream(t, () => ({ steps: [{ raw: words.map((word, i) => delta(word, i === 0)).join('') + finish }] }))
  const alice = await client()
  alice.send({ type: 'chat', content: 'hi', session_id: 'one-read' })
  const frames = await alice.untilComplete()
  t.same(
    frames.map((frame) => [frame.type, frame.seq]),
    [['status', 1], ['token', 2], ['complete', 3]],
    'thinking, one token, complete',
  )
  t.equal(contentOf(frames[1]), 'Hello big wide world')
  t.equal(contentOf(frames.at(-1)), tokensOf(frames), 'complete.content is the concatenated tokens')

  const later = await client()
  later.send({ type: 'resume', session_id: 'one-read', last_seq: 0 })
  await later.next((frame) => frame.type === 'status' && frame.content === 'resumed')
  t.same(later.raw.slice(0, 3), alice.raw.slice(0, 3), 'replayed byte for byte')
})

t.test('deltas apart in time stay events of their own', async (t) => {
  const { client } = await startWithUpstream(t, () => ({ steps: [{ raw: delta('one', true) }, { delayMs: 80 }, { raw: delta(' two') }, { delayMs: 80 }, { raw: delta(' three') + finish }] }))
  const alice = await client()
  alice.send({ type: 'chat', content: 'hi' })
  const frames = await alice.untilComplete()
  const tokens = frames.filter((frame) => frame.type === 'token')
  t.ok(tokens.length >= 2, `a delta is not held for the next one (${tokens.length} token events)`)
  t.equal(tokensOf(frames), 'one two three')
  t.equal(contentOf(frames.at(-1)), 'one two three')
})
