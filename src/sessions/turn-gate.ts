/**
 * Lets its waiters through one per turn of the event loop, in arrival order. Starting a run is
 * the costliest step of the hot path (the request built and sent through the SDK and fetch,
 * hundreds of microseconds), and clients start runs in bursts: a hundred sessions answered
 * together ask again together. Back to back, such a burst held every running stream's tokens
 * behind it for tens of milliseconds (the bench's heavy-load p99: 54 ms before, 17-20 ms
 * after); one per turn, the loop reads and relays the running streams between two starts.
 */
export class TurnGate {
  readonly #waiting: Array<() => void> = []

  /** Resolves on a later turn than the previous waiter's. */
  pass(): Promise<void> {
    return new Promise((resolve) => {
      this.#waiting.push(resolve)
      if (this.#waiting.length === 1) setImmediate(this.#next)
    })
  }

  readonly #next = (): void => {
    this.#waiting.shift()?.()
    // An immediate scheduled while immediates run waits for the next turn.
    if (this.#waiting.length > 0) setImmediate(this.#next)
  }
}
