// The SDK's conversation control (1.1): chat with onBusy, regenerate, edit, sessions(), history().
import t, { type Test } from 'tap'
import { AgentClient, AgentError } from '../../src/client/index.ts'
import { signToken } from '../helpers/app.ts'
import { textSteps } from '../helpers/fake-upstream.ts'
import { startWithUpstream, transcript, SYSTEM } from '../runs/helpers.ts'

function client(t: Test, wsUrl: string, user = 'alice', sessionId = 'conv') {
  const agent = new AgentClient({ url: wsUrl, token: () => signToken(user), sessionId, heartbeatMs: 0, backoff: { baseMs: 20, maxMs: 200 } })
  t.teardown(() => agent.close())
  return agent
}

t.test('onBusy interrupt: the running answer ends superseded, the new one follows it', async (t) => {
  const { up, wsUrl } = await startWithUpstream(t, () => ({ steps: textSteps(Array.from({ length: 300 }, (_, i) => `w${i} `), { delayMs: 10 }) }))
  const agent = client(t, wsUrl)
  const first = agent.chat('tell me everything')
  for await (const event of first) if (event.type === 'token') break
  up.script(() => ({ steps: textSteps('short answer') }))
  const second = agent.chat('just the gist', { onBusy: 'interrupt' })
  const [firstResult, secondResult] = await Promise.all([first.result(), second.text()])
  t.match(firstResult, { finishReason: 'cancelled', reason: 'superseded' })
  t.equal(secondResult, 'short answer')
  t.equal(up.requests.length, 2)
})

t.test('onBusy enqueue, regenerate, edit, history and sessions over a real server', async (t) => {
  const { up, wsUrl } = await startWithUpstream(t, (request) => ({ steps: textSteps(`answer ${request.index}`, { delayMs: 5 }) }))
  const agent = client(t, wsUrl)
  const one = agent.chat('one')
  const two = agent.chat('two', { onBusy: 'enqueue' })
  t.same(await Promise.all([one.text(), two.text()]), ['answer 0', 'answer 1'], 'queued at the server, run in order')

  t.equal(await agent.regenerate().text(), 'answer 2')
  t.same(transcript(up.requests[2]!), [SYSTEM, 'user:one', 'assistant:answer 0', 'user:two'], 'regenerated without the answer it replaces')

  let history = await agent.history()
  t.same(history.messages.map((m) => m.content), ['one', 'answer 0', 'two', 'answer 2'])
  t.equal(history.active_run, null)
  t.equal(await agent.edit(history.messages[0]!.id, 'ONE').text(), 'answer 3')
  history = await agent.history()
  t.same(history.messages.map((m) => m.content), ['ONE', 'answer 3'])

  const other = client(t, wsUrl, 'alice', 'other')
  await other.chat('second session').text()
  const listed = await agent.sessions()
  t.same(listed.sessions.map((s) => [s.session_id, s.title]), [['other', 'second session'], ['conv', 'ONE']])
  const page = await agent.sessions({ limit: 1 })
  t.equal(page.sessions.length, 1)
  t.same((await agent.sessions({ limit: 1, cursor: page.next_cursor! })).sessions.map((s) => s.session_id), ['conv'])

  await t.rejects(agent.history('nobody'), { code: 'not_found' })
  const failing = new AgentClient({ url: wsUrl, token: () => signToken('alice'), heartbeatMs: 0, fetch: async () => { throw new Error('down') } })
  t.teardown(() => failing.close())
  await t.rejects(failing.sessions(), AgentError)
  const refused = new AgentClient({ url: wsUrl, token: () => 'not a token', heartbeatMs: 0, maxReconnectAttempts: 0 })
  t.teardown(() => refused.close())
  await t.rejects(refused.sessions(), { code: 'unauthorized' })
  t.throws(() => agent.chat('x', { id: '' }), TypeError)
})
