/** A connection as the registry sees it: somewhere to deliver a session's frames. */
export interface Subscriber {
  /** Unique across instances: it is also the watcher id in the shared store. */
  readonly id: string
  readonly userId: string
  deliver(frame: string): void
  /** Bytes queued on the socket and not yet sent (backpressure). */
  readonly bufferedAmount: number
}

/** Why a run's AbortController fired; the reason decides the final events. */
export type AbortCause = 'cancel' | 'disconnect' | 'shutdown' | 'deleted'

export class RunAborted extends Error {
  override name = 'RunAborted'
  override readonly cause: AbortCause
  constructor(cause: AbortCause) {
    super(`run aborted: ${cause}`)
    this.cause = cause
  }
}
