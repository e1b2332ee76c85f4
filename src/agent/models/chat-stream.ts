import OpenAI from 'openai'
import type { ChatCompletionChunk } from 'openai/resources/chat/completions'
import { EventStreamParser, type ServerSentEvent } from './event-stream.ts'

/** What a stream tells beyond its chunks. */
export interface ChatStreamState {
  /** The server said `data: [DONE]`: whatever came before it is the whole answer. */
  done: boolean
}

/** How much of a malformed event a log line shows. */
const EXCERPT_CHARS = 200

/**
 * A chat-completions event stream, one network read at a time: each read's chunks come as
 * one array, parsed synchronously, instead of one promise per chunk through the SDK's
 * iterator (most reads of a fast model hold dozens of chunks). Errors are the SDK's own, so
 * they are classified the same way: an `error` event, or a chunk holding `error`, is an
 * APIError without a status (as `Stream.fromSSEResponse` throws); a chunk that is not a JSON
 * object is a SyntaxError. Ends at `[DONE]` (the body is cancelled) or with the body.
 */
export async function* readChatStream(
  response: Response,
  state: ChatStreamState,
  onMalformed?: (excerpt: string) => void,
): AsyncGenerator<ChatCompletionChunk[], void, undefined> {
  if (!response.body) throw new OpenAI.OpenAIError('the response has no body to stream')
  const decoder = new TextDecoder()
  const parser = new EventStreamParser()
  /** The chunks of a read's events, up to the first that fails: returned, to be thrown after the good ones are yielded. */
  const take = (events: ServerSentEvent[], chunks: ChatCompletionChunk[]): Error | undefined => {
    for (const { event, data } of events) {
      if (data === '[DONE]') {
        state.done = true
        return undefined
      }
      let parsed: unknown
      try {
        parsed = JSON.parse(data)
      } catch {
        parsed = undefined
      }
      if (typeof parsed !== 'object' || parsed === null) {
        onMalformed?.(data.slice(0, EXCERPT_CHARS))
        return new SyntaxError('Error reading response: malformed server-sent event JSON.')
      }
      const payload = parsed as { error?: unknown }
      if (event === 'error') return new OpenAI.APIError(undefined, payload.error ?? payload, undefined, response.headers)
      if (payload.error) return new OpenAI.APIError(undefined, payload.error, undefined, response.headers)
      chunks.push(parsed as ChatCompletionChunk)
    }
    return undefined
  }
  // Leaving the loop early (at [DONE], on an error, or when the caller stops) cancels the body.
  for await (const bytes of response.body) {
    const chunks: ChatCompletionChunk[] = []
    const failure = take(parser.push(decoder.decode(bytes, { stream: true })), chunks)
    if (chunks.length > 0) yield chunks
    if (failure) throw failure
    if (state.done) return
  }
  const chunks: ChatCompletionChunk[] = []
  const failure = take([...parser.push(decoder.decode()), ...parser.end()], chunks)
  if (chunks.length > 0) yield chunks
  if (failure) throw failure
}
