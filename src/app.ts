import { hostname } from 'node:os'
import { randomUUID } from 'node:crypto'
import Fastify, { type FastifyInstance } from 'fastify'
import type { Config } from './config.ts'
import { loggerOptions, RequestLogController } from './logger.ts'
import authPlugin from './plugins/auth.ts'
import sessionsPlugin from './plugins/sessions.ts'
import lifecyclePlugin from './plugins/lifecycle.ts'
import guardsPlugin, { type GuardTuning } from './plugins/guards.ts'
import metricsPlugin from './plugins/metrics.ts'
import mcpPlugin from './plugins/mcp.ts'
import type { McpTuning } from './agent/tools/mcp/index.ts'
import healthRoutes from './routes/health.ts'
import demoRoutes from './routes/demo.ts'
import sessionRoutes from './routes/sessions.ts'
import protocolRoutes from './routes/protocol.ts'
import agentRoute from './ws/route.ts'
import aiSdkRoute from './dialects/ai-sdk/route.ts'
import backendPlugin from './plugins/backend.ts'
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
  /** Guard limits that are not configuration (invalid-frame budget, high-water mark). */
  guards?: Partial<GuardTuning>
  /** MCP connection timings that are not configuration (handshake timeout, reconnect backoff). */
  mcp?: Partial<McpTuning>
  /** Where the logs go instead of stdout (tests read them). */
  logStream?: { write(line: string): void }
}

/** Builds the whole service; the server and every test use this same function. */
export async function buildApp(config: Config, overrides: AppOverrides = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: loggerOptions(config.LOG_LEVEL, overrides.logStream),
    logController: new RequestLogController(),
    trustProxy: config.TRUST_PROXY,
    genReqId: () => randomUUID(),
  })
  const instanceId = overrides.instanceId ?? `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`
  // First: the model, the registry and the socket route report to it.
  await app.register(metricsPlugin, { token: config.METRICS_TOKEN, requireToken: config.isProduction })
  const model = overrides.model ?? createModel(config, app.log, app.metrics.upstreamObserver)
  const tools = createToolRegistry([...selectBuiltinTools(config.TOOLS), ...(overrides.tools ?? [])])
  // Before the sessions plugin, so it closes after them: runs drain with their MCP calls answered.
  await app.register(mcpPlugin, { config, tools, tuning: overrides.mcp })
  await app.register(backendPlugin, { config, instanceId, backend: overrides.backend })
  await app.register(authPlugin, { config })
  await app.register(guardsPlugin, { config, ...(overrides.guards ? { tuning: overrides.guards } : {}) })
  await app.register(sessionsPlugin, { config, model, tools })
  await app.register(lifecyclePlugin, { shutdownGraceMs: config.SHUTDOWN_GRACE_MS })
  await app.register(healthRoutes)
  if (config.demoUi) await app.register(demoRoutes, { config })
  await app.register(sessionRoutes)
  await app.register(protocolRoutes, { config })
  await app.register(agentRoute, { config, admit: app.guards.admit })
  await app.register(aiSdkRoute, { config })
  return app
}
