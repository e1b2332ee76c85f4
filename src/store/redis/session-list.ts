import type { RedisClient as Redis } from './connections.ts'
import { decodeCursor, encodeCursor } from '../session-list.ts'
import type { SessionPage, SessionSummary } from '../types.ts'
import { metaKey, userSessionsKey } from './keys.ts'

type Meta = [gen: string | null, title: string | null, createdAt: string | null, updatedAt: string | null, runId: string | null]

async function metas(redis: Redis, prefix: string, owner: string, ids: string[]): Promise<Meta[]> {
  // One command each, issued together: each session is in its own hash slot, which a pipeline
  // (one node) or a transaction (one slot) on a cluster cannot span; one Redis gets them in one write.
  return (await Promise.all(ids.map((id) => redis.hmget(metaKey(prefix, owner, id), 'gen', 'title', 'createdAt', 'updatedAt', 'runId')))) as Meta[]
}

/**
 * Forgets the user's listed sessions whose keys expired (the list is the user's own key, in
 * another hash slot than the sessions, so it cannot follow their expiry by itself); how many.
 */
export async function pruneExpired(redis: Redis, prefix: string, owner: string): Promise<number> {
  const listed = userSessionsKey(prefix, owner)
  const ids = await redis.zrange(listed, '0', '-1')
  const gone = (await metas(redis, prefix, owner, ids)).flatMap(([gen], i) => (gen === null ? [ids[i] as string] : []))
  if (gone.length > 0) await redis.zrem(listed, ...gone)
  return gone.length
}

/**
 * The owner's sessions, most recently updated first (ties by id), from the user's list; a
 * page holds `limit`, read in batches so sessions that expired meanwhile are skipped (and
 * forgotten). A user holds at most MAX_SESSIONS_PER_USER, so the list is read whole.
 */
export async function listSessions(redis: Redis, prefix: string, owner: string, limit: number, cursor: string | undefined): Promise<SessionPage> {
  const listed = userSessionsKey(prefix, owner)
  const after = decodeCursor(cursor)
  const flat = await redis.zrevrange(listed, 0, -1, 'WITHSCORES')
  const ranked: Array<{ id: string; score: number }> = []
  // ZREVRANGE orders equal scores by id, descending (bytewise: as JS compares the ASCII ids).
  for (let i = 0; i < flat.length; i += 2) ranked.push({ id: flat[i] as string, score: Number(flat[i + 1]) })
  const candidates = after ? ranked.filter(({ score, id }) => score < after[0] || (score === after[0] && id < after[1])) : ranked
  const sessions: Array<SessionSummary & { score: number }> = []
  const gone: string[] = []
  for (let start = 0; start < candidates.length && sessions.length <= limit; start += limit + 1) {
    const batch = candidates.slice(start, start + limit + 1)
    const found = await metas(redis, prefix, owner, batch.map(({ id }) => id))
    found.forEach(([gen, title, createdAt, updatedAt, runId], i) => {
      const { id, score } = batch[i] as { id: string; score: number }
      if (gen === null) gone.push(id)
      else sessions.push({ id, score, title: title ?? '', createdAt: Number(createdAt), updatedAt: Number(updatedAt), activeRunId: runId })
    })
  }
  if (gone.length > 0) await redis.zrem(listed, ...gone)
  const page = sessions.slice(0, limit)
  const last = page.at(-1)
  return {
    sessions: page.map(({ score: _score, ...summary }) => summary),
    ...(sessions.length > limit && last ? { nextCursor: encodeCursor(last.score, last.id) } : {}),
  }
}
