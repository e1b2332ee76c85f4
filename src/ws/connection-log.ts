import { randomUUID } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import { logsAt } from '../logger.ts'

/**
 * A connection's id and logger (both dialects), made when first asked for: at `warn` most
 * connections never log, and a pino child and a UUID per handshake are work and heap every
 * connection would pay. The two lines every connection writes at info go through the
 * instance's logger with the ids, so no child is made (and kept) for them.
 */
export class ConnectionLog {
  readonly #base: FastifyBaseLogger
  readonly #reqId: string
  readonly #userId: string
  readonly #dialect: string | undefined
  #id: string | undefined
  #log: FastifyBaseLogger | undefined

  /** `fields`: the upgrade's request id, the user, and the dialect when not /ws/agent's. */
  constructor(base: FastifyBaseLogger, fields: { reqId: string; userId: string; dialect?: string }) {
    this.#base = base
    this.#reqId = fields.reqId
    this.#userId = fields.userId
    this.#dialect = fields.dialect
  }

  /** Unique across instances (a watcher id in the shared store). */
  get id(): string {
    return (this.#id ??= randomUUID())
  }

  /** The instance's logger with the ids. */
  get log(): FastifyBaseLogger {
    return (this.#log ??= this.#base.child(this.#ids()))
  }

  connected(): void {
    if (logsAt(this.#base, 'info')) this.#base.info(this.#ids(), 'connected')
  }

  disconnected(code: number): void {
    if (logsAt(this.#base, 'info')) this.#base.info({ ...this.#ids(), code }, 'disconnected')
  }

  /** What every line of the connection carries, in this order. */
  #ids(): Record<string, string> {
    const ids: Record<string, string> = { reqId: this.#reqId, connId: this.id, userId: this.#userId }
    if (this.#dialect !== undefined) ids.dialect = this.#dialect
    return ids
  }
}
