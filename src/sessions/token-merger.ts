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
 * Callbacks, not an async function: with many sessions, each `await` resumes a suspended
 * frame that has left the CPU's caches since its session's last token.
 */
export class TokenMerger {
  readonly #options: TokenMergerOptions
  #held = ''
  /** The held text waits for the next turn of the loop, or has waited and is due. */
  #scheduled = false
  #due = false
  /** A token is being logged: the next one waits for it. */
  #logging = false
  /** A token the log refused or failed: nothing more is logged, the run must end. */
  #failed: { error: unknown; reported: boolean } | undefined
  /** Woken when nothing is held, due or being logged. */
  #idle: Array<() => void> = []

  constructor(options: TokenMergerOptions) {
    this.#options = options
  }

  /**
   * Holds the delta. Returns nothing to wait for, or, once the held text reached the limit, a
   * promise of its logging. Rejects once a token could not be logged: the run cannot go on
   * without it.
   */
  push(text: string): Promise<void> | undefined {
    if (this.#failed) return this.#report()
    this.#held += text
    if (!this.#scheduled) {
      this.#scheduled = true
      // The rest of this upstream read joins first.
      void nextTurn().then(this.#turned)
    }
    return this.#held.length >= MERGE_LIMIT_CHARS ? this.flushed() : undefined
  }

  /**
   * Resolves when every delta pushed so far is logged. Rejects, once, when one could not be;
   * after that it resolves, so that the run can still log why it ended.
   */
  flushed(): Promise<void> {
    if (this.#scheduled || this.#logging) return new Promise<void>((resolve) => this.#idle.push(resolve)).then(() => this.flushed())
    return this.#failed && !this.#failed.reported ? this.#report() : Promise.resolve()
  }

  #report(): Promise<never> {
    const failed = this.#failed as { error: unknown; reported: boolean }
    failed.reported = true
    return Promise.reject(failed.error)
  }

  readonly #turned = (): void => {
    this.#due = true
    // Once this turn's promise jobs have run: a run that waited for the same turn (the relay
    // budget, src/relay-budget.ts) adds the delta it was holding back first.
    process.nextTick(this.#flush)
  }

  /** Logs the held text once it is due, the token before it is logged and every watcher can take more. */
  readonly #flush = (): void => {
    if (!this.#due || this.#logging) return
    // A backed-up watcher lets more join meanwhile. (Its wait does not fail; if it did, the
    // text could not go on, as when the log fails.)
    if (!this.#failed && !this.#options.writable()) return void this.#options.whenWritable().then(this.#flush, this.#lost)
    const text = this.#held
    this.#held = ''
    this.#due = false
    this.#scheduled = false
    // After a lost token, the text would have a hole: nothing more of it is logged.
    if (this.#failed) return this.#wakeIdle()
    this.#logging = true
    this.#options.log(text).then(this.#logged, this.#lost)
  }

  readonly #logged = (): void => {
    this.#logging = false
    if (this.#scheduled) this.#flush()
    else this.#wakeIdle()
  }

  readonly #lost = (error: unknown): void => {
    this.#failed = { error, reported: false }
    this.#logged()
  }

  #wakeIdle(): void {
    const idle = this.#idle
    this.#idle = []
    for (const wake of idle) wake()
  }
}
