import t from 'tap'
import { progressRelay } from '../../src/agent/tool-progress.ts'
import type { AgentEvent } from '../../src/agent/run-agent.ts'

t.test('reports become tool_progress events in order; while one is held back only the latest waits', async (t) => {
  const events: AgentEvent[] = []
  let release: (() => void) | undefined
  const emit = (event: AgentEvent) => {
    events.push(event)
    return new Promise<void>((resolve) => (release = resolve))
  }
  const relay = progressRelay(emit, 'srv__tool', 'call_1')
  relay.report({ progress: 1, total: 4, message: 'one' })
  relay.report({ progress: 2 })
  relay.report({ progress: 3, total: 4 })
  t.equal(events.length, 1, 'one emit in flight')
  release!()
  await new Promise(setImmediate)
  t.same(events, [
    { type: 'tool_progress', tool: 'srv__tool', callId: 'call_1', progress: 1, total: 4, message: 'one' },
    { type: 'tool_progress', tool: 'srv__tool', callId: 'call_1', progress: 3, total: 4 },
  ], 'the superseded report was dropped')
  release!()
  await new Promise(setImmediate)
  relay.report({ progress: 4 })
  const settled = relay.settle()
  release!()
  await settled
  relay.report({ progress: 5 })
  t.equal(events.length, 3, 'nothing after settle')
})

t.test('a failed emit stops the relay and is rethrown by settle', async (t) => {
  let calls = 0
  const relay = progressRelay(async () => {
    calls++
    throw new Error('fenced')
  }, 'tool', 'call')
  relay.report({ progress: 1 })
  await new Promise(setImmediate)
  relay.report({ progress: 2 })
  await t.rejects(relay.settle(), { message: 'fenced' })
  t.equal(calls, 1)
})

t.test('settle with nothing reported', async (t) => {
  await t.resolves(progressRelay(async () => {}, 'tool', 'call').settle())
})
