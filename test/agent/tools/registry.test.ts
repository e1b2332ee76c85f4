import t from 'tap'
import { getEventListeners } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { Type } from '@sinclair/typebox'
import { createToolRegistry } from '../../../src/agent/tools/registry.ts'
import { defineTool, type Tool, type ToolContext } from '../../../src/agent/tools/types.ts'
import { calculate } from '../../../src/agent/tools/calculate.ts'
import { getCurrentTime } from '../../../src/agent/tools/get-current-time.ts'

function contextFor(signal = new AbortController().signal): ToolContext {
  return { signal, sessionId: 'session-1', userId: 'user-1' }
}

const echo = defineTool({
  name: 'echo',
  description: 'Echo the arguments back',
  parameters: Type.Object({
    text: Type.String(),
    times: Type.Optional(Type.Integer({ minimum: 1 })),
    nested: Type.Optional(Type.Object({ flag: Type.Boolean() })),
  }),
  run: (args, ctx) => ({ args, sessionId: ctx.sessionId, userId: ctx.userId }),
})

function failing(name: string, run: Tool['run']): Tool {
  return { name, description: 'fails', parameters: Type.Object({}), run }
}

t.test('openAITools: plain JSON Schema in the chat.completions shape', async (t) => {
  const registry = createToolRegistry([calculate, getCurrentTime])
  const tools = registry.openAITools()
  t.same(tools, [
    {
      type: 'function',
      function: {
        name: 'calculate',
        description: calculate.description,
        parameters: {
          type: 'object',
          additionalProperties: false,
          required: ['expression'],
          properties: { expression: { type: 'string', minLength: 1, maxLength: 500, description: 'The expression to evaluate' } },
        },
      },
    },
    {
      type: 'function',
      function: {
        name: 'get_current_time',
        description: getCurrentTime.description,
        parameters: {
          type: 'object',
          additionalProperties: false,
          properties: { timezone: { type: 'string', minLength: 1, maxLength: 64, description: getCurrentTime.parameters.properties.timezone.description } },
        },
      },
    },
  ])
  const parameters = tools[0]?.function.parameters
  t.same(Object.getOwnPropertySymbols(parameters), [], 'no TypeBox symbol keys')
  t.same(Object.getOwnPropertySymbols((parameters?.properties as Record<string, object>).expression), [])
  t.strictSame(JSON.parse(JSON.stringify(tools)), tools, 'round-trips through JSON')

  tools.pop()
  ;(parameters as Record<string, unknown>).type = 'changed'
  t.equal(registry.openAITools().length, 2, 'each call returns a fresh copy')
  t.equal(registry.openAITools()[0]?.function.parameters.type, 'object')
})

t.test('size and names', async (t) => {
  const registry = createToolRegistry([calculate, echo])
  t.equal(registry.size, 2)
  t.same(registry.names(), ['calculate', 'echo'])
  t.equal(createToolRegistry([]).size, 0)
  t.same(createToolRegistry([]).openAITools(), [])
})

t.test('rejects bad registrations at startup', async (t) => {
  t.throws(() => createToolRegistry([calculate, calculate]), { message: 'duplicate tool name: calculate' })
  for (const name of ['', 'has space', 'dot.name', 'x'.repeat(65), 'ünïcode']) {
    t.throws(() => createToolRegistry([{ ...echo, name }]), { message: /^invalid tool name .*: must match/ }, JSON.stringify(name))
  }
  t.throws(() => createToolRegistry([{ ...echo, name: undefined as unknown as string }]), /invalid tool name undefined/)
  t.doesNotThrow(() => createToolRegistry([{ ...echo, name: 'A-z_0-9' }, { ...echo, name: 'x'.repeat(64) }]))
  t.throws(() => createToolRegistry([{ ...echo, parameters: Type.String() }]), { message: 'tool echo: parameters must be an object schema' })
})

t.test('runs a valid call with its context', async (t) => {
  const registry = createToolRegistry([echo, calculate])
  t.same(await registry.execute('echo', '{"text":"hi","times":2}', contextFor()), {
    ok: true,
    result: { args: { text: 'hi', times: 2 }, sessionId: 'session-1', userId: 'user-1' },
  })
  t.same(await registry.execute('calculate', '{"expression":"2^10"}', contextFor()), {
    ok: true,
    result: { expression: '2^10', result: 1024 },
  })
})

t.test('an empty argument string means no arguments', async (t) => {
  const registry = createToolRegistry([getCurrentTime, echo])
  const outcome = await registry.execute('get_current_time', '  ', contextFor())
  t.equal(outcome.ok, true)
  t.match(outcome, { result: { timezone: 'UTC' } })
  t.same(await registry.execute('echo', '', contextFor()), { ok: false, error: 'invalid arguments for echo: text: Expected required property' })
})

t.test('unknown tool', async (t) => {
  t.same(await createToolRegistry([echo, calculate]).execute('rm_rf', '{}', contextFor()), {
    ok: false,
    error: 'unknown tool: rm_rf; available tools: echo, calculate',
  })
  t.same(await createToolRegistry([]).execute('echo', '{}', contextFor()), { ok: false, error: 'unknown tool: echo; available tools: none' })
})

t.test('invalid JSON arguments', async (t) => {
  const registry = createToolRegistry([echo])
  const outcome = await registry.execute('echo', '{"text": "unterminated', contextFor())
  t.equal(outcome.ok, false)
  t.match(outcome, { error: /^arguments are not valid JSON: / })
})

