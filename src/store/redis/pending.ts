import type { RedisClient as Redis } from './connections.ts'
import type { PendingCall } from '../../protocol/index.ts'
import type { PendingEntry, SessionRef } from '../types.ts'
import { sessionKeys } from './keys.ts'
import { LuaScript } from './scripts.ts'

/**
 * (1.1) Calls waiting on the client, in a HASH beside the session (call id → JSON entry, in the
 * session's hash slot); the order they were asked in is their `askedAt`. The session's keys
 * expire together; a finished run's entries are dropped with it (session-store.ts).
 */
export function pendingKey(prefix: string, ref: SessionRef): string {
  return `${sessionKeys(prefix, ref).meta}:p`
}

/** KEYS: meta, pending. ARGV: gen, run id, call id, entry JSON, ttl → 1, or 0 when fenced. */
const addPending = new LuaScript(`
local meta = redis.call('HMGET', KEYS[1], 'gen', 'runId')
if meta[1] ~= ARGV[1] or meta[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
`)

/** KEYS: meta, pending. ARGV: gen, call id, kind → the entry JSON, taken out; or false. */
const claimPending = new LuaScript(`
if redis.call('HGET', KEYS[1], 'gen') ~= ARGV[1] then return false end
local entry = redis.call('HGET', KEYS[2], ARGV[2])
if not entry or cjson.decode(entry).kind ~= ARGV[3] then return false end
redis.call('HDEL', KEYS[2], ARGV[2])
return entry
`)

type Stored = PendingEntry & { askedAt: number }

export async function addPendingCall(redis: Redis, prefix: string, ref: SessionRef, runId: string, call: PendingCall, ttlMs: number): Promise<boolean> {
  const entry: Stored = { ...call, runId, askedAt: Date.now() }
  const keys = [sessionKeys(prefix, ref).meta, pendingKey(prefix, ref)]
  return (await addPending.run(redis, keys, [ref.gen, runId, call.call_id, JSON.stringify(entry), ttlMs])) === 1
}

export async function claimPendingCall(redis: Redis, prefix: string, ref: SessionRef, callId: string, kind: PendingCall['kind']): Promise<PendingEntry | null> {
  const entry = (await claimPending.run(redis, [sessionKeys(prefix, ref).meta, pendingKey(prefix, ref)], [ref.gen, callId, kind])) as string | null
  if (!entry) return null
  const { askedAt: _askedAt, ...pending } = JSON.parse(entry) as Stored
  return pending
}

export async function listPendingCalls(redis: Redis, prefix: string, ref: SessionRef): Promise<PendingCall[]> {
  const [gen, entries] = (await redis.multi().hget(sessionKeys(prefix, ref).meta, 'gen').hvals(pendingKey(prefix, ref)).exec()) as [[null, string | null], [null, string[]]]
  if (gen[1] !== ref.gen) return []
  return entries[1]
    .map((entry) => JSON.parse(entry) as Stored)
    .sort((a, b) => a.askedAt - b.askedAt)
    .map(({ askedAt: _askedAt, runId: _runId, ...call }) => call)
}
