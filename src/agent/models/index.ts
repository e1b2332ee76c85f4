import type { FastifyBaseLogger } from 'fastify'
import type { Config } from '../../config.ts'
import { createMockModel } from './mock-model.ts'
import { createOpenAIModel, type UpstreamObserver } from './openai-model.ts'
import { resilienceOptions, withResilience } from '../resilience/index.ts'
import type { ModelClient } from './types.ts'

export type { ModelClient, ModelChunk, ModelRequest, OpenAITool } from './types.ts'

/** The configured model; the offline mock is loud about itself so nobody ships it by accident. */
/** `observer` is told every upstream request and retry (metrics). */
export function createModel(config: Config, log: FastifyBaseLogger, observer?: UpstreamObserver): ModelClient {
  if (config.modelProvider === 'mock') {
    log.warn(
      { modelProvider: 'mock', tokenDelayMs: config.MOCK_TOKEN_DELAY_MS },
      'MODEL PROVIDER IS THE OFFLINE MOCK: answers are canned. Set OPENAI_API_KEY (and OPENAI_BASE_URL for a compatible server) for a real model.',
    )
    return createMockModel({ tokenDelayMs: config.MOCK_TOKEN_DELAY_MS })
  }
  log.info({ modelProvider: 'openai', model: config.OPENAI_MODEL, baseURL: config.OPENAI_BASE_URL ?? 'https://api.openai.com/v1' }, 'model provider: openai')
  const openai = createOpenAIModel({
    apiKey: config.OPENAI_API_KEY,
    baseURL: config.OPENAI_BASE_URL,
    model: config.OPENAI_MODEL,
    timeoutMs: config.UPSTREAM_FIRST_TOKEN_TIMEOUT_MS,
    log,
    observer,
  })
  // Retries, watchdogs and the circuit breaker; the mock never fails, so it goes bare.
  const resilience = resilienceOptions(config)
  resilience.retry.onRetry = observer && ((failure) => observer.retry(failure))
  return withResilience(openai, resilience, log)
}
