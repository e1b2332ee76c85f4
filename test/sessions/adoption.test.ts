// A run's round record and back (src/sessions/adoption.ts): what is recorded is what an
// adopter starts from, with and without the optional parts (request id, reasoning, client
// tools, usage).
import t from 'tap'
import { pino } from 'pino'
import { createToolRegistry } from '../../src/agent/tools/registry.ts'
import { RunExecutor } from '../../src/sessions/run-executor.ts'
import { Subscriptions } from '../../src/sessions/subscriptions.ts'
import { createMemoryBackend } from '../../src/store/memory/index.ts'
import { adoption, resumedProgress, snapshotOf, startOf } from '../../src/sessions/adoption.ts'
import { roundCallIds, type WaitingRound } from '../../src/store/waiting-round.ts'

const ref = { owner: 'alice', id: 's', gen: '1' }
const assistant = { role: 'assistant' as const, content: null, tool_calls: [{ id: 'c1', type: 'function' as const, function: { name: 'where', arguments: '{}' } }] }
const where = { name: 'where', parameters: { type: 'object' } }

t.test('snapshotOf / resumedProgress: the progress goes round trip, optional parts only when there', async (t) => {
  const progress = { content: 'so far', messages: [assistant], usage: { prompt_tokens: 1, completion_tokens: 2 }, pendingText: '', reasoning: 'hm' }
  const full = snapshotOf({ reasoning: true, clientTools: [where] }, progress, 3)
  t.same(full, { round: 3, messages: [assistant], content: 'so far', reasoning: 'hm', usage: progress.usage, relayReasoning: true, clientTools: [where] })
  t.same(resumedProgress({ ...full, calls: {} }), progress)
  const bare = snapshotOf({}, { ...progress, usage: undefined }, 0)
  t.same(bare, { round: 0, messages: [assistant], content: 'so far', reasoning: 'hm' })
  t.not(full.messages, progress.messages, 'a copy: the run goes on changing its own')
})

t.test('startOf: the conversation ends with the run user message; the request id, reasoning and client tools come back', async (t) => {
  const round: WaitingRound = { round: 0, messages: [assistant], content: '', reasoning: '', calls: {} }
  const active = { runId: 'r', fence: 'r~x', instanceId: 'me', startAfterSeq: 4, leaseExpiresAt: 0 }
  const messages = [{ role: 'user' as const, content: 'earlier' }, { role: 'assistant' as const, content: 'yes' }, { role: 'user' as const, content: 'where am I?' }]
  t.same(startOf(ref, { active, round }, { messages }), { ref, runId: 'r', startAfterSeq: 4, history: messages.slice(0, 2), userMessage: messages[2] })
  t.same(startOf(ref, { active: { ...active, requestId: 'q' }, round: { ...round, relayReasoning: true, clientTools: [where] } }, { messages }), {
    ref,
    runId: 'r',
    startAfterSeq: 4,
    history: messages.slice(0, 2),
    userMessage: messages[2],
    requestId: 'q',
    reasoning: true,
    clientTools: [where],
  })
  t.same(startOf(ref, { active, round }, null).userMessage, { role: 'user', content: '' }, 'a session gone meanwhile: an empty turn, not a crash')
  t.match(adoption({ instanceId: 'me', leaseMs: 1000 }, 'r'), { instanceId: 'me', leaseMs: 1000, fence: /^r~[0-9a-f]{8}$/ })
  t.same(roundCallIds({ round: 0, messages: [], content: '', reasoning: '' }), [], 'a round without its assistant turn has no calls')
})

t.test('a draining executor asks to adopt nothing: nothing new runs on an instance that is going', async (t) => {
  const backend = createMemoryBackend({ ttlSeconds: 60, maxEvents: 10 })
  t.teardown(() => backend.close())
  const logger = pino({ level: 'silent' })
  const subscriptions = new Subscriptions({ backend, log: logger, refreshMs: 60_000 })
  t.teardown(() => subscriptions.close())
  const config = { instanceId: 'me', systemPrompt: '', historyMaxMessages: 10, resumeGraceMs: 0, maxToolRounds: 1, leaseMs: 1000, approvalTools: new Set<string>(), approvalTimeoutMs: 1000, clientToolTimeoutMs: 1000 }
  const executor = new RunExecutor({ backend, model: { name: 'none', stream: async function* () {} }, tools: createToolRegistry([]), config, logger, subscriptions })
  t.match(executor.adoptionOf('r'), { instanceId: 'me' })
  await executor.drain(0)
  t.equal(executor.adoptionOf('r'), undefined)
})
