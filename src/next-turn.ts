let pending: Promise<void> | undefined

/**
 * Resolves on the next turn of the event loop (after its I/O), like `new Promise(setImmediate)`,
 * but on one immediate for every caller of this turn: each run's text is merged this way, and
 * a thousand runs streaming at once asked for a thousand immediates per turn.
 */
export function nextTurn(): Promise<void> {
  return (pending ??= new Promise((resolve) =>
    setImmediate(() => {
      pending = undefined
      resolve()
    }),
  ))
}
