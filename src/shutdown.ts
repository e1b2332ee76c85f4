import type { FastifyBaseLogger, FastifyInstance } from 'fastify'

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
    app.log.info({ signal }, 'stopped')
  }
}

/** The signals that start a drain; server.ts handles them here rather than in close-with-grace. */
export const STOP_SIGNALS = ['SIGTERM', 'SIGINT'] as const
export type StopSignal = (typeof STOP_SIGNALS)[number]

/**
 * A repeat within this window is the same stop delivered twice, not a second request: on
 * Ctrl-C under `npm start` the terminal signals node and npm forwards its own copy.
 */
export const DUPLICATE_SIGNAL_MS = 200

/** Exit status of a second Ctrl-C: 128 + SIGINT, as shells report an interrupted command. */
export const INTERRUPTED_EXIT_CODE = 130

export interface StopSignalOptions {
  /** Starts the drain (once). */
  stop: (signal: StopSignal) => void
  /** Whether a shutdown is already under way for another reason (a fatal error, SIGHUP). */
  closing: () => boolean
  exit: (code: number) => void
  log: FastifyBaseLogger
  now?: () => number
}

/**
 * SIGTERM and SIGINT start one drain. While it runs, another SIGTERM (a process manager
 * repeating itself) is logged and ignored, so runs still end with their `complete`; another
 * Ctrl-C is a person who will not wait: exit at once.
 */
export function stopSignalHandler(options: StopSignalOptions): (signal: StopSignal) => void {
  const now = options.now ?? (() => performance.now())
  let firstAt: number | undefined
  return (signal) => {
    const at = now()
    if (firstAt === undefined) {
      firstAt = at
      if (!options.closing()) return options.stop(signal)
    } else if (at - firstAt < DUPLICATE_SIGNAL_MS) return
    if (signal === 'SIGINT') {
      options.log.warn({ signal }, 'second Ctrl-C: exiting without waiting for the drain')
      options.exit(INTERRUPTED_EXIT_CODE)
      return
    }
    options.log.warn({ signal }, 'already shutting down: runs keep their grace (press Ctrl-C twice to exit at once)')
  }
}
