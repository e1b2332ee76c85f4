/** setTimeout's limit. */
const MAX_STEP_MS = 2 ** 30

/**
 * An unref'd timer for a far wall-clock deadline (a token's expiry, a session's) that leaves
 * nothing behind when cleared. Node queues one timer list per distinct duration and deletes an
 * emptied list only for ref'd timers (`unenroll` in lib/internal/timers.js): an unref'd timer
 * of a one-off duration, once cleared, leaves its list queued until that duration has passed,
 * one list per connection for hours. So the wait is taken in power-of-two steps (the largest
 * not beyond the deadline): at most 31 durations are ever in use, the deadline is hit to the
 * millisecond, and a wait of an hour wakes about twenty times, most of them near its end.
 */
export class DeadlineTimer {
  #deadline = 0
  #timer: NodeJS.Timeout | undefined
  readonly #onDeadline: () => void

  constructor(onDeadline: () => void) {
    this.#onDeadline = onDeadline
  }

  /** Fires at `deadlineMs` (epoch ms), replacing any earlier deadline; one in the past fires next. */
  arm(deadlineMs: number): void {
    this.#deadline = deadlineMs
    this.#step()
  }

  clear(): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
  }

  #step(): void {
    clearTimeout(this.#timer)
    const remaining = this.#deadline - Date.now()
    const step = remaining < 1 ? 0 : Math.min(2 ** Math.floor(Math.log2(remaining)), MAX_STEP_MS)
    this.#timer = setTimeout(() => (Date.now() < this.#deadline ? this.#step() : this.#onDeadline()), step)
    this.#timer.unref()
  }
}
