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
  | { type: 'text'; text: string }
  /** A fragment of a streamed tool call: id and name come first, arguments arrive in pieces. */
  | { type: 'tool_call'; index: number; id?: string; name?: string; arguments?: string }
  | { type: 'usage'; usage: Usage }
  | { type: 'finish'; reason: 'stop' | 'length' | 'tool_calls' | 'content_filter' }

/** One interface for every model: the official SDK against any compatible server, or the offline mock. */
export interface ModelClient {
  readonly name: string
  /** Ends normally only after the model said it finished; throws UpstreamError on any failure. */
  stream(request: ModelRequest): AsyncIterable<ModelChunk>
}
