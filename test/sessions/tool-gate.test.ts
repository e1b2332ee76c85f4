// ToolGate's edges, over a store double: the deadline racing an answer claimed elsewhere (the
// stored answer stands), a store that fails the claim, a run fenced before its call was
// recorded or at its round's end, empty arguments, and a resumed round's calls in every state.
import t from 'tap'
import { createToolRegistry } from '../../src/agent/tools/registry.ts'
import { Fenced } from '../../src/sessions/fenced.ts'
import { CUT_OFF, ToolGate, type ToolGateOptions } from '../../src/sessions/tool-gate.ts'
import type { Backend } from '../../src/store/types.ts'
import type { CallState, Claim, WaitingRound } from '../../src/store/waiting-round.ts'

function gate(sessions: Partial<Backend['sessions']>, options: Partial<ToolGateOptions> = {}, resumed?: WaitingRound) {
  const events: unknown[] = []
  const controller = new AbortController()
  const toolGate = new ToolGate(
    {
      backend: { sessions } as Backend,
      ref: { owner: 'a', id: 's', gen: '1' },
      runId: 'r',
      fence: 'r',
      signal: controller.signal,
      tools: createToolRegistry([]),
      approvalTools: new Set(['careful']),
      clientTools: new Set(['local']),
      approvalTimeoutMs: 20,
      clientToolTimeoutMs: 20,
      append: async (event) => void events.push(event),
      snapshot: (round) => ({ round, messages: [], content: '', reasoning: '' }),
      ...options,
    },
    resumed,
  )
  return { toolGate, events, controller }
}

const call = (tool: string, argumentsJson = '', callId = 'c1') => ({ tool, callId, argumentsJson, round: 0 })

t.test('claimed elsewhere at the deadline: the stored answer stands; none stored: expired', async (t) => {
  const recorded: WaitingRound[] = []
  let stored: CallState | null = null
  const sessions = {
    addPending: async (_ref: unknown, _fence: string, round: WaitingRound) => (recorded.push(round), true),
    claimPending: async (): Promise<Claim | null> => null,
    callState: async () => stored,
  }
  const { toolGate } = gate(sessions)
  const expired = await toolGate.decide(call('local'))
  t.match(expired, { kind: 'outcome', outcome: { ok: false, error: /timed out/ } }, 'nothing stored: expired')
  t.match(recorded[0]?.calls.c1, { state: 'waiting', pending: { arguments: {}, kind: 'client_tool' } }, 'empty arguments are an empty object')

  stored = { state: 'answered', pending: { call_id: 'c1', tool: 'local', arguments: {}, kind: 'client_tool', expires_at: '' }, answer: { kind: 'client_tool', output: 'claimed first', isError: false } }
  t.same(await toolGate.decide(call('local')), { kind: 'outcome', outcome: { ok: true, result: 'claimed first' } })
  t.equal(toolGate.waitingUntil, undefined)
})

t.test('an answer while waiting; the store failing the claim at the deadline: expired', async (t) => {
  const { toolGate, events } = gate({ addPending: async () => true, claimPending: async (): Promise<Claim | null> => Promise.reject(new Error('down')) })
  t.match(await toolGate.decide(call('careful')), { kind: 'outcome', outcome: { ok: false, error: /nobody approved it/ } })
  t.match(events.map((event) => (event as { content: string }).content), ['approval_required', 'approval_resolved'])

  const slow = gate({ addPending: async () => true, claimPending: async () => null }, { clientToolTimeoutMs: 10_000 })
  const waiting = slow.toolGate.decide(call('local'))
  await new Promise((resolve) => setTimeout(resolve, 10))
  t.ok(slow.toolGate.waitingUntil, 'a deadline while waiting')
  slow.toolGate.answer('c1', { kind: 'client_tool', output: 'failed here', isError: true })
  t.same(await waiting, { kind: 'outcome', outcome: { ok: false, error: 'failed here' } })
})

t.test('fenced before the call is recorded, or at the end of its round; a cancel rejects the wait', async (t) => {
  const fenced = gate({ addPending: async () => false, claimPending: async () => null, endRound: async () => false })
  await t.rejects(fenced.toolGate.decide(call('careful')), Fenced)
  await t.rejects(fenced.toolGate.roundEnded(), Fenced, 'recorded (as far as the gate knows): the end is fenced too')
  const plain = gate({ endRound: async () => t.fail('no round was recorded') as never })
  await plain.toolGate.roundEnded()
  t.same(await plain.toolGate.decide(call('free')), { kind: 'run' }, 'a call nobody waits for runs')
  const cancelled = gate({ addPending: async () => true, claimPending: async () => null }, { approvalTimeoutMs: 10_000 })
  const waiting = cancelled.toolGate.decide(call('careful', '{"x":1}'))
  cancelled.controller.abort(new Error('cancelled'))
  await t.rejects(waiting, /cancelled/)
})

