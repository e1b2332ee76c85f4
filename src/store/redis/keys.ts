/**
 * Where a session lives in Redis. Every key of one session carries the same `{id}` hash tag,
 * so a Lua script touching all of them stays in one slot on a cluster too.
 */
export interface SessionKeys {
  /** HASH: owner, createdAt, updatedAt; the active run (runId, run, leaseExpiresAt); `r:<request id>`. */
  meta: string
  /** LIST of JSON history messages, oldest first. */
  messages: string
  /** LIST of request ids, oldest first: bounds the `r:` fields of `meta`. */
  requests: string
  /** ZSET watcher id → expiry (ms, Redis clock): connections watching the session anywhere. */
  watchers: string
  /** STRING: the session's last seq. */
  seq: string
  /** STREAM of frames, entry id `<seq>-0`, field `f`. */
  events: string
}

export function sessionKeys(prefix: string, sessionId: string): SessionKeys {
  const base = `${prefix}session:{${sessionId}}`
  return {
    meta: base,
    messages: `${base}:messages`,
    requests: `${base}:requests`,
    watchers: `${base}:watchers`,
    seq: `${base}:seq`,
    events: `${base}:events`,
  }
}

/** The order every session script receives its KEYS in (see scripts.ts). */
export function allKeys(keys: SessionKeys): string[] {
  return [keys.meta, keys.messages, keys.requests, keys.watchers, keys.seq, keys.events]
}

/** Pub/sub channel of control messages (cancel, orphaned), one per key prefix. */
export function controlChannel(prefix: string): string {
  return `${prefix}control`
}

/** A stream only its own instance reads: an entry added to it interrupts that instance's XREAD. */
export function wakeKey(prefix: string, tailId: string): string {
  return `${prefix}tail:${tailId}:wake`
}
