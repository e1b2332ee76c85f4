// Reasoning deltas (protocol.md §2, §3, 1.1) are relayed as `reasoning` frames only to a chat
// that asked with `reasoning: true`; never part of the answer, never sent back to the model;
// counted in agw_reasoning_deltas_total either way.
import t from 'tap'
import { startWithUpstream, transcript, SYSTEM } from '../runs/helpers.ts'

const thinking = (text: string) => ({ chunk: { choices: [{ index: 0, delta: { reasoning_content: text }, finish_reason: null }] } })

async function reasoningCount(baseUrl: string): Promise<number> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text()
  return Number(/^agw_reasoning_deltas_total (\d+)/m.exec(text)?.[1] ?? 0)
}

t.test('reasoning frames reach only a chat that asked for them', async (t) => {
  const { up, client, baseUrl } = await startWithUpstream(t, () => ({
    steps: [thinking('Let me '), thinking('think.'), { text: 'Answer.' }, { finish: 'stop' }, { done: true }],
  }))
  const alice = await client()
  alice.send({ type: 'chat', session_id: 'r', content: 'why?', reasoning: true })
  const asked = await alice.untilComplete()
  t.same(
    asked.map((frame) => `${frame.type}:${frame.content}`),
    ['status:thinking', 'reasoning:Let me ', 'reasoning:think.', 'token:Answer.', 'complete:Answer.'],
    'reasoning frames, sequenced like any run event; the answer is the text alone',
  )
  t.match(asked[1], { seq: 2, metadata: { run_id: asked[0]!.metadata!.run_id } })

  alice.send({ type: 'chat', session_id: 'r', content: 'and then?' })
  const plain = await alice.untilComplete()
  t.same(plain.map((frame) => frame.type), ['status', 'token', 'complete'], 'not asked: no reasoning frame')
  t.same(transcript(up.requests[1]!), [SYSTEM, 'user:why?', 'assistant:Answer.', 'user:and then?'], 'reasoning is never sent back to the model')
  t.equal(await reasoningCount(baseUrl), 4, 'every delta counted, relayed or not')
})
