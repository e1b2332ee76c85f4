import { hostname } from 'node:os'
import { randomUUID } from 'node:crypto'
import Fastify, { type FastifyInstance } from 'fastify'
import type { Config } from './config.ts'
import { loggerOptions } from './logger.ts'
import authPlugin from './plugins/auth.ts'
import sessionsPlugin from './plugins/sessions.ts'
import lifecyclePlugin from './plugins/lifecycle.ts'
import healthRoutes from './routes/health.ts'
import agentRoute from './ws/route.ts'
import { createMemoryBackend } from './store/memory.ts'
import type { Backend } from './store/types.ts'
import type { ModelClient } from './agent/models/types.ts'
import { createModel } from './agent/models/index.ts'
import { createToolRegistry, selectBuiltinTools, type Tool } from './agent/tools/index.ts'

export interface AppOverrides {
  /** Replaces the model chosen from config (tests, embedding). */
  model?: ModelClient
  /** Replaces the in-memory or Redis backend chosen from config. */
  backend?: Backend
  /** Tools beyond the configured built-ins. */
  tools?: Tool[]
  instanceId?: string
}

async function createBackend(config: Config): Promise<Backend> {
  if (!config.REDIS_URL) return createMemoryBackend({ ttlSeconds: config.SESSION_TTL_SECONDS, maxEvents: config.RESUME_BUFFER_EVENTS })
  const { createRedisBackend } = await import('./store/redis/index.ts')
  return createRedisBackend({
    url: config.REDIS_URL,
    ttlSeconds: config.SESSION_TTL_SECONDS,
    maxEvents: config.RESUME_BUFFER_EVENTS,
  })
}

/** Builds the whole service; the server and every test use this same function. */
export async function buildApp(config: Config, overrides: AppOverrides = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: loggerOptions(config.LOG_LEVEL),
    trustProxy: config.TRUST_PROXY,
    genReqId: () => randomUUID(),
  })
  const instanceId = overrides.instanceId ?? `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`
  const model = overrides.model ?? createModel(config, app.log)
  const tools = createToolRegistry([...selectBuiltinTools(config.TOOLS), ...(overrides.tools ?? [])])
  const backend = overrides.backend ?? (await createBackend(config))

  await app.register(authPlugin, { config })
  await app.register(sessionsPlugin, { config, backend, model, tools, instanceId })
  await app.register(lifecyclePlugin, { shutdownGraceMs: config.SHUTDOWN_GRACE_MS })
  await app.register(healthRoutes)
  await app.register(agentRoute, { config })
  return app
}
