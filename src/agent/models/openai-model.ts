import OpenAI from 'openai'
import type { FastifyBaseLogger } from 'fastify'
import type { ChatCompletionMessageParam } from 'openai/resources/chat/completions'
import { UpstreamError, type UpstreamFailure } from '../upstream-error.ts'
import { createChunkReader } from './chunk-reader.ts'
import { createSentinelFetch } from './done-sentinel.ts'
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

/**
 * The official SDK against any OpenAI-compatible server. Retries are ours (one layer, before
 * the first token), so the SDK's own are off; the run's signal closes the HTTP request.
 */
export function createOpenAIModel(options: OpenAIModelOptions): ModelClient {
  const sentinel = createSentinelFetch()
  const client = new OpenAI({
    fetch: sentinel.fetch,
    // Local compatible servers (Ollama, llama.cpp) take no key, but the SDK insists on one.
    apiKey: options.apiKey ?? 'no-key',
    ...(options.baseURL ? { baseURL: options.baseURL } : {}),
    maxRetries: 0,
    timeout: options.timeoutMs,
    ...(options.log ? { logger: options.log.child({ component: 'openai-sdk' }) } : {}),
  })
  return {
    name: 'openai',
    async *stream(request: ModelRequest): AsyncIterable<ModelChunk> {
      const { signal } = request
      let finished = false
      let responded = false
      try {
        const { data: stream, response } = await client.chat.completions.create(
          {
            model: options.model,
            messages: request.messages as ChatCompletionMessageParam[],
            stream: true,
            stream_options: { include_usage: true },
            ...(request.tools.length > 0 ? { tools: request.tools } : {}),
          },
          { signal },
        ).withResponse()
        responded = true
        options.observer?.request(response.status)
        const reader = createChunkReader()
        for await (const chunk of stream) {
          for (const out of reader.read(chunk)) {
            if (out.type === 'finish') finished = true
            else if (out.type === 'reasoning') options.observer?.reasoningDelta?.()
            yield out
          }
        }
        yield* reader.end()
        // `[DONE]` without a finish_reason (some servers never send one): the answer is whole.
        if (!finished && sentinel.sawDone(response)) {
          finished = true
          yield { type: 'finish', reason: 'stop' }
        }
      } catch (error) {
        if (signal.aborted) {
          if (!responded) options.observer?.request('aborted')
          throw signal.reason
        }
        const failure = classifyError(error)
        if (!responded) options.observer?.request(failure.status ?? 'network')
        throw failure
      }
      // The SDK returns quietly both on abort and when the body ends without [DONE].
      if (signal.aborted) throw signal.reason
      if (!finished) throw new UpstreamError('truncated', 'the model stream ended before the answer finished')
    },
  }
}
