import type { ControlBus, ControlMessage, Backend } from '../types.ts'
import { MemoryEventLog } from './event-log.ts'
import { MemorySessionStore } from './session-store.ts'

export { MemoryEventLog } from './event-log.ts'
export { MemorySessionStore } from './session-store.ts'

export class MemoryControlBus implements ControlBus {
  readonly #handlers = new Set<(message: ControlMessage) => void>()

  async publish(message: ControlMessage): Promise<void> {
    for (const handler of this.#handlers) handler(message)
  }

  onMessage(handler: (message: ControlMessage) => void): void {
    this.#handlers.add(handler)
  }

  async close(): Promise<void> {
    this.#handlers.clear()
  }
}

/** The default backend: one instance, nothing shared, nothing kept across restarts. */
export function createMemoryBackend(options: { ttlSeconds: number; maxEvents: number }): Backend {
  const events = new MemoryEventLog({ maxEvents: options.maxEvents })
  const sessions = new MemorySessionStore({ ttlSeconds: options.ttlSeconds, log: events })
  const control = new MemoryControlBus()
  return {
    kind: 'memory',
    sessions,
    events,
    control,
    async close() {
      await events.close()
      await sessions.close()
      await control.close()
    },
  }
}
