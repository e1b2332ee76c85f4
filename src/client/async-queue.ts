interface Waiter<T> {
  resolve(result: IteratorResult<T>): void
  reject(error: unknown): void
}

/**
 * A single-consumer async queue: the producer pushes, the consumer awaits. It holds only what
 * has not been read yet, at most `capacity` items; past that the reader gets `overflow()`'s error.
 * A consumer that stops early (break) detaches it: later items are dropped, not kept.
 */
export class AsyncQueue<T> implements AsyncIterable<T> {
  readonly #items: T[] = []
  readonly #capacity: number
  readonly #overflow: () => Error
  #waiter: Waiter<T> | undefined
  #ended = false
  #error: unknown
  #detached = false
  #iterated = false

  constructor(capacity: number, overflow: () => Error) {
    this.#capacity = capacity
    this.#overflow = overflow
  }

  push(item: T): void {
    if (this.#ended || this.#detached) return
    const waiter = this.#waiter
    if (waiter) {
      this.#waiter = undefined
      waiter.resolve({ value: item, done: false })
      return
    }
    if (this.#items.length >= this.#capacity) {
      this.#items.length = 0
      this.end(this.#overflow())
      return
    }
    this.#items.push(item)
  }

  /** No more items; with an error, the reader gets it after the items already queued. */
  end(error?: unknown): void {
    if (this.#ended) return
    this.#ended = true
    this.#error = error
    const waiter = this.#waiter
    this.#waiter = undefined
    if (waiter) this.#settle(waiter)
  }

  #settle(waiter: Waiter<T>): void {
    if (this.#error === undefined) return waiter.resolve({ value: undefined, done: true })
    const error = this.#error
    this.#error = undefined
    waiter.reject(error)
  }

  #next(): Promise<IteratorResult<T>> {
    if (this.#items.length > 0) return Promise.resolve({ value: this.#items.shift() as T, done: false })
    if (this.#detached) return Promise.resolve({ value: undefined, done: true })
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject }
      if (this.#ended) this.#settle(waiter)
      else this.#waiter = waiter
    })
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    if (this.#iterated) throw new TypeError('a run can be iterated once')
    this.#iterated = true
    return {
      next: () => this.#next(),
      return: () => {
        this.#detached = true
        this.#items.length = 0
        this.#waiter?.resolve({ value: undefined, done: true })
        this.#waiter = undefined
        return Promise.resolve({ value: undefined, done: true })
      },
    }
  }
}
