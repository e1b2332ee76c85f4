import { nextTurn } from '../next-turn.ts'

/** Text held before the run stops pulling from the model (a watcher stays backed up). */
export const MERGE_LIMIT_CHARS = 64 * 1024

export interface TokenMergerOptions {
  /** Logs one `token` event (fenced). */
  log(text: string): Promise<void>
  /** True while every local watcher of the session can take more. */
  writable(): boolean
  whenWritable(): Promise<void>
}

/**
 * A run's text deltas on their way to the log (protocol.md §3, §6). Deltas that are ready
 * together become one `token` event before they are sequenced: those of one upstream read
 * (they arrive within one turn of the event loop), and all that come while a local watcher is
 * backed up. Nothing is lost and the order is kept: each `token` is logged after the one
 * before it, and `flushed()` is awaited before any other event of the run. The run keeps
 * pulling from the model while a token is being logged, up to MERGE_LIMIT_CHARS held.
 */
export class TokenMerger {
  readonly #options: TokenMergerOptions
  #held = ''
  /** Settles when the held text is handed to the log; undefined when nothing is held. Never rejects. */
  #flush: Promise<void> | undefined
  /** The last token logged or being logged. Never rejects. */
  #logged: Promise<void> = Promise.resolve()
  /** A token the log refused or failed: nothing more is logged, the run must end. */
  #failed: { error: unknown; reported: boolean } | undefined

  constructor(options: TokenMergerOptions) {
    this.#options = options
  }

  /**
   * Holds the delta; resolves at once, or once the held text is logged if it reached the
   * limit. Rejects once a token could not be logged: the run cannot go on without it.
   */
  push(text: string): Promise<void> {
    if (this.#failed) return this.#report()
    this.#held += text
    this.#flush ??= this.#flushSoon()
    return this.#held.length >= MERGE_LIMIT_CHARS ? this.flushed() : Promise.resolve()
  }

  /**
   * Resolves when every delta pushed so far is logged. Rejects, once, when one could not be;
   * after that it resolves, so that the run can still log why it ended.
   */
  async flushed(): Promise<void> {
    await (this.#flush ?? this.#logged)
    if (this.#failed && !this.#failed.reported) return this.#report()
  }

  #report(): Promise<never> {
    const failed = this.#failed as { error: unknown; reported: boolean }
    failed.reported = true
    return Promise.reject(failed.error)
  }

  async #flushSoon(): Promise<void> {
    // The rest of this upstream read joins first; a backed-up watcher lets more join.
    await nextTurn()
    while (!this.#options.writable()) await this.#options.whenWritable()
    await this.#logged
    const text = this.#held
    this.#held = ''
    this.#flush = undefined
    // After a lost token, the text would have a hole: nothing more of it is logged.
    if (this.#failed) return
    this.#logged = this.#options.log(text).catch((error: unknown) => void (this.#failed = { error, reported: false }))
    await this.#logged
  }
}
