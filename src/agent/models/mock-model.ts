import type { HistoryMessage } from '../../store/types.ts'
import type { ModelChunk, ModelClient, ModelRequest } from './types.ts'

const ARITHMETIC = /(?:calculate|compute|what is|what's)\s+([-+*/%^().\d\s]*\d[-+*/%^().\d\s]*)/i
/** A question about the clock ("what time is it", "the current time"), not "take your time". */
const TIME = /\b(?:what(?:'s| is)?(?: the)? (?:current |local )?time|(?:current|local) time|time is it|the time (?:in|now)|time now)\b/i

function lastOf(messages: HistoryMessage[], role: HistoryMessage['role']): HistoryMessage | undefined {
  return messages.findLast((message) => message.role === role)
}

function words(text: string): string[] {
  return text.match(/\s*\S+/g) ?? []
}

function countWords(messages: HistoryMessage[]): number {
  return messages.reduce((sum, message) => sum + words(message.content ?? '').length, 0)
}

/** A tool message in words: the built-in tools' results read naturally, anything else verbatim. */
function describeToolResult(content: string): string {
  if (content.startsWith('Error: ')) return `the tool failed: ${content.slice('Error: '.length)}`
  let value: unknown
  try {
    value = JSON.parse(content)
  } catch {
    return `the tool said ${content}`
  }
  const record = typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : {}
  if ('result' in record) return `the result is ${String(record.result)}`
  if ('local' in record) return `it is ${String(record.local)}`
  return `the tool said ${content}`
}

/** What the mock answers: a tool call when the prompt asks for one it has, else text. */
function plan(request: ModelRequest): { toolCall?: { name: string; arguments: string }; text: string } {
  const available = new Set(request.tools.map((tool) => tool.function.name))
  const last = request.messages.at(-1)
  if (last?.role === 'tool') {
    // Tool messages always carry text (run-agent writes the result or the error).
    const results = request.messages.slice(request.messages.findLastIndex((m) => m.role === 'assistant') + 1)
    const said = results.map((m) => describeToolResult(m.content as string)).join('; ')
    return { text: `${said.charAt(0).toUpperCase()}${said.slice(1)}.` }
  }
  const prompt = lastOf(request.messages, 'user')?.content ?? ''
  const arithmetic = ARITHMETIC.exec(prompt)?.[1]?.trim()
  if (arithmetic && available.has('calculate')) {
    return { toolCall: { name: 'calculate', arguments: JSON.stringify({ expression: arithmetic }) }, text: '' }
  }
  if (TIME.test(prompt) && available.has('get_current_time')) {
    return { toolCall: { name: 'get_current_time', arguments: JSON.stringify({ timezone: 'UTC' }) }, text: '' }
  }
  return {
    text: `You said: "${prompt}". I am the offline mock model; set OPENAI_API_KEY to talk to a real one.`,
  }
}

/**
 * The waits of one stream, on one abort listener: timers/promises' `setTimeout` with a signal
 * adds and removes a listener per wait, several times the cost of the wait itself, and the
 * mock waits before every token. An abort rejects the wait under way with the signal's reason.
 */
function pacer(signal: AbortSignal, delayMs: number): { pause(): Promise<void>; dispose(): void } {
  let timer: NodeJS.Timeout | undefined
  let interrupt: ((reason: unknown) => void) | undefined
  const onAbort = () => {
    clearTimeout(timer)
    interrupt?.(signal.reason)
  }
  signal.addEventListener('abort', onAbort, { once: true })
  return {
    pause: () =>
      new Promise<void>((resolve, reject) => {
        if (signal.aborted) return reject(signal.reason)
        interrupt = reject
        timer = setTimeout(resolve, delayMs)
      }),
    dispose: () => {
      clearTimeout(timer)
      signal.removeEventListener('abort', onAbort)
    },
  }
}

/**
 * Offline, deterministic model: the embedded default and the bench upstream. Streams a reply
 * derived from the prompt, one word per `tokenDelayMs`, and calls tools when asked for the
 * time or a calculation, so the whole agent loop works without a network.
 */
export function createMockModel(options: { tokenDelayMs: number }): ModelClient {
  let calls = 0
  return {
    name: 'mock',
    async *stream(request: ModelRequest): AsyncIterable<ModelChunk[]> {
      // Like the openai model, a cancel surfaces as the signal's reason.
      const { pause, dispose } = pacer(request.signal, options.tokenDelayMs)
      try {
        const answer = plan(request)
        await pause()
        if (answer.toolCall) {
          const id = `call_mock_${++calls}`
          yield [
            { type: 'tool_call', index: 0, id, name: answer.toolCall.name, arguments: answer.toolCall.arguments },
            { type: 'finish', reason: 'tool_calls' },
          ]
          return
        }
        const tokens = words(answer.text)
        for (const [index, token] of tokens.entries()) {
          if (index > 0) await pause()
          yield [{ type: 'text', text: token }]
        }
        yield [
          { type: 'usage', usage: { prompt_tokens: countWords(request.messages), completion_tokens: tokens.length } },
          { type: 'finish', reason: 'stop' },
        ]
      } finally {
        dispose()
      }
    },
  }
}
