import { setTimeout as sleep } from 'node:timers/promises'

/** Polls `condition` until it holds (true) or `timeoutMs` has passed (false). */
export async function until(condition: () => boolean, timeoutMs: number, pollMs = 10): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) return false
    await sleep(pollMs)
  }
  return true
}
