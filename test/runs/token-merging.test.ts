// Lossless coalescing (protocol.md §3, §6; contract revision 1.1): text deltas that are ready
// together, those of one upstream read, become one `token` event before they are sequenced;
// deltas that come apart in time stay events of their own. The text and complete.content never
// change, and the merged event is logged (and replayed) as one.
import t from 'tap'
import { startWithUpstream, contentOf, tokensOf } from './helpers.ts'

const delta = (content: string, first = false) =>
  `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 0, model: 'm', choices: [{ index: 0, delta: first ? { role: 'assistant', content } : { content }, finish_reason: null }] })}\n\n`
const finish = `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 0, model: 'm', choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\n\ndata: [DONE]\n\n`

t.test('the deltas of one upstream read are merged; the replay has the same events', async (t) => {
  const words = Array.from({ length: 40 }, (_, i) => `${i === 0 ? '' : ' '}w${i}`)
  // One write: the deltas reach the service in one read.
  const { client } = await startWithUpstream(t, () => ({ steps: [{ raw: words.map((word, i) => delta(word, i === 0)).join('') + finish }] }))
  const alice = await client()
  alice.send({ type: 'chat', content: 'hi', session_id: 'one-read' })
  const frames = await alice.untilComplete()
  const tokens = frames.filter((frame) => frame.type === 'token')
  // One token, as a rule; the run's fairness yield (every 2 ms of relaying) may cut a burst on a loaded machine.
  t.ok(tokens.length >= 1 && tokens.length <= words.length / 2, `40 deltas in ${tokens.length} token event(s)`)
  t.same(frames.map((frame) => frame.seq), frames.map((_, i) => i + 1))
  t.equal(tokensOf(frames), words.join(''))
  t.equal(contentOf(frames.at(-1)), tokensOf(frames), 'complete.content is the concatenated tokens')

  const later = await client()
  later.send({ type: 'resume', session_id: 'one-read', last_seq: 0 })
  await later.next((frame) => frame.type === 'status' && frame.content === 'resumed')
  t.same(later.raw.slice(0, frames.length), alice.raw.slice(0, frames.length), 'replayed byte for byte')
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
