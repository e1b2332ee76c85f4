import type { SessionRef } from '../types.ts'

/**
 * Where a session lives in Redis. Every key of one session carries the same hash tag
 * `{owner:id}` (the owner percent-encoded, so no `{`, `}` or `:` of its own), so a script
 * touching all of them stays in one slot on a cluster. The log keys name the generation:
 * a session created again after deletion or expiry writes to other keys, which nobody
 * tailing the old ones reads.
 */
export interface SessionKeys {
  /** HASH: owner, gen, createdAt, updatedAt; the active run (runId: its fence, run, runStart, leaseExpiresAt); `r:<request id>`. */
  meta: string
  /** LIST of JSON history messages, oldest first. */
  messages: string
  /** LIST of request ids, oldest first: bounds the `r:` fields of `meta`. */
  requests: string
  /** ZSET watcher id → expiry (ms, Redis clock): connections watching the session anywhere. */
  watchers: string
  /** STRING: the generation's last seq. */
  seq: string
  /** STREAM of frames, entry id `<seq>-0`, field `f`; a deletion adds `<last seq>-1`, field `end`. */
  events: string
  /** LIST of JSON queued runs (on_busy enqueue / interrupt), first in line first. */
  queue: string
  /**
   * (1.1) HASH: the tool round the active run waits in (redis/waiting-round.ts): `round` (its
   * snapshot), `c:<call id>` (each call's state), `p:<call id>` (the pending call as announced).
   */
  round: string
}

function base(prefix: string, owner: string, id: string): string {
  return `${prefix}s:{${encodeURIComponent(owner)}:${id}}`
}

export function metaKey(prefix: string, owner: string, id: string): string {
  return base(prefix, owner, id)
}

export function sessionKeys(prefix: string, ref: SessionRef): SessionKeys {
  const meta = base(prefix, ref.owner, ref.id)
  return {
    meta,
    messages: `${meta}:m`,
    requests: `${meta}:rq`,
    watchers: `${meta}:w`,
    seq: `${meta}:${ref.gen}:seq`,
    events: `${meta}:${ref.gen}:ev`,
    queue: `${meta}:q`,
    round: `${meta}:p`,
  }
}

/** The order every session script receives its KEYS in (see scripts.ts). */
export function allKeys(keys: SessionKeys): string[] {
  return [keys.meta, keys.messages, keys.requests, keys.watchers, keys.seq, keys.events, keys.queue, keys.round]
}

/** ZSET session id → when a run last started or ended (ms): a user's sessions (the list, MAX_SESSIONS_PER_USER). */
export function userSessionsKey(prefix: string, owner: string): string {
  return `${prefix}u:{${encodeURIComponent(owner)}}:sessions`
}

/** ZSET run (JSON of ref and run id) → lease expiry (ms, Redis clock): what the sweepers look at. */
export function leasesKey(prefix: string): string {
  return `${prefix}leases`
}

/** Pub/sub channel of control messages (cancel, orphaned), one per key prefix. */
export function controlChannel(prefix: string): string {
  return `${prefix}control`
}

/** A stream only its own instance reads: an entry added to it interrupts that instance's XREAD. */
export function wakeKey(prefix: string, tailId: string): string {
  return `${prefix}tail:${tailId}:wake`
}