t.test('settles: tool calls are tracked; a result settles its call only once the round is recorded', async (t) => {
  const { toolGate } = gate({ addPending: async () => true, claimPending: async () => null }, { clientToolTimeoutMs: 10_000 })
  const status = (content: string, metadata: Record<string, unknown>) => ({ type: 'status', session_id: 's', content, metadata: { run_id: 'r', ...metadata } }) as never
  t.equal(toolGate.settles({ type: 'token', session_id: 's', content: 'x', metadata: { run_id: 'r' } } as never), undefined)
  t.equal(toolGate.settles(status('tool_call', { call_id: 'a' })), undefined)
  t.equal(toolGate.settles(status('tool_result', { call_id: 'a', result: 1, is_error: false })), undefined, 'not recorded: nothing to settle')
  t.equal(toolGate.onlyWaiting, false, 'nothing waits')
  t.equal(toolGate.settles(status('tool_call', { call_id: 'c1' })), undefined)
  t.equal(toolGate.settles(status('tool_call', { call_id: 'b' })), undefined)
  const waiting = toolGate.decide(call('local'))
  await new Promise((resolve) => setTimeout(resolve, 5))
  t.equal(toolGate.onlyWaiting, false, 'b still runs')
  t.same(toolGate.settles(status('tool_result', { call_id: 'b', result: 'boom', is_error: true })), { callId: 'b', state: { state: 'done', outcome: { ok: false, error: 'boom' } } })
  t.equal(toolGate.onlyWaiting, true, 'now it only waits')
  toolGate.answer('c1', { kind: 'client_tool', output: 'x', isError: false })
  await waiting
  t.equal(toolGate.onlyWaiting, false)
})

t.test("a resumed round: each call goes on from where its instance left it", async (t) => {
  const pending = (id: string, kind: 'approval' | 'client_tool') => ({ call_id: id, tool: kind === 'approval' ? 'careful' : 'local', arguments: {}, kind, expires_at: new Date(Date.now() + 10_000).toISOString() })
  const round: WaitingRound = {
    round: 2,
    messages: [],
    content: '',
    reasoning: '',
    calls: {
      done: { state: 'done', outcome: { ok: true, result: 7 } },
      denied: { state: 'resolved', approved: false, error: 'not run: the user denied it' },
      approved: { state: 'resolved', approved: true },
      running: { state: 'running' },
      answered: { state: 'answered', pending: pending('answered', 'approval'), answer: { kind: 'approval', approved: true } },
      expired: { state: 'answered', pending: pending('expired', 'client_tool'), answer: { kind: 'client_tool', expired: true } },
      waiting: { state: 'waiting', pending: pending('waiting', 'approval') },
    },
  }
  const added: unknown[] = []
  const { toolGate, events } = gate({ addPending: async (...args) => (added.push(args), true), claimPending: async () => null }, {}, round)
  const decide = (id: string, tool = 'careful') => toolGate.decide({ tool, callId: id, argumentsJson: '{}', round: 2 })
  t.same(await decide('done'), { kind: 'logged', outcome: { ok: true, result: 7 } }, 'its result is logged already')
  t.same(await decide('denied'), { kind: 'outcome', outcome: { ok: false, error: 'not run: the user denied it' } })
  t.same(await decide('approved'), { kind: 'outcome', outcome: CUT_OFF }, 'approved and running when its instance stopped: not run again')
  t.same(await decide('running'), { kind: 'outcome', outcome: CUT_OFF })
  t.same(await decide('unknown'), { kind: 'outcome', outcome: CUT_OFF })
  t.same(await decide('answered'), { kind: 'run' }, 'approved by the answer that adopted it')
  t.match(events.at(-1), { content: 'approval_resolved', metadata: { call_id: 'answered', approved: true } })
  t.match(await decide('expired', 'local'), { kind: 'outcome', outcome: { ok: false, error: /timed out/ } })
  const waiting = decide('waiting')
  await new Promise((resolve) => setTimeout(resolve, 5))
  t.same(added, [], 'a call waiting already is not recorded or announced again')
  t.equal(events.filter((event) => (event as { content: string }).content === 'approval_required').length, 0)
  toolGate.answer('waiting', { kind: 'approval', approved: false, reason: 'no' })
  t.match(await waiting, { kind: 'outcome', outcome: { ok: false, error: 'not run: the user denied it: no' } })
})

t.test('a resumed call whose deadline passed while no instance held it expires at once, without a negative-timeout warning', async (t) => {
  const warnings: string[] = []
  const onWarning = (warning: Error) => warnings.push(warning.name)
  process.on('warning', onWarning)
  t.teardown(() => void process.off('warning', onWarning))
  const round: WaitingRound = {
    round: 1,
    messages: [],
    content: '',
    reasoning: '',
    calls: { late: { state: 'waiting', pending: { call_id: 'late', tool: 'local', arguments: {}, kind: 'client_tool', expires_at: new Date(Date.now() - 60_000).toISOString() } } },
  }
  const { toolGate } = gate({ addPending: async () => true, claimPending: async () => null, callState: async () => null }, {}, round)
  t.match(await toolGate.decide({ tool: 'local', callId: 'late', argumentsJson: '{}', round: 1 }), { kind: 'outcome', outcome: { ok: false, error: /timed out/ } })
  await new Promise(setImmediate)
  t.same(warnings, [], 'no process warning')
})
