/** `data: [DONE]` at the start of an SSE line (a `[DONE]` inside a JSON string has no raw newline before it). */
const DONE_LINE = /[\r\n]data: ?\[DONE\]/
/** Enough of the previous read to find a sentinel split across two reads. */
const TAIL_CHARS = 16

export interface SentinelFetch {
  fetch: typeof fetch
  /** Whether this response's event stream carried `data: [DONE]` so far. */
  sawDone(response: Response): boolean
}

/**
 * A fetch that notes which event streams said `[DONE]`. The SDK ends its iteration quietly
 * both after `[DONE]` and when the body just stops, and keeps the sentinel to itself; a
 * finished stream without a finish_reason is an answer, a stopped one is truncated.
 */
export function createSentinelFetch(inner: typeof fetch = fetch): SentinelFetch {
  const done = new WeakSet<Response>()
  const watch = async (input: Parameters<typeof fetch>[0], init?: Parameters<typeof fetch>[1]): Promise<Response> => {
    const response = await inner(input, init)
    if (!response.body || !response.headers.get('content-type')?.includes('text/event-stream')) return response
    const decoder = new TextDecoder()
    let tail = '\n'
    let seen = false
    const body = response.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(bytes, controller) {
          controller.enqueue(bytes)
          if (seen) return
          const text = tail + decoder.decode(bytes, { stream: true })
          if (DONE_LINE.test(text)) {
            seen = true
            done.add(watched)
          }
          tail = text.slice(-TAIL_CHARS)
        },
      }),
    )
    const watched = new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers })
    return watched
  }
  return { fetch: watch as typeof fetch, sawDone: (response) => done.has(response) }
}
