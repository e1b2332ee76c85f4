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
 * object is a SyntaxError. Ends at `[DONE]` (the rest of the body drained, see drainRest) or
 * with the body.
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
  const reader = response.body.getReader()
  /** The body is read to its end, or handed to drainRest(): nothing to cancel. */
  let settled = false
  try {
    for (;;) {
      const read = await reader.read()
      if (read.done) break
      const chunks: ChatCompletionChunk[] = []
      const failure = take(parser.push(decoder.decode(read.value, { stream: true })), chunks)
      if (chunks.length > 0) yield chunks
      if (failure) throw failure
      if (state.done) {
        settled = true
        drainRest(reader)
        return
      }
    }
    settled = true
  } finally {
    // Leaving early (an error, or the caller stopped) cancels the body, closing the request.
    if (!settled) void reader.cancel().catch(() => {})
  }
  const chunks: ChatCompletionChunk[] = []
  const failure = take([...parser.push(decoder.decode()), ...parser.end()], chunks)
  if (chunks.length > 0) yield chunks
  if (failure) throw failure
}

/** How long the rest of a body after `[DONE]` may take before the connection is cut instead. */
const DRAIN_LIMIT_MS = 1000

/**
 * After `[DONE]` the answer is whole, but the body has not always ended: a server may flush the
 * end of its chunked encoding apart. Cancelling it there would tear the connection down, and the
 * next request would pay a new TCP (and TLS) handshake; so the rest is read and dropped, and the
 * connection goes back to the pool. One that does not end within DRAIN_LIMIT_MS is cancelled.
 */
function drainRest(reader: ReadableStreamDefaultReader<Uint8Array>): void {
  const limit = setTimeout(() => void reader.cancel().catch(() => {}), DRAIN_LIMIT_MS)
  limit.unref()
  void (async () => {
    while (!(await reader.read()).done);
  })()
    .catch(() => {})
    .finally(() => clearTimeout(limit))
}
