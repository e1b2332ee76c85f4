/**
 * What the in-memory store keeps of a message: a deep-frozen copy, taken once when the message
 * comes in. Reads then share it instead of cloning the whole history at every run start (a
 * structuredClone of fifty messages was the largest single cost of starting a run), and a
 * caller that tried to change a message it was given would throw here, as it could not change
 * the store's copy on Redis either.
 */
export function frozenCopy<T>(value: T): T {
  if (typeof value !== 'object' || value === null || Object.isFrozen(value)) return value
  // Messages are JSON by construction (Redis stores them as such); this round trip is several
  // times cheaper than structuredClone for objects this small.
  return deepFreeze(JSON.parse(JSON.stringify(value)) as T)
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const child of Object.values(value)) deepFreeze(child)
    Object.freeze(value)
  }
  return value
}
