import t from 'tap'
import fc from 'fast-check'
import { calculate, evaluate, CalculationError } from '../../../src/agent/tools/calculate.ts'

const ctx = { signal: new AbortController().signal, sessionId: 's1', userId: 'u1' }

type Asserts = Pick<typeof t, 'throws'>

function throwsAt(t: Asserts, expression: string, message: RegExp, position: number): void {
  const label = expression.length > 40 ? `${expression.slice(0, 37)}...` : expression
  t.throws(() => evaluate(expression), { name: 'CalculationError', message, position }, label)
}

t.test('precedence and associativity', async (t) => {
  const cases: Array<[string, number]> = [
    ['1 + 2 * 3', 7],
    ['(1 + 2) * 3', 9],
    ['10 - 4 - 3', 3],
    ['100 / 10 / 5', 2],
    ['2 * 3 % 4', 2],
    ['7 % 3 * 2', 2],
    ['2 ^ 3 ^ 2', 512],
    ['(2 ^ 3) ^ 2', 64],
    ['2 ** 10', 1024],
    ['-2 ^ 2', -4],
    ['(-2) ^ 2', 4],
    ['2 ^ -1', 0.5],
    ['-3 - -3', 0],
    ['+4', 4],
    ['--4', 4],
    ['-(1 + 2) * 2', -6],
    ['2 * -3', -6],
    ['1 + 2 * 3 ^ 2 / 6 - 1', 3],
  ]
  for (const [expression, expected] of cases) t.equal(evaluate(expression), expected, expression)
})

t.test('numbers', async (t) => {
  t.equal(evaluate('0.5 + .25 + 5.'), 5.75)
  t.equal(evaluate('1e3'), 1000)
  t.equal(evaluate('2.5E-2'), 0.025)
  t.equal(evaluate('1e+2'), 100)
  t.equal(evaluate('  42\t\n'), 42)
  t.ok(Object.is(evaluate('-0'), 0), 'no negative zero')
  t.ok(Object.is(evaluate('0 * -1'), 0), 'no negative zero from arithmetic')
})

t.test('functions and constants', async (t) => {
  t.equal(evaluate('sqrt(16)'), 4)
  t.equal(evaluate('abs(-3.5)'), 3.5)
  t.equal(evaluate('round(2.5)'), 3)
  t.equal(evaluate('floor(-1.5)'), -2)
  t.equal(evaluate('ceil(1.2)'), 2)
  t.equal(evaluate('ln(e)'), 1)
  t.equal(evaluate('log(1000)'), 3)
  t.equal(evaluate('sin(0)'), 0)
  t.equal(evaluate('cos(0)'), 1)
  t.equal(evaluate('round(tan(pi / 4) * 1000)'), 1000)
  t.equal(evaluate('min(3, 1, 2)'), 1)
  t.equal(evaluate('max(3, 1 + 9, 2)'), 10)
  t.equal(evaluate('max(4)'), 4)
  t.equal(evaluate('pi'), Math.PI)
  t.equal(evaluate('e'), Math.E)
  t.equal(evaluate('SQRT(4) + Pi - PI'), 2, 'names are case-insensitive')
  t.equal(evaluate('sqrt(sqrt(16)) ^ 2'), 4)
})

t.test('syntax errors name the position', async (t) => {
  throwsAt(t, '(1 + 2', /^expected '\)' to close the '\(' at position 1 but found end of expression at position 7$/, 7)
  throwsAt(t, '(1, 2)', /expected '\)' to close the '\(' at position 1 but found ','/, 3)
  throwsAt(t, 'min(1, 2', /expected '\)' to close the '\(' at position 4/, 9)
  throwsAt(t, '1 + 2)', /^unexpected '\)' at position 6$/, 6)
  throwsAt(t, '1 2', /^unexpected '2' at position 3$/, 3)
  throwsAt(t, '2pi', /^unexpected 'pi' at position 2$/, 2)
  throwsAt(t, '1, 2', /^unexpected ','/, 2)
  throwsAt(t, '1.2.3', /^unexpected '\.3'/, 4)
  throwsAt(t, '', /^expected a number, constant, function or '\(' but found end of expression at position 1$/, 1)
  throwsAt(t, '1 +', /found end of expression at position 4/, 4)
  throwsAt(t, '* 2', /found '\*' at position 1/, 1)
  throwsAt(t, '()', /found '\)' at position 2/, 2)
  throwsAt(t, '1 + $', /^unexpected character '\$' at position 5$/, 5)
  throwsAt(t, '1 = 1', /^unexpected character '='/, 3)
  throwsAt(t, 'pi(2)', /^unexpected '\('/, 3)
  throwsAt(t, 'sqrt', /^sqrt is a function: call it like sqrt\(x\) at position 1$/, 1)
  throwsAt(t, 'Abs 3', /^Abs is a function: call it like abs\(x\)/, 1)
  throwsAt(t, 'sqrt(1, 2)', /^wrong number of arguments for sqrt: expected 1, got 2 at position 1$/, 1)
  throwsAt(t, '1 + sqrt()', /^wrong number of arguments for sqrt: expected 1, got 0/, 5)
  throwsAt(t, 'min()', /^wrong number of arguments for min: expected at least 1, got 0/, 1)
})

