import { nextTurn } from './next-turn.ts'

/** The longest the event loop relays model output in one stretch before letting I/O in. */
export const RELAY_BUDGET_MS = 2

/** When the current stretch of relaying began; cleared on the next turn. */
let stretchStart: number | undefined

const endStretch = (): void => {
  stretchStart = undefined
}

/**
 * Asked before a batch of model output is relayed, by every run: undefined while this
 * stretch of the loop's relaying is under RELAY_BUDGET_MS, else a wait for the next turn.
 * The budget is shared: a hundred runs that each relay one upstream read per turn held a
 * cancel frame (and every other socket) behind all of them, however short each run's part.
 */
export function relayTurn(): Promise<void> | undefined {
  const now = performance.now()
  if (stretchStart === undefined) {
    stretchStart = now
    setImmediate(endStretch)
    return undefined
  }
  return now - stretchStart > RELAY_BUDGET_MS ? nextTurn() : undefined
}
