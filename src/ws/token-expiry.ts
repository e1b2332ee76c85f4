import { DeadlineTimer } from '../deadline-timer.ts'

/** Calls `onExpired` when the connection's token expires; `extend` after an `auth` refresh. */
export class TokenExpiry {
  readonly #timer: DeadlineTimer

  constructor(expiresAtMs: number, onExpired: () => void) {
    this.#timer = new DeadlineTimer(onExpired)
    this.#timer.arm(expiresAtMs)
  }

  extend(expiresAtMs: number): void {
    this.#timer.arm(expiresAtMs)
  }

  stop(): void {
    this.#timer.clear()
  }
}
