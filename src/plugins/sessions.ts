import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type { Backend } from '../store/types.ts'
import type { ModelClient } from '../agent/models/types.ts'
import type { ToolRegistry } from '../agent/tools/registry.ts'
import { SessionRegistry, type RegistryOptions, type RunObserver } from '../sessions/registry.ts'
import type { Config } from '../config.ts'

declare module 'fastify' {
  interface FastifyInstance {
    sessions: SessionRegistry
    backend: Backend
    /** Unique per process: names the owner of runs and leases in a shared store. */
    instanceId: string
  }
}

export interface SessionsPluginOptions {
  config: Config
  backend: Backend
  model: ModelClient
  tools: ToolRegistry
  instanceId: string
  flowControl?: RegistryOptions['flowControl']
  observer?: RunObserver
}

async function sessionsPlugin(app: FastifyInstance, options: SessionsPluginOptions) {
  const { config } = options
  const registry = new SessionRegistry({
    backend: options.backend,
    model: options.model,
    tools: options.tools,
    logger: app.log,
    instanceId: options.instanceId,
    flowControl: options.flowControl,
    observer: options.observer,
    config: {
      systemPrompt: config.SYSTEM_PROMPT,
      historyMaxMessages: config.HISTORY_MAX_MESSAGES,
      resumeGraceMs: config.RESUME_GRACE_MS,
      maxToolRounds: config.MAX_TOOL_ROUNDS,
      leaseMs: config.RUN_LEASE_MS,
      busyRetryAfterMs: 1000,
    },
  })
  app.decorate('sessions', registry)
  app.decorate('backend', options.backend)
  app.decorate('instanceId', options.instanceId)
  // The backend itself is closed by buildApp, after every plugin that uses it.
  app.addHook('onClose', () => registry.drain(0))
}

export default fp(sessionsPlugin, { name: 'sessions', fastify: '5.x' })
