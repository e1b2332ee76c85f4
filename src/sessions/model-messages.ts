import type { HistoryMessage } from '../store/types.ts'

/** What a run sends the model first: the system prompt, the history it answers, its user message. */
export function modelMessages(systemPrompt: string, history: HistoryMessage[], userMessage: HistoryMessage): HistoryMessage[] {
  return [{ role: 'system' as const, content: systemPrompt }, ...withoutOrphanedToolResults(history), userMessage].map(forModel)
}

/** What the model is sent of a history message: our ids stay here. */
function forModel({ id: _id, run_id: _runId, ...message }: HistoryMessage): HistoryMessage {
  return message
}

/**
 * History trimmed from the front may start with tool results whose assistant tool_calls were
 * dropped; OpenAI refuses such a request (400), so they go too.
 */
function withoutOrphanedToolResults(messages: HistoryMessage[]): HistoryMessage[] {
  const first = messages.findIndex((message) => message.role !== 'tool')
  return first === -1 ? [] : messages.slice(first)
}