t.test('only known identifiers: no way out to JavaScript', async (t) => {
  for (const name of ['process', 'constructor', '__proto__', 'toString', 'hasOwnProperty', 'globalThis', 'eval', 'Function', 'x', 'e1']) {
    throwsAt(t, name, new RegExp(`^unknown identifier '${name}' at position 1; known: functions sqrt, .*; constants pi, e$`), 1)
  }
  throwsAt(t, 'process.exit()', /^unknown identifier 'process' at position 1/, 1)
  throwsAt(t, '1 + constructor(1)', /^unknown identifier 'constructor' at position 5/, 5)
  throwsAt(t, "require('fs')", /^unknown identifier 'require'/, 1)
  throwsAt(t, '[].constructor', /^unexpected character '\['/, 1)
  throwsAt(t, '"1"', /^unexpected character '"'/, 1)
})

t.test('arithmetic errors', async (t) => {
  throwsAt(t, '1 / 0', /^division by zero at position 3$/, 3)
  throwsAt(t, '1 / (2 - 2)', /^division by zero/, 3)
  throwsAt(t, '5 % 0', /^modulo by zero at position 3$/, 3)
  throwsAt(t, '1e999', /^number '1e999' is too large at position 1$/, 1)
  throwsAt(t, '10 ^ 400', /^result of '\^' is not a finite number at position 4$/, 4)
  throwsAt(t, '(-8) ^ 0.5', /^result of '\^' is not a finite number/, 6)
  throwsAt(t, '1e308 + 1e308', /^result of '\+' is not a finite number at position 7/, 7)
  throwsAt(t, '-1e308 - 1e308', /^result of '-' is not a finite number at position 8/, 8)
  throwsAt(t, '1e200 * 1e200', /^result of '\*' is not a finite number/, 7)
  throwsAt(t, '1e308 / 1e-10', /^result of '\/' is not a finite number/, 7)
  throwsAt(t, 'sqrt(-1)', /^result of sqrt is not a finite number at position 1$/, 1)
  throwsAt(t, '2 * ln(0)', /^result of ln is not a finite number at position 5/, 5)
})

t.test('limits', async (t) => {
  const nested = (depth: number) => '('.repeat(depth) + '1' + ')'.repeat(depth)
  t.equal(evaluate(nested(64)), 1, '64 levels of parentheses are fine')
  throwsAt(t, nested(65), /^expression nests too deeply \(more than 64 levels\) at position 65$/, 65)
  t.equal(evaluate('-'.repeat(64) + '1'), 1)
  throwsAt(t, '-'.repeat(65) + '1', /nests too deeply/, 65)
  t.equal(evaluate(Array(65).fill('1').join('^')), 1, 'a chain of 64 powers is fine')
  throwsAt(t, Array(66).fill('1').join('^'), /nests too deeply/, 130)
  t.equal(evaluate('sqrt('.repeat(64) + '1' + ')'.repeat(64)), 1, '64 nested calls are fine')
  throwsAt(t, 'abs('.repeat(65) + '1' + ')'.repeat(65), /nests too deeply/, 257)

  const tokens = (count: number) => Array(Math.ceil(count / 2)).fill('1').join(' + ')
  t.equal(evaluate(tokens(499)), 250, '499 tokens are fine')
  t.equal(evaluate(`${tokens(499)} `.padEnd(2000)), 250, 'whitespace is not a token')
  throwsAt(t, tokens(501), /^expression has too many tokens \(more than 500\) at position 1001$/, 1001)
})

t.test('errors are CalculationErrors with a position', async (t) => {
  try {
    evaluate('1 +')
    t.fail('should throw')
  } catch (error) {
    t.ok(error instanceof CalculationError)
    t.ok(error instanceof Error)
    t.equal((error as CalculationError).position, 4)
  }
})

t.test('never throws anything but a CalculationError, never returns a non-finite number', async (t) => {
  const alphabet = fc.constantFrom(...'0123456789.eE+-*/%^(), piqrtsnaxmlog_$'.split(''))
  fc.assert(
    fc.property(fc.string({ unit: alphabet, maxLength: 40 }), (expression) => {
      try {
        return Number.isFinite(evaluate(expression))
      } catch (error) {
        return error instanceof CalculationError
      }
    }),
    { numRuns: 2000 },
  )
  t.pass('fuzzed')
})

t.test('agrees with JavaScript on integer arithmetic', async (t) => {
  const int = fc.integer({ min: -1000, max: 1000 })
  fc.assert(
    fc.property(int, int, int, (a, b, c) => {
      const expected = a - b * c + (c === 0 ? 0 : a % c)
      const expression = c === 0 ? `${a} - ${b} * ${c}` : `${a} - ${b} * ${c} + ${a} % ${c}`
      return evaluate(expression) === expected + 0
    }),
  )
  t.pass('matched')
})

t.test('calculate tool', async (t) => {
  t.equal(calculate.name, 'calculate')
  t.same(await calculate.run({ expression: '6 * 7' }, ctx), { expression: '6 * 7', result: 42 })
  t.throws(() => calculate.run({ expression: '6 *' }, ctx), /found end of expression/)
})
