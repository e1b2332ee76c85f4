import { Type } from '@sinclair/typebox'
import { defineTool } from './types.ts'

// A hand-written arithmetic evaluator: the model's input never reaches eval/Function.

const MAX_EXPRESSION_LENGTH = 500
const MAX_TOKENS = 500
const MAX_DEPTH = 64

interface FunctionSpec {
  minArgs: number
  maxArgs: number
  apply(args: number[]): number
}

function oneArg(fn: (x: number) => number): FunctionSpec {
  return { minArgs: 1, maxArgs: 1, apply: ([x]) => fn(x as number) }
}

function anyArgs(fn: (...xs: number[]) => number): FunctionSpec {
  return { minArgs: 1, maxArgs: Infinity, apply: (args) => fn(...args) }
}

// Maps, not object literals, so names like `constructor` or `__proto__` are simply unknown.
const FUNCTIONS = new Map<string, FunctionSpec>([
  ['sqrt', oneArg(Math.sqrt)],
  ['abs', oneArg(Math.abs)],
  ['round', oneArg(Math.round)],
  ['floor', oneArg(Math.floor)],
  ['ceil', oneArg(Math.ceil)],
  ['ln', oneArg(Math.log)],
  ['log', oneArg(Math.log10)],
  ['sin', oneArg(Math.sin)],
  ['cos', oneArg(Math.cos)],
  ['tan', oneArg(Math.tan)],
  ['min', anyArgs(Math.min)],
  ['max', anyArgs(Math.max)],
])

const CONSTANTS = new Map<string, number>([
  ['pi', Math.PI],
  ['e', Math.E],
])

const KNOWN_NAMES = `functions ${[...FUNCTIONS.keys()].join(', ')}; constants ${[...CONSTANTS.keys()].join(', ')}`

/** An evaluation error; `position` is 1-based, in characters of the expression. */
export class CalculationError extends Error {
  readonly position: number
  constructor(message: string, position: number, hint?: string) {
    super(`${message} at position ${position}${hint ? `; ${hint}` : ''}`)
    this.name = 'CalculationError'
    this.position = position
  }
}

type SymbolText = '+' | '-' | '*' | '/' | '%' | '^' | '(' | ')' | ','

type Token =
  | { kind: 'number'; value: number; text: string; position: number }
  | { kind: 'constant'; value: number; text: string; position: number }
  | { kind: 'function'; name: string; text: string; position: number }
  | { kind: 'symbol'; symbol: SymbolText; text: string; position: number }
  | { kind: 'end'; text: ''; position: number }

