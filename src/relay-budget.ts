import { nextTurn } from './next-turn.ts'

/** The longest the event loop relays model output in one stretch before letting I/O in. */
export const RELAY_BUDGET_MS = 2

/**
 * A budget for the loop's stretches of relaying, asked before each batch of model output is
 * relayed, by every run: undefined while the stretch is under `budgetMs`, else a wait for the
 * next turn, which starts a new stretch. The budget is shared: a hundred runs that each relay
 * one upstream read per turn held a cancel frame (and every other socket) behind all of them,
 * however short each run's part. `now` is injectable so that tests need no real time.
 */
export function relayBudget(budgetMs: number, now: () => number = () => performance.now()): () => Promise<void> | undefined {
  /** When the current stretch began; cleared on the next turn. */
  let stretchStart: number | undefined
  const endStretch = (): void => {
    stretchStart = undefined
  }
  return () => {
    const at = now()
    if (stretchStart === undefined) {
      stretchStart = at
      setImmediate(endStretch)
      return undefined
    }
    return at - stretchStart > budgetMs ? nextTurn() : undefined
  }
}

/** The process's one budget: every run asks it before relaying a batch. */
export const relayTurn = relayBudget(RELAY_BUDGET_MS)
