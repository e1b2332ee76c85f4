import OpenAI from 'openai'
import type { FastifyBaseLogger } from 'fastify'
import type { ChatCompletionMessageParam } from 'openai/resources/chat/completions'
import { UpstreamError, type UpstreamFailure } from '../upstream-error.ts'
import { readChatStream, type ChatStreamState } from './chat-stream.ts'
import { createChunkReader } from './chunk-reader.ts'
import { inBandStatus } from './in-band-error.ts'
import type { ModelChunk, ModelClient, ModelRequest } from './types.ts'

export interface OpenAIModelOptions {
  apiKey: string | undefined
  baseURL: string | undefined
  model: string
  /** Connect + headers budget per request; the stream body is watched by the run's watchdogs. */
  timeoutMs: number
  /** Where the SDK's own warnings go (e.g. the raw text of a malformed chunk), instead of the console. */
  log?: FastifyBaseLogger
  /** Told the outcome of every HTTP request (metrics: src/plugins/metrics.ts). */
  observer?: UpstreamObserver
}

export interface UpstreamObserver {
  /** The response status, `network` when none came, `aborted` when the run was cancelled first. */
  request(outcome: number | 'network' | 'aborted'): void
  /** The retry layer asks again after `failure`. */
  retry(failure: UpstreamFailure): void
  /** A reasoning delta came from the model (whether or not a client asked to see it). */
  reasoningDelta?(): void
}

/** Milliseconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date). */
export function retryAfterMs(headers: Headers | undefined, now = Date.now()): number | undefined {
  const ms = Number(headers?.get('retry-after-ms'))
  if (Number.isFinite(ms) && ms >= 0 && headers?.get('retry-after-ms')) return ms
  const value = headers?.get('retry-after')
  if (!value) return undefined
  const seconds = Number(value)
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000)
  const date = Date.parse(value)
  return Number.isNaN(date) ? undefined : Math.max(0, date - now)
}

/** A status the server answered with (HTTP or, `inBand`, inside a 200 stream) as one of our failures. */
function failureOfStatus(status: number, options: { cause: unknown; retryAfterMs?: number | undefined; inBand: boolean }): UpstreamError {
  const where = options.inBand ? `${status} inside the stream` : `${status}`
  const details = { cause: options.cause, ...(options.inBand ? {} : { status }), ...(options.retryAfterMs === undefined ? {} : { retryAfterMs: options.retryAfterMs }) }
  if (status === 401 || status === 403) return new UpstreamError('auth', `the model server rejected our credentials (${where})`, details)
  if (status === 429) return new UpstreamError('rate_limited', 'the model server is rate limiting us', details)
  if (status >= 500 || status === 408 || status === 409) return new UpstreamError('server', `the model server failed (${where})`, details)
  return new UpstreamError('bad_request', `the model server refused the request (${where})`, details)
}

/** Any error the SDK (or the fetch under it) throws, as one of our classified failures. */
export function classifyError(error: unknown): UpstreamError {
  if (error instanceof UpstreamError) return error
  if (error instanceof OpenAI.APIConnectionError) {
    return new UpstreamError('connection', 'could not reach the model server', { cause: error })
  }
  if (error instanceof OpenAI.APIError && error.status !== undefined) {
    return failureOfStatus(error.status, { cause: error, retryAfterMs: retryAfterMs(error.headers), inBand: false })
  }
  if (error instanceof OpenAI.APIError) {
    // An `error` object inside the SSE stream: judged like the HTTP answer it stands for.
    const status = inBandStatus(error.error)
    if (status !== undefined) return failureOfStatus(status, { cause: error, inBand: true })
    return new UpstreamError('server', 'the model server reported an error mid-stream', { cause: error })
  }
  if (error instanceof SyntaxError) return new UpstreamError('malformed', 'the model server sent a malformed chunk', { cause: error })
  return new UpstreamError('connection', 'the connection to the model server broke', { cause: error })
}

/** Appends `chunk`, joined to the text before it when both are text: one read, one text chunk. */
function appendChunk(out: ModelChunk[], chunk: ModelChunk): void {
  const last = out.at(-1)
  if (chunk.type === 'text' && last?.type === 'text') {
    last.text += chunk.text
    last.deltas = (last.deltas ?? 1) + 1
  } else {
    out.push(chunk)
  }
}

/**
 * The official SDK against any OpenAI-compatible server: it builds and sends the request,
 * authenticates, and turns an HTTP failure into its errors; the event stream of the answer is
 * read here, a network read at a time (chat-stream.ts), where the SDK's iterator would spend
 * several promises per token. Retries are ours (one layer, before the first token), so the
 * SDK's own are off; the run's signal closes the HTTP request.
 */
export function createOpenAIModel(options: OpenAIModelOptions): ModelClient {
  const streamLog = options.log?.child({ component: 'openai-stream' })
  const onMalformed = streamLog ? (excerpt: string) => streamLog.warn({ excerpt }, 'the model server sent an event that is not a JSON object') : undefined
  const client = new OpenAI({
    // Local compatible servers (Ollama, llama.cpp) take no key, but the SDK insists on one.
    apiKey: options.apiKey ?? 'no-key',
    ...(options.baseURL ? { baseURL: options.baseURL } : {}),
    maxRetries: 0,
    timeout: options.timeoutMs,
    ...(options.log ? { logger: options.log.child({ component: 'openai-sdk' }) } : {}),
  })
  return {
    name: 'openai',
    async *stream(request: ModelRequest): AsyncIterable<ModelChunk[]> {
      const { signal } = request
      let finished = false
      let responded = false
      try {
        const response = await client.chat.completions.create(
          {
            model: options.model,
            messages: request.messages as ChatCompletionMessageParam[],
            stream: true,
            stream_options: { include_usage: true },
            ...(request.tools.length > 0 ? { tools: request.tools } : {}),
          },
          { signal },
        ).asResponse()
        responded = true
        options.observer?.request(response.status)
        const reader = createChunkReader()
        const state: ChatStreamState = { done: false }
        for await (const chunks of readChatStream(response, state, onMalformed)) {
          const batch: ModelChunk[] = []
          let failure: unknown
          try {
            for (const chunk of chunks) {
              for (const out of reader.read(chunk)) {
                if (out.type === 'finish') finished = true
                else if (out.type === 'reasoning') options.observer?.reasoningDelta?.()
                appendChunk(batch, out)
              }
            }
          } catch (error) {
            failure = error
          }
          // What the read held before a broken chunk is relayed first, as if it had come alone.
          if (batch.length > 0) yield batch
          if (failure !== undefined) throw failure
        }
        const rest = reader.end()
        // `[DONE]` without a finish_reason (some servers never send one): the answer is whole.
        if (!finished && state.done) {
          finished = true
          rest.push({ type: 'finish', reason: 'stop' })
        }
        if (rest.length > 0) yield rest
      } catch (error) {
        if (signal.aborted) {
          if (!responded) options.observer?.request('aborted')
          throw signal.reason
        }
        const failure = classifyError(error)
        if (!responded) options.observer?.request(failure.status ?? 'network')
        throw failure
      }
      if (signal.aborted) throw signal.reason
      if (!finished) throw new UpstreamError('truncated', 'the model stream ended before the answer finished')
    },
  }
}
