import t from 'tap'
import { builtinTools, selectBuiltinTools, calculate, getCurrentTime, createToolRegistry } from '../../../src/agent/tools/index.ts'

t.test('builtinTools is keyed by tool name', async (t) => {
  t.same(Object.keys(builtinTools), ['get_current_time', 'calculate'])
  t.equal(builtinTools.get_current_time, getCurrentTime)
  t.equal(builtinTools.calculate, calculate)
  t.equal(createToolRegistry(Object.values(builtinTools)).size, 2, 'they register together')
})

t.test('selectBuiltinTools', async (t) => {
  t.same(selectBuiltinTools([]), [])
  t.same(selectBuiltinTools(['calculate', 'get_current_time']), [calculate, getCurrentTime], 'in the order asked')
  t.same(selectBuiltinTools(['calculate', 'calculate']), [calculate], 'without duplicates')
  t.throws(() => selectBuiltinTools(['calculate', 'web_search']), {
    message: "unknown built-in tool 'web_search': known tools are get_current_time, calculate",
  })
  t.throws(() => selectBuiltinTools(['constructor']), /unknown built-in tool 'constructor'/)
  t.throws(() => selectBuiltinTools(['__proto__']), /unknown built-in tool '__proto__'/)
})
