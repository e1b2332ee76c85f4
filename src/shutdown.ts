import type { FastifyInstance } from 'fastify'

export interface ShutdownCause {
  signal?: string
  /** An uncaught exception or unhandled rejection (close-with-grace catches them). */
  err?: Error
}

/** What the process does on SIGTERM/SIGINT or a fatal error: drain (1012, runs finish), then close. */
export function shutdown(app: FastifyInstance): (cause: ShutdownCause) => Promise<void> {
  return async ({ signal, err }) => {
    if (err) app.log.error({ err }, 'shutting down after an error')
    else app.log.info({ signal }, 'shutting down')
    await app.drain()
    await app.close()
  }
}
