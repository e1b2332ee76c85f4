import type { ClientFrame } from '../protocol/index.ts'

export interface FrameQueueOptions {
  /** Frames that may wait (being admitted, or admitted and not yet served); one more overflows. */
  maxPending: number
  /** The rate limit: resolves to let the frame in, rejects with the answer (`rate_limited`). */
  admit: (frame: ClientFrame) => Promise<void> | void
  serve: (frame: ClientFrame) => Promise<void>
  /** Answers a frame that was not let in. */
  refuse: (err: unknown, frame: ClientFrame) => void
  onOverflow: (pending: number) => void
}

/**
 * A connection's received frames: rate limited as they arrive, before they take a place in
 * the queue, then served one at a time in the order they were sent (an answer to a refused
 * frame keeps its place in that order). What waits is bounded by `maxPending` (protocol.md §6).
 */
export class FrameQueue {
  readonly #options: FrameQueueOptions
  #admitting = 0
  #queued = 0
  #tail: Promise<void> = Promise.resolve()

  constructor(options: FrameQueueOptions) {
    this.#options = options
  }

  push(frame: ClientFrame): void {
    const waiting = this.#admitting + this.#queued
    if (waiting >= this.#options.maxPending) return this.#options.onOverflow(waiting + 1)
    this.#admitting++
    // Admissions settle in the order they were asked (the limiter answers in order).
    new Promise<void>((resolve) => resolve(this.#options.admit(frame))).then(
      () => {
        this.#admitting--
        this.#enqueue(() => this.#options.serve(frame))
      },
      (err: unknown) => {
        this.#admitting--
        this.#enqueue(async () => this.#options.refuse(err, frame))
      },
    )
  }

  #enqueue(work: () => Promise<void>): void {
    this.#queued++
    // A failure of one frame's work (its answer could not be sent) never stops the frames after it.
    this.#tail = this.#tail
      .then(work)
      .catch(() => {})
      .finally(() => this.#queued--)
  }
}
