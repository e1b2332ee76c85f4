import t from 'tap'
import pino from 'pino'
import { readFile } from 'node:fs/promises'
import type { FastifyBaseLogger } from 'fastify'
import { streamFixtures, type StreamFixture } from '../fixtures/streams/index.ts'
import { createFakeUpstream } from '../helpers/fake-upstream.ts'
import { testConfig } from '../helpers/app.ts'
import { chat, scripted, setupUpstream, FAULT_LIMITS } from './setup.ts'
import { createModel } from '../../src/agent/models/index.ts'
import { createProgress, runAgent, type AgentEvent } from '../../src/agent/run-agent.ts'
import { UpstreamError } from '../../src/agent/upstream-error.ts'
import { createToolRegistry, selectBuiltinTools } from '../../src/agent/tools/index.ts'

const silent = pino({ level: 'silent' }) as FastifyBaseLogger

/** Retries off unless the shape is about them: one chat is one request per response. */
function limitsOf(fixture: StreamFixture) {
  return { ...FAULT_LIMITS, UPSTREAM_MAX_RETRIES: 0, ...fixture.config }
}

t.test('the corpus covers every server the README promises, and docs list every shape', async (t) => {
  const servers = new Set(streamFixtures.map((fixture) => fixture.server))
  for (const server of ['OpenAI', 'Azure OpenAI', 'vLLM', 'Ollama', 'llama.cpp server', 'LM Studio', 'DeepSeek', 'Groq', 'Mistral', 'OpenRouter', 'Fireworks']) {
    t.ok(servers.has(server), server)
  }
  t.ok([...servers].some((server) => server.startsWith('Gemini')), 'Gemini')
  const doc = await readFile(new URL('../../docs/upstream-servers.md', import.meta.url), 'utf8')
  for (const fixture of streamFixtures) t.match(doc, `\`${fixture.name}\``, `docs/upstream-servers.md lists ${fixture.name}`)
})

for (const fixture of streamFixtures) {
  const { expect } = fixture
  t.test(`${fixture.name} (${fixture.server}): ${fixture.shape}`, async (t) => {
    t.test('what a client receives', async (t) => {
      const { up, client } = await setupUpstream(t, limitsOf(fixture))
      scripted(up, fixture.responses)
      const run = await chat(t, client, 'hi')
      // Reasoning frames go only to chats that ask (the sessions layer decides): not judged here.
      const frames = run.frames.filter((frame) => frame.type !== 'reasoning')
      for (const frame of frames) {
        if (frame.type === 'token') t.ok(String(frame.content).isWellFormed(), `token ${JSON.stringify(frame.content)} is well-formed UTF-16`)
      }
      t.equal(run.text, expect.text, 'the tokens')
      t.equal(run.complete.content, expect.text, 'complete.content is the tokens joined')
      const toolCalls = frames.flatMap((frame) =>
        frame.type === 'status' && frame.content === 'tool_call' ? [{ tool: frame.metadata?.tool, arguments: frame.metadata?.arguments }] : [],
      )
      t.same(toolCalls, expect.tool_calls ?? [], 'the tool calls')
      t.equal(run.complete.metadata.finish_reason, expect.finish_reason, 'finish_reason')
      t.same(run.complete.metadata.usage, expect.usage, 'usage')
      t.same(run.error && { code: run.error.metadata.code, retryable: run.error.metadata.retryable }, expect.error, 'the error')
      t.equal(up.requests.length, expect.requests ?? fixture.responses.length, 'upstream requests')
    })

    t.test('what the agent layer emits', async (t) => {
      const up = await createFakeUpstream()
      t.teardown(() => up.close())
      scripted(up, fixture.responses)
      const config = testConfig({ ...limitsOf(fixture), modelProvider: 'openai', OPENAI_BASE_URL: up.baseURL, OPENAI_API_KEY: 'test' })
      let reasoningDeltas = 0
      const model = createModel(config, silent, { request: () => {}, retry: () => {}, reasoningDelta: () => void reasoningDeltas++ })
      const events: AgentEvent[] = []
      const progress = createProgress()
      const finishReason = await runAgent(
        {
          model,
          tools: createToolRegistry(selectBuiltinTools(['calculate', 'get_current_time'])),
          messages: [{ role: 'system', content: 'sys' }, { role: 'user', content: 'hi' }],
          signal: new AbortController().signal,
          maxToolRounds: 5,
          sessionId: 'corpus',
          userId: 'alice',
          emit: async (event) => void events.push(event),
        },
        progress,
      ).then(
        (outcome) => outcome.finishReason,
        (err: unknown) => {
          t.type(err, UpstreamError)
          return 'error'
        },
      )
      const reasoning = events.flatMap((event) => (event.type === 'reasoning' ? [event] : []))
      t.equal(reasoning.map((event) => event.text).join(''), expect.reasoning ?? '', 'reasoning events')
      t.equal(progress.reasoning, expect.reasoning ?? '', 'the run keeps its reasoning apart from its content')
      t.equal(reasoningDeltas, reasoning.length, 'the upstream observer counted each reasoning delta')
      t.equal(events.flatMap((event) => (event.type === 'token' ? [event.text] : [])).join(''), expect.text, 'token events')
      t.equal(progress.content, expect.text)
      t.equal(finishReason, expect.finish_reason)
    })
  })
}
