// ToolGate's edges, over a store double: the deadline racing an answer claimed elsewhere, a
// store that fails the claim, a run fenced before its call was recorded, empty arguments.
import t from 'tap'
import { createToolRegistry } from '../../src/agent/tools/registry.ts'
import { Fenced } from '../../src/sessions/fenced.ts'
import { ToolGate, type ToolGateOptions } from '../../src/sessions/tool-gate.ts'
import type { Backend, PendingEntry } from '../../src/store/types.ts'

function gate(sessions: Partial<Backend['sessions']>, options: Partial<ToolGateOptions> = {}) {
  const events: unknown[] = []
  const controller = new AbortController()
  const toolGate = new ToolGate({
    backend: { sessions } as Backend,
    ref: { owner: 'a', id: 's', gen: '1' },
    runId: 'r',
    signal: controller.signal,
    tools: createToolRegistry([]),
    approvalTools: new Set(['careful']),
    clientTools: new Set(['local']),
    approvalTimeoutMs: 20,
    clientToolTimeoutMs: 20,
    append: async (event) => void events.push(event),
    claimedAnswerWaitMs: 30,
    ...options,
  })
  return { toolGate, events, controller }
}

const call = (tool: string, argumentsJson = '') => ({ tool, callId: 'c1', argumentsJson })

t.test('claimed elsewhere at the deadline: the answer on its way decides, or it expires after a while', async (t) => {
  const recorded: unknown[] = []
  const sessions = { addPending: async (_ref: unknown, _run: string, pending: unknown) => (recorded.push(pending), true), claimPending: async () => null }
  const { toolGate } = gate(sessions)
  const expired = await toolGate.decide(call('local'))
  t.match(expired, { kind: 'outcome', outcome: { ok: false, error: /timed out/ } }, 'no answer came: expired')
  t.match(recorded[0], { arguments: {}, kind: 'client_tool' }, 'empty arguments are an empty object')

  const pending = toolGate.decide(call('local'))
  await new Promise((resolve) => setTimeout(resolve, 35))
  t.equal(toolGate.waitingUntil !== undefined, true)
  toolGate.answer('c1', { kind: 'client_tool', output: 'late but claimed', isError: false })
  t.same(await pending, { kind: 'outcome', outcome: { ok: true, result: 'late but claimed' } })
  t.equal(toolGate.waitingUntil, undefined)
})

t.test('a store that cannot claim at the deadline: expired', async (t) => {
  const { toolGate, events } = gate({ addPending: async () => true, claimPending: async (): Promise<PendingEntry | null> => Promise.reject(new Error('down')) })
  t.match(await toolGate.decide(call('careful')), { kind: 'outcome', outcome: { ok: false, error: /nobody approved it/ } })
  t.match(events.map((event) => (event as { content: string }).content), ['approval_required', 'approval_resolved'])
})

t.test('a run fenced before its call is recorded stops; a cancel rejects the wait', async (t) => {
  const fenced = gate({ addPending: async () => false, claimPending: async () => null })
  await t.rejects(fenced.toolGate.decide(call('careful')), Fenced)
  const cancelled = gate({ addPending: async () => true, claimPending: async () => null }, { approvalTimeoutMs: 10_000 })
  const waiting = cancelled.toolGate.decide(call('careful', '{"x":1}'))
  cancelled.controller.abort(new Error('cancelled'))
  await t.rejects(waiting, /cancelled/)
})
