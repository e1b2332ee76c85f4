import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'

declare module 'fastify' {
  interface FastifyInstance {
    lifecycle: Lifecycle
    /**
     * Graceful drain (SIGTERM): readiness 503 and new upgrades refused at once, runs get
     * the grace to finish, then are cancelled, then every socket closes 1012. Idempotent.
     */
    drain(): Promise<void>
  }
}

export interface Lifecycle {
  draining: boolean
  /** Steps run after the runs have ended (the WebSocket route closes its sockets here). */
  onDrained(step: () => Promise<void> | void): void
}

async function lifecyclePlugin(app: FastifyInstance, options: { shutdownGraceMs: number }) {
  const steps: Array<() => Promise<void> | void> = []
  const lifecycle: Lifecycle = { draining: false, onDrained: (step) => void steps.push(step) }
  let drained: Promise<void> | undefined

  app.decorate('lifecycle', lifecycle)
  app.decorate('drain', function drain() {
    drained ??= (async () => {
      lifecycle.draining = true
      app.log.info({ graceMs: options.shutdownGraceMs, activeRuns: app.sessions.activeRunCount }, 'draining')
      await app.sessions.drain(options.shutdownGraceMs)
      for (const step of steps) await step()
    })()
    return drained
  })
  app.addHook('preClose', () => app.drain())
}

export default fp(lifecyclePlugin, { name: 'lifecycle', fastify: '5.x', dependencies: ['sessions'] })
