import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type { ModelClient } from '../agent/models/types.ts'
import type { ToolRegistry } from '../agent/tools/registry.ts'
import type { Config } from '../config.ts'
import { LeaseSweeper } from '../sessions/lease-sweeper.ts'
import { RunExecutor } from '../sessions/run-executor.ts'
import { SessionService } from '../sessions/session-service.ts'
import { Subscriptions } from '../sessions/subscriptions.ts'

declare module 'fastify' {
  interface FastifyInstance {
    sessions: SessionService
  }
}

export interface SessionsPluginOptions {
  config: Config
  model: ModelClient
  tools: ToolRegistry
}

/** How often a shared store's watchers of running sessions are re-counted (they age out at 3×). */
const WATCHER_REFRESH_MS = 10_000

/**
 * The session core: a subscription hub, the run executor and the thin service the routes
 * call, wired to the backend (src/plugins/backend.ts).
 */
async function sessionsPlugin(app: FastifyInstance, options: SessionsPluginOptions) {
  const { config } = options
  const { backend, instanceId } = app
  const observer = app.metrics.runObserver
  const subscriptions = new Subscriptions({
    backend,
    log: app.log,
    refreshMs: WATCHER_REFRESH_MS,
    onCount: (count) => app.metrics.subscriptionsActive.set(count),
  })
  const executor = new RunExecutor({
    backend,
    model: options.model,
    tools: options.tools,
    logger: app.log,
    subscriptions,
    observer,
    config: {
      instanceId,
      systemPrompt: config.SYSTEM_PROMPT,
      historyMaxMessages: config.HISTORY_MAX_MESSAGES,
      resumeGraceMs: config.RESUME_GRACE_MS,
      maxToolRounds: config.MAX_TOOL_ROUNDS,
      leaseMs: config.RUN_LEASE_MS,
      approvalTools: new Set(config.TOOLS_REQUIRING_APPROVAL),
      approvalTimeoutMs: config.APPROVAL_TIMEOUT_MS,
      clientToolTimeoutMs: config.CLIENT_TOOL_TIMEOUT_MS,
    },
  })
  // Only a shared store can hold runs of other (possibly dead) instances.
  const leases =
    backend.kind === 'memory'
      ? undefined
      : new LeaseSweeper({
          backend,
          intervalMs: Math.min(1000, config.RUN_LEASE_MS / 4),
          historyMaxMessages: config.HISTORY_MAX_MESSAGES,
          runsHere: (ref, runId) => executor.isLocal(ref, runId),
          onInterrupted: () => observer.interrupted(),
          startNext: (ref, next) => executor.startNext(ref, next),
          adopt: (ref, active) => executor.adopt(ref, active),
          instanceId,
          leaseMs: config.RUN_LEASE_MS,
          log: app.log,
        })
  leases?.start()
  const service = new SessionService({
    backend,
    executor,
    subscriptions,
    leases,
    observer,
    log: app.log,
    config: {
      instanceId,
      leaseMs: config.RUN_LEASE_MS,
      historyMaxMessages: config.HISTORY_MAX_MESSAGES,
      maxSessionsPerUser: config.MAX_SESSIONS_PER_USER,
      maxQueuedRuns: config.MAX_QUEUED_RUNS,
      serverToolNames: () => options.tools.names(),
      busyRetryAfterMs: 1000,
    },
  })
  app.decorate('sessions', service)
  app.addHook('onClose', async () => {
    await service.drain(0)
    subscriptions.close()
  })
}

export default fp(sessionsPlugin, { name: 'sessions', fastify: '5.x', dependencies: ['backend', 'metrics'] })
