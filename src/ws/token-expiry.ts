/** setTimeout's limit; a later expiry is re-armed when this fires. */
const MAX_TIMER_MS = 2 ** 31 - 1

/** Calls `onExpired` when the connection's token expires; `extend` after an `auth` refresh. */
export class TokenExpiry {
  #expiresAt: number
  #timer: NodeJS.Timeout | undefined
  readonly #onExpired: () => void

  constructor(expiresAtMs: number, onExpired: () => void) {
    this.#expiresAt = expiresAtMs
    this.#onExpired = onExpired
    this.#arm()
  }

  extend(expiresAtMs: number): void {
    this.#expiresAt = expiresAtMs
    this.#arm()
  }

  stop(): void {
    clearTimeout(this.#timer)
  }

  #arm(): void {
    clearTimeout(this.#timer)
    const delay = this.#expiresAt - Date.now()
    this.#timer = setTimeout(() => (Date.now() < this.#expiresAt ? this.#arm() : this.#onExpired()), Math.min(Math.max(delay, 0), MAX_TIMER_MS))
    this.#timer.unref()
  }
}