t.test('schema mismatches say which field and why', async (t) => {
  const registry = createToolRegistry([echo, calculate])
  const run = async (name: string, args: string) => registry.execute(name, args, contextFor())

  t.same(await run('echo', '{"text": 5}'), { ok: false, error: 'invalid arguments for echo: text: Expected string' })
  t.same(await run('echo', '{"text": "a", "times": 0}'), {
    ok: false,
    error: 'invalid arguments for echo: times: Expected integer to be greater or equal to 1',
  })
  t.same(await run('echo', '{"text": "a", "nested": {"flag": "yes"}}'), {
    ok: false,
    error: 'invalid arguments for echo: nested.flag: Expected boolean',
  })
  t.same(await run('echo', '[]'), { ok: false, error: 'invalid arguments for echo: arguments: Expected object' })
  t.same(await run('echo', 'null'), { ok: false, error: 'invalid arguments for echo: arguments: Expected object' })
  t.same(await run('calculate', '{"expression": "1", "extra": true}'), {
    ok: false,
    error: 'invalid arguments for calculate: extra: Unexpected property',
  })
  t.same(await run('calculate', JSON.stringify({ expression: '1+'.repeat(250) + '1' })), {
    ok: false,
    error: 'invalid arguments for calculate: expression: Expected string length less or equal to 500',
  })
})

t.test('reports at most three schema errors', async (t) => {
  const wide = defineTool({
    name: 'wide',
    description: 'many fields',
    parameters: Type.Object({ a: Type.String(), b: Type.String(), c: Type.String(), d: Type.String(), e: Type.String() }),
    run: () => 'unreachable',
  })
  const outcome = await createToolRegistry([wide]).execute('wide', '{}', contextFor())
  t.same(outcome, {
    ok: false,
    error: 'invalid arguments for wide: a: Expected required property; b: Expected required property; c: Expected required property',
  })
})

t.test('a failing tool becomes a tool error', async (t) => {
  const registry = createToolRegistry([
    failing('throws', () => {
      throw new Error('disk on fire')
    }),
    failing('rejects', async () => {
      throw new TypeError('bad input')
    }),
    failing('throws_string', () => {
      throw 'plain string' // eslint-disable-line no-throw-literal
    }),
    failing('bigint', () => ({ n: 1n })),
    getCurrentTime,
  ])
  t.same(await registry.execute('throws', '{}', contextFor()), { ok: false, error: 'throws failed: disk on fire' })
  t.same(await registry.execute('rejects', '{}', contextFor()), { ok: false, error: 'rejects failed: bad input' })
  t.same(await registry.execute('throws_string', '{}', contextFor()), { ok: false, error: 'throws_string failed: plain string' })
  t.match(await registry.execute('bigint', '{}', contextFor()), { ok: false, error: /^bigint failed: .*BigInt/ })
  t.match(await registry.execute('get_current_time', '{"timezone":"Mars/Olympus_Mons"}', contextFor()), {
    ok: false,
    error: /^get_current_time failed: unknown timezone 'Mars\/Olympus_Mons'/,
  })
})

t.test('a tool returning nothing yields null', async (t) => {
  const registry = createToolRegistry([failing('void', () => undefined)])
  t.same(await registry.execute('void', '{}', contextFor()), { ok: true, result: null })
})

t.test('aborted before the call: the tool never runs', async (t) => {
  let ran = false
  const registry = createToolRegistry([
    failing('spy', () => {
      ran = true
    }),
  ])
  const controller = new AbortController()
  controller.abort()
  t.same(await registry.execute('spy', '{}', contextFor(controller.signal)), { ok: false, error: 'cancelled' })
  t.same(await registry.execute('nope', 'not json', contextFor(controller.signal)), { ok: false, error: 'cancelled' })
  t.equal(ran, false)
})

t.test('aborted while a tool that ignores the signal runs: resolves promptly', async (t) => {
  let seenSignal: AbortSignal | undefined
  const registry = createToolRegistry([
    failing('hangs', (_args, ctx) => {
      seenSignal = ctx.signal
      return new Promise(() => {}) // never settles, never looks at the signal
    }),
  ])
  const controller = new AbortController()
  const started = performance.now()
  const outcome = registry.execute('hangs', '{}', contextFor(controller.signal))
  setTimeout(() => controller.abort(), 20)
  t.same(await outcome, { ok: false, error: 'cancelled' })
  t.ok(performance.now() - started < 1000, 'resolved promptly')
  t.equal(seenSignal, controller.signal, 'the tool got the signal')
  t.equal(getEventListeners(controller.signal, 'abort').length, 0, 'no listener left behind')
})

t.test('a tool that fails after being cancelled causes no unhandled rejection', async (t) => {
  const registry = createToolRegistry([
    failing('late', async () => {
      await sleep(30)
      throw new Error('too late')
    }),
  ])
  const controller = new AbortController()
  const outcome = registry.execute('late', '{}', contextFor(controller.signal))
  controller.abort()
  t.same(await outcome, { ok: false, error: 'cancelled' })
  await sleep(60) // tap fails the test on an unhandled rejection
})

t.test('the abort listener is removed after a normal run', async (t) => {
  const registry = createToolRegistry([echo])
  const controller = new AbortController()
  await registry.execute('echo', '{"text":"x"}', contextFor(controller.signal))
  t.equal(getEventListeners(controller.signal, 'abort').length, 0)
})