const NUMBER = /(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?/y
const IDENTIFIER = /[A-Za-z_][A-Za-z0-9_]*/y
const SYMBOLS = new Set<string>(['+', '-', '*', '/', '%', '^', '(', ')', ','])

function matchAt(pattern: RegExp, text: string, index: number): string | undefined {
  pattern.lastIndex = index
  return pattern.exec(text)?.[0]
}

function identifierToken(text: string, position: number): Token {
  const name = text.toLowerCase()
  const constant = CONSTANTS.get(name)
  if (constant !== undefined) return { kind: 'constant', value: constant, text, position }
  if (FUNCTIONS.has(name)) return { kind: 'function', name, text, position }
  throw new CalculationError(`unknown identifier '${text}'`, position, `known: ${KNOWN_NAMES}`)
}

function tokenize(expression: string): Token[] {
  const tokens: Token[] = []
  let index = 0
  while (index < expression.length) {
    const char = expression[index] as string
    const position = index + 1
    if (/\s/.test(char)) {
      index++
      continue
    }
    if (tokens.length === MAX_TOKENS) {
      throw new CalculationError(`expression has too many tokens (more than ${MAX_TOKENS})`, position)
    }
    const number = matchAt(NUMBER, expression, index)
    const identifier = number === undefined ? matchAt(IDENTIFIER, expression, index) : undefined
    if (number !== undefined) {
      const value = Number(number)
      if (!Number.isFinite(value)) throw new CalculationError(`number '${number}' is too large`, position)
      tokens.push({ kind: 'number', value, text: number, position })
      index += number.length
    } else if (identifier !== undefined) {
      tokens.push(identifierToken(identifier, position))
      index += identifier.length
    } else if (expression.startsWith('**', index)) {
      tokens.push({ kind: 'symbol', symbol: '^', text: '**', position })
      index += 2
    } else if (SYMBOLS.has(char)) {
      tokens.push({ kind: 'symbol', symbol: char as SymbolText, text: char, position })
      index++
    } else {
      throw new CalculationError(`unexpected character '${char}'`, position)
    }
  }
  tokens.push({ kind: 'end', text: '', position: expression.length + 1 })
  return tokens
}

function describe(token: Token): string {
  return token.kind === 'end' ? 'end of expression' : `'${token.text}'`
}

function finite(value: number, what: string, position: number): number {
  if (!Number.isFinite(value)) throw new CalculationError(`${what} is not a finite number`, position)
  return value
}

/**
 * Recursive descent, evaluating as it parses. Lowest to highest precedence:
 * + -, then * / %, then unary + -, then ^ (right-associative, so -2^2 = -4 and 2^-1 = 0.5).
 */
class Parser {
  readonly #tokens: Token[]
  #index = 0
  #depth = 0

  constructor(tokens: Token[]) {
    this.#tokens = tokens
  }

  parse(): number {
    const value = this.#additive()
    const next = this.#peek()
    if (next.kind !== 'end') throw new CalculationError(`unexpected ${describe(next)}`, next.position)
    return value
  }

  #peek(): Token {
    // The end token is last and never consumed, so the index stays in range.
    return this.#tokens[this.#index] as Token
  }

  #takeSymbol(...symbols: SymbolText[]): Token | undefined {
    const token = this.#peek()
    if (token.kind !== 'symbol' || !symbols.includes(token.symbol)) return undefined
    this.#index++
    return token
  }

  #nested(position: number, parse: () => number): number {
    if (++this.#depth > MAX_DEPTH) {
      throw new CalculationError(`expression nests too deeply (more than ${MAX_DEPTH} levels)`, position)
    }
    const value = parse()
    this.#depth--
    return value
  }

  #additive(): number {
    let value = this.#multiplicative()
    for (let op = this.#takeSymbol('+', '-'); op; op = this.#takeSymbol('+', '-')) {
      const right = this.#multiplicative()
      value = finite(op.text === '+' ? value + right : value - right, `result of '${op.text}'`, op.position)
    }
    return value
  }

  #multiplicative(): number {
    let value = this.#unary()
    for (let op = this.#takeSymbol('*', '/', '%'); op; op = this.#takeSymbol('*', '/', '%')) {
      const right = this.#unary()
      if (op.text === '*') {
        value = finite(value * right, "result of '*'", op.position)
        continue
      }
      if (right === 0) throw new CalculationError(op.text === '/' ? 'division by zero' : 'modulo by zero', op.position)
      value = finite(op.text === '/' ? value / right : value % right, `result of '${op.text}'`, op.position)
    }
    return value
  }

  #unary(): number {
    const sign = this.#takeSymbol('+', '-')
    if (!sign) return this.#power()
    const operand = this.#nested(sign.position, () => this.#unary())
    return sign.text === '-' ? -operand : operand
  }

  #power(): number {
    const base = this.#primary()
    const op = this.#takeSymbol('^')
    if (!op) return base
    const exponent = this.#nested(op.position, () => this.#unary())
    return finite(base ** exponent, `result of '${op.text}'`, op.position)
  }

  #primary(): number {
    const token = this.#peek()
    switch (token.kind) {
      case 'number':
      case 'constant':
        this.#index++
        return token.value
      case 'function':
        this.#index++
        return this.#nested(token.position, () => this.#call(token.name, token.text, token.position))
      case 'symbol':
        if (token.symbol === '(') {
          this.#index++
          return this.#nested(token.position, () => this.#group(token.position))
        }
    }
    throw new CalculationError(`expected a number, constant, function or '(' but found ${describe(token)}`, token.position)
  }

  #group(openedAt: number): number {
    const value = this.#additive()
    this.#close(openedAt)
    return value
  }

  #close(openedAt: number): void {
    if (this.#takeSymbol(')')) return
    const next = this.#peek()
    throw new CalculationError(`expected ')' to close the '(' at position ${openedAt} but found ${describe(next)}`, next.position)
  }

  #call(name: string, text: string, position: number): number {
    const spec = FUNCTIONS.get(name) as FunctionSpec
    const open = this.#takeSymbol('(')
    if (!open) throw new CalculationError(`${text} is a function: call it like ${name}(x)`, position)
    const args: number[] = []
    if (!this.#takeSymbol(')')) {
      do args.push(this.#additive())
      while (this.#takeSymbol(','))
      this.#close(open.position)
    }
    if (args.length < spec.minArgs || args.length > spec.maxArgs) {
      const expected = spec.maxArgs === spec.minArgs ? `${spec.minArgs}` : `at least ${spec.minArgs}`
      throw new CalculationError(`wrong number of arguments for ${name}: expected ${expected}, got ${args.length}`, position)
    }
    return finite(spec.apply(args), `result of ${name}`, position)
  }
}

/** Evaluates an arithmetic expression; throws CalculationError with the position on any problem. */
export function evaluate(expression: string): number {
  const result = new Parser(tokenize(expression)).parse()
  return result === 0 ? 0 : result // no -0 in answers
}

export const calculate = defineTool({
  name: 'calculate',
  description:
    'Evaluate an arithmetic expression exactly instead of doing maths in your head. Supports numbers (1.5, 2e3), ' +
    '+ - * / % ^ (power), parentheses, pi, e, and sqrt, abs, round, floor, ceil, min, max, ln (natural), log (base 10), ' +
    'sin, cos, tan (radians). Example: "sqrt(2) * (3 + 4)^2".',
  parameters: Type.Object(
    { expression: Type.String({ minLength: 1, maxLength: MAX_EXPRESSION_LENGTH, description: 'The expression to evaluate' }) },
    { additionalProperties: false },
  ),
  run: ({ expression }) => ({ expression, result: evaluate(expression) }),
})
