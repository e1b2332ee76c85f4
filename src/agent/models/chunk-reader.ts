import type { ChatCompletionChunk } from 'openai/resources/chat/completions'
import { UpstreamError } from '../upstream-error.ts'
import type { ModelChunk } from './types.ts'

/** More tool calls than this in one answer is a broken stream, not a plan. */
export const MAX_TOOL_CALLS_PER_ANSWER = 128

type FinishReason = Extract<ModelChunk, { type: 'finish' }>['reason']

/**
 * Finish reasons as the servers that send them mean them (docs/upstream-servers.md); any
 * other reason still ends the answer, as `stop`.
 */
const FINISH_REASONS = new Map<string, FinishReason | 'failed'>([
  ['stop', 'stop'],
  ['length', 'length'],
  ['tool_calls', 'tool_calls'],
  ['content_filter', 'content_filter'],
  ['function_call', 'tool_calls'], // OpenAI's legacy functions
  ['model_length', 'length'], // Mistral: the model's context window is full
  ['error', 'failed'], // Mistral, OpenRouter: the generation broke off
  ['insufficient_system_resource', 'failed'], // DeepSeek: the request was cut for lack of capacity
])

/** Fields the SDK's types leave out, sent by compatible servers. */
interface LooseDelta {
  content?: string | null
  reasoning_content?: unknown // DeepSeek, vLLM (before 0.10), llama.cpp, LM Studio
  reasoning?: unknown // OpenRouter, Ollama, Groq, vLLM (0.10 and later)
  tool_calls?: Array<{ index?: number; id?: string; function?: { name?: string; arguments?: string } }>
}

interface LooseChunk {
  choices?: Array<{ delta?: LooseDelta; finish_reason?: string | null }>
  usage?: { prompt_tokens?: unknown; completion_tokens?: unknown } | null
  x_groq?: { usage?: LooseChunk['usage'] } // Groq's usage, before it honoured stream_options
}

function nonEmpty(value: unknown): string | undefined {
  return typeof value === 'string' && value ? value : undefined
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff
}

/**
 * Text deltas made whole: a UTF-16 pair split across two chunks (as JSON `\ud83d` then
 * `\ude00`) waits for its second half, so no delta ends in half a character; halves that
 * never pair become U+FFFD.
 */
function createTextJoiner(): { push(text: string): string; flush(): string } {
  let carry = ''
  return {
    push(text) {
      let joined = carry + text
      carry = ''
      if (isHighSurrogate(joined.charCodeAt(joined.length - 1))) {
        carry = joined.slice(-1)
        joined = joined.slice(0, -1)
      }
      return joined.toWellFormed()
    },
    flush() {
      const rest = carry.toWellFormed()
      carry = ''
      return rest
    },
  }
}

export interface ChunkReader {
  /** The model chunks one SDK chunk holds, in order. */
  read(chunk: ChatCompletionChunk): ModelChunk[]
  /** What is still held back when the stream ends. */
  end(): ModelChunk[]
}

/**
 * One request's stream, read the same way whichever server sends it: tool calls grouped by
 * `index`, or by `id` when a server sends none (Gemini), into dense slots; reasoning from
 * either field name; usage from `usage` or Groq's `x_groq`; text without split characters.
 */
export function createChunkReader(): ChunkReader {
  const text = createTextJoiner()
  const reasoning = createTextJoiner()
  const slots = new Map<string, number>()
  let lastKey: string | undefined

  const slotOf = (call: { index?: number; id?: string }): number => {
    const key = Number.isInteger(call.index) ? `index:${call.index}` : call.id ? `id:${call.id}` : (lastKey ?? 'index:0')
    lastKey = key
    let slot = slots.get(key)
    if (slot === undefined) {
      if (slots.size >= MAX_TOOL_CALLS_PER_ANSWER) {
        throw new UpstreamError('malformed', `the model sent more than ${MAX_TOOL_CALLS_PER_ANSWER} tool calls in one answer`)
      }
      slots.set(key, (slot = slots.size))
    }
    return slot
  }

  const flush = (out: ModelChunk[]): ModelChunk[] => {
    const heldReasoning = reasoning.flush()
    if (heldReasoning) out.push({ type: 'reasoning', text: heldReasoning })
    const heldText = text.flush()
    if (heldText) out.push({ type: 'text', text: heldText })
    return out
  }

  return {
    read(sdkChunk) {
      const chunk = sdkChunk as LooseChunk
      const out: ModelChunk[] = []
      const choice = chunk.choices?.[0]
      const delta = choice?.delta
      // One field per server; a server that sends both (vLLM while renaming) sends the same text.
      const thought = nonEmpty(delta?.reasoning_content) ?? nonEmpty(delta?.reasoning)
      const thinking = thought ? reasoning.push(thought) : ''
      if (thinking) out.push({ type: 'reasoning', text: thinking })
      const content = delta?.content ? text.push(delta.content) : ''
      if (content) out.push({ type: 'text', text: content })
      for (const call of delta?.tool_calls ?? []) {
        out.push({
          type: 'tool_call',
          index: slotOf(call),
          ...(call.id ? { id: call.id } : {}),
          ...(call.function?.name ? { name: call.function.name } : {}),
          ...(call.function?.arguments ? { arguments: call.function.arguments } : {}),
        })
      }
      const usage = chunk.usage ?? chunk.x_groq?.usage
      if (typeof usage?.prompt_tokens === 'number' && typeof usage.completion_tokens === 'number') {
        out.push({ type: 'usage', usage: { prompt_tokens: usage.prompt_tokens, completion_tokens: usage.completion_tokens } })
      }
      const reason = choice?.finish_reason
      if (reason) {
        const finish = FINISH_REASONS.get(reason) ?? 'stop'
        if (finish === 'failed') throw new UpstreamError('server', `the model server broke off the answer (finish_reason ${reason})`)
        flush(out).push({ type: 'finish', reason: finish })
      }
      return out
    },
    end: () => flush([]),
  }
}
