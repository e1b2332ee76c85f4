import type { HistoryMessage } from '../../store/types.ts'
import type { Usage } from '../../protocol/index.ts'

export interface OpenAITool {
  type: 'function'
  function: { name: string; description: string; parameters: Record<string, unknown> }
}

export interface ModelRequest {
  messages: HistoryMessage[]
  tools: OpenAITool[]
  signal: AbortSignal
}

export type ModelChunk =
  /** `deltas`: how many of the model's deltas the text joins (those of one read), 1 when absent. */
  | { type: 'text'; text: string; deltas?: number }
  /** The model thinking aloud (`reasoning_content` or `reasoning` deltas): relayed on request, never part of the answer. */
  | { type: 'reasoning'; text: string }
  /**
   * A fragment of a streamed tool call: id and name come first, arguments arrive in pieces.
   * `index` is a dense slot (0, 1, …) per request, whatever the server numbered it.
   */
  | { type: 'tool_call'; index: number; id?: string; name?: string; arguments?: string }
  | { type: 'usage'; usage: Usage }
  | { type: 'finish'; reason: 'stop' | 'length' | 'tool_calls' | 'content_filter' }

/** One interface for every model: the official SDK against any compatible server, or the offline mock. */
export interface ModelClient {
  readonly name: string
  /**
   * The chunks that arrived together (one upstream read), never an empty array: a read of a
   * fast model holds dozens, and every layer above handles them in one step, not one promise
   * each. Ends normally only after the model said it finished; throws UpstreamError on any failure.
   */
  stream(request: ModelRequest): AsyncIterable<ModelChunk[]>
}
