import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type { Config } from '../config.ts'
import { createMemoryBackend } from '../store/memory/index.ts'
import type { Backend } from '../store/types.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** Sessions, event logs and control messages: in memory, or shared through Redis. */
    backend: Backend
    /** Unique per process: names the owner of runs and leases in a shared store. */
    instanceId: string
  }
}

export interface BackendPluginOptions {
  config: Config
  instanceId: string
  /** Replaces the backend chosen from config (tests, embedding); closed with the app all the same. */
  backend?: Backend | undefined
}

async function createBackend(config: Config, app: FastifyInstance): Promise<Backend> {
  if (!config.REDIS_URL) return createMemoryBackend({ ttlSeconds: config.SESSION_TTL_SECONDS, maxEvents: config.RESUME_BUFFER_EVENTS })
  // Loaded only when Redis is in use.
  const { createRedisBackend } = await import('../store/redis/index.ts')
  return createRedisBackend({
    url: config.REDIS_URL,
    cluster: config.redisCluster,
    keyPrefix: config.REDIS_KEY_PREFIX,
    ttlSeconds: config.SESSION_TTL_SECONDS,
    maxEvents: config.RESUME_BUFFER_EVENTS,
    logger: app.log,
  })
}

/** The store behind the session core, closed once, after every plugin that uses it. */
async function backendPlugin(app: FastifyInstance, options: BackendPluginOptions) {
  const backend = options.backend ?? (await createBackend(options.config, app))
  app.decorate('backend', backend)
  app.decorate('instanceId', options.instanceId)
  // onClose hooks run last-added first: added before the plugins that use it, this runs after them.
  app.addHook('onClose', () => backend.close())
}

export default fp(backendPlugin, { name: 'backend', fastify: '5.x' })
