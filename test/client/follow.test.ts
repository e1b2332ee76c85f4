// follow(): a client attaches to a run it did not start (another tab's, or the one still
// streaming when a page reloaded) and gets all of that run's events, and only them.
import t from 'tap'
import { AgentClient } from '../../src/client/index.ts'
import { signToken } from '../helpers/app.ts'
import { textSteps } from '../helpers/fake-upstream.ts'
import { startWithUpstream } from '../runs/helpers.ts'

t.test('follow() streams a run started elsewhere, from its first event', async (t) => {
  const { up, wsUrl } = await startWithUpstream(t, () => ({ steps: textSteps('an earlier answer') }))
  const options = { url: wsUrl, token: () => signToken('alice'), sessionId: 'shared', heartbeatMs: 0 }
  const starter = new AgentClient(options)
  t.teardown(() => starter.close())
  await starter.chat('first').text()
  up.script(() => ({ steps: textSteps(Array.from({ length: 40 }, (_, i) => `w${i} `), { delayMs: 10 }) }))
  const running = starter.chat('second')
  for await (const event of running) if (event.type === 'token') break
  const history = await starter.history('shared')
  t.type(history.active_run, 'string')

  // Asked before its socket is open: it catches up once it is.
  const follower = new AgentClient(options)
  t.teardown(() => follower.close())
  const followed = follower.follow(history.active_run!)
  t.throws(() => follower.follow(history.active_run!), /already has a run/)
  const result = await followed.result()
  t.equal(result.text, await running.text(), 'the same answer, whole')
  t.equal(result.runId, history.active_run)

  // On an open socket too.
  const late = new AgentClient(options)
  t.teardown(() => late.close())
  await late.history('shared')
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.equal(late.state, 'open')
  t.equal((await late.follow(history.active_run!).result()).finishReason, 'stop', 'an ended run: its held events, complete last')
})
