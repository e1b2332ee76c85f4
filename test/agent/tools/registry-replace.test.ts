import t from 'tap'
import { Type } from '@sinclair/typebox'
import { createToolRegistry, defineTool, type Tool } from '../../../src/agent/tools/index.ts'

const ctx = () => ({ signal: new AbortController().signal, sessionId: 's', userId: 'u' })
const builtin = defineTool({ name: 'builtin', description: 'b', parameters: Type.Object({}), run: () => 'builtin' })
const remote = (name: string): Tool => ({
  name,
  description: `remote ${name}`,
  parameters: Type.Unsafe({ type: 'object', properties: { n: { type: 'number' } } }),
  validate: (args) => (typeof (args as { n?: unknown }).n === 'number' ? undefined : 'n: must be a number'),
  run: (args) => args,
})

t.test('replace swaps one source at a time, leaving the others', async (t) => {
  const registry = createToolRegistry([builtin])
  registry.replace('a', [remote('a__x'), remote('a__y')])
  registry.replace('b', [remote('b__x')])
  t.same(registry.names(), ['builtin', 'a__x', 'a__y', 'b__x'])
  t.equal(registry.size, 4)
  t.same(registry.openAITools().map((tool) => tool.function.name), ['builtin', 'a__x', 'a__y', 'b__x'])
  registry.replace('a', [remote('a__z')])
  t.same(registry.names(), ['builtin', 'b__x', 'a__z'])
  registry.replace('b', [])
  t.same(registry.openAITools().map((tool) => tool.function.name), ['builtin', 'a__z'])
  t.same(await registry.execute('a__z', '{"n":1}', ctx()), { ok: true, result: { n: 1 } })
  t.same(await registry.execute('b__x', '{"n":1}', ctx()), { ok: false, error: 'unknown tool: b__x; available tools: builtin, a__z' })
})

t.test("a tool's own validate replaces the TypeBox check", async (t) => {
  const registry = createToolRegistry([remote('r')])
  t.same(await registry.execute('r', '{"n":"one"}', ctx()), { ok: false, error: 'invalid arguments for r: n: must be a number' })
})

t.test('a replacement that clashes or is invalid changes nothing', async (t) => {
  const registry = createToolRegistry([builtin])
  registry.replace('a', [remote('a__x')])
  t.throws(() => registry.replace('b', [remote('builtin')]), { message: 'duplicate tool name: builtin' })
  t.throws(() => registry.replace('b', [remote('a__x')]), { message: 'duplicate tool name: a__x' })
  t.throws(() => registry.replace('a', [remote('a__q'), remote('bad name')]), /invalid tool name/)
  t.same(registry.names(), ['builtin', 'a__x'])
})
