/** Counts each user's open connections against `MAX_CONNECTIONS_PER_USER`. */
export interface ConnectionCounter {
  /** Takes a slot for the user; false (and nothing taken) when they already hold the limit. An in-memory count answers at once. */
  acquire(userId: string): boolean | Promise<boolean>
  /** Gives back a slot `acquire` took. */
  release(userId: string): Promise<void>
  close(): Promise<void>
}

/** One instance's count: what a memory backend serves (Redis: redis-connection-counter.ts). */
export function createMemoryConnectionCounter(limit: number): ConnectionCounter {
  const counts = new Map<string, number>()
  return {
    acquire(userId) {
      const held = counts.get(userId) ?? 0
      if (held >= limit) return false
      counts.set(userId, held + 1)
      return true
    },
    async release(userId) {
      const left = (counts.get(userId) ?? 0) - 1
      if (left > 0) counts.set(userId, left)
      else counts.delete(userId)
    },
    async close() {
      counts.clear()
    },
  }
}
