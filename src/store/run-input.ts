import type { HistoryMessage, RunInput } from './types.ts'

export interface AppliedInput {
  /** The conversation before the run's user message. */
  history: HistoryMessage[]
  userMessage: HistoryMessage
  /** The history the session keeps from now on (the user message last). */
  messages: HistoryMessage[]
}

/**
 * What a run's input does to the history (protocol.md §2): a message is appended; regenerate
 * drops everything after the last user message (its answer and tool messages) and answers it
 * again; edit cuts the history before that user message and puts the new one in its place.
 * Null when there is nothing to regenerate, or no user message of that id.
 */
export function applyRunInput(messages: readonly HistoryMessage[], input: RunInput): AppliedInput | null {
  if (input.kind === 'message') return { history: [...messages], userMessage: input.message, messages: [...messages, input.message] }
  if (input.kind === 'regenerate') {
    const last = messages.findLastIndex((message) => message.role === 'user')
    if (last === -1) return null
    const history = messages.slice(0, last)
    const userMessage = messages[last] as HistoryMessage
    return { history, userMessage, messages: [...history, userMessage] }
  }
  const edited = messages.findIndex((message) => message.role === 'user' && message.id === input.messageId)
  if (edited === -1) return null
  const history = messages.slice(0, edited)
  return { history, userMessage: input.message, messages: [...history, input.message] }
}

/** Whether the input names a message that exists (checked when a run is queued). */
export function inputApplies(messages: readonly HistoryMessage[], input: RunInput): boolean {
  return input.kind === 'message' || applyRunInput(messages, input) !== null
}

const TITLE_CODE_POINTS = 80
const WHITESPACE = /\s/

/**
 * A session's title: its first user message, whitespace collapsed, cut to 80 characters (code
 * points, never half a pair). Reads only as far as the title goes: every run's message is
 * offered, and a long prompt was collapsed whole to keep 80 characters of it.
 */
export function titleOf(content: string): string {
  let title = ''
  let length = 0
  let gap = false
  for (const char of content) {
    if (WHITESPACE.test(char)) {
      gap = length > 0
      continue
    }
    if (gap) {
      if (length === TITLE_CODE_POINTS) break
      title += ' '
      length++
      gap = false
    }
    if (length === TITLE_CODE_POINTS) break
    title += char
    length++
  }
  return title
}
