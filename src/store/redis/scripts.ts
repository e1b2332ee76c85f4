import { createHash } from 'node:crypto'
import type { Redis } from 'ioredis'

/**
 * A Lua script run with EVALSHA, falling back to EVAL when Redis does not know it (first use,
 * or a restarted Redis). Scripts are atomic: no other client's command runs in between.
 * @see https://redis.io/docs/latest/develop/interact/programmability/eval-intro/
 */
export class LuaScript {
  readonly #lua: string
  readonly #sha: string

  constructor(lua: string) {
    this.#lua = PRELUDE + lua
    this.#sha = createHash('sha1').update(this.#lua).digest('hex')
  }

  async run(redis: Redis, keys: readonly string[], args: ReadonlyArray<string | number>): Promise<unknown> {
    try {
      return await redis.evalsha(this.#sha, keys.length, ...keys, ...args)
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err
      return redis.eval(this.#lua, keys.length, ...keys, ...args)
    }
  }
}

// Times come from Redis's clock, so leases and watcher expiries mean the same on every instance.
// `append` gives the event the next seq and stores the frame with the seq spliced in: the exact
// bytes every reader replays (see frameTemplate). Integers below 2^53 print without exponent.
const PRELUDE = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function touch(ttl_ms)
  for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ttl_ms) end
end
local function append(seq_key, events_key, max_len, head, tail)
  local seq = redis.call('INCR', seq_key)
  redis.call('XADD', events_key, 'MAXLEN', max_len, seq .. '-0', 'f', head .. seq .. tail)
  return seq
end
`

// Event log scripts. KEYS: seq, events.

/** ARGV: ttl ms, max events, frame head, frame tail → the new seq. */
export const appendEvent = new LuaScript(`
local seq = append(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[4])
touch(ARGV[1])
return seq
`)

/** ARGV: after seq → { last seq, gone (0|1), entries after it }; same rules as the memory log. */
export const readEvents = new LuaScript(`
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local after = tonumber(ARGV[1])
local oldest = last + 1
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
if first then oldest = tonumber(string.match(first[1], '^%d+')) end
if after > last or after < oldest - 1 then return {last, 1, {}} end
return {last, 0, redis.call('XRANGE', KEYS[2], (after + 1) .. '-0', '+')}
`)

// Session scripts. KEYS (keys.ts allKeys): meta, messages, requests, watchers, seq, events.
// ARGV[1] is always the session TTL in ms: activity pushes the expiry of every key out.

/** ARGV: ttl, owner → { owner, createdAt, updatedAt, messages }. */
export const getOrCreateSession = new LuaScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
  local now = now_ms()
  redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'createdAt', now, 'updatedAt', now)
end
touch(ARGV[1])
local meta = redis.call('HMGET', KEYS[1], 'owner', 'createdAt', 'updatedAt')
return {meta[1], meta[2], meta[3], redis.call('LRANGE', KEYS[2], 0, -1)}
`)

/** ARGV: ttl, max messages, message JSON... → 1, or 0 when the session does not exist. */
export const appendMessages = new LuaScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if #ARGV > 2 then redis.call('RPUSH', KEYS[2], unpack(ARGV, 3)) end
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call('HSET', KEYS[1], 'updatedAt', now_ms())
touch(ARGV[1])
return 1
`)

/**
 * ARGV: ttl, run id, request id ('' for none), lease ms, run JSON, request JSON, request ids kept
 * → {'started'} | {'duplicate', request JSON} | {'busy', run JSON, lease expiry} | {'missing'}.
 */
export const beginRun = new LuaScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local request = ARGV[3]
if request ~= '' then
  local seen = redis.call('HGET', KEYS[1], 'r:' .. request)
  if seen then return {'duplicate', seen} end
end
local active = redis.call('HMGET', KEYS[1], 'run', 'leaseExpiresAt')
if active[1] then return {'busy', active[1], active[2]} end
local now = now_ms()
redis.call('HSET', KEYS[1], 'runId', ARGV[2], 'run', ARGV[5], 'leaseExpiresAt', now + tonumber(ARGV[4]), 'updatedAt', now)
if request ~= '' then
  redis.call('HSET', KEYS[1], 'r:' .. request, ARGV[6])
  if redis.call('RPUSH', KEYS[3], request) > tonumber(ARGV[7]) then
    redis.call('HDEL', KEYS[1], 'r:' .. redis.call('LPOP', KEYS[3]))
  end
end
touch(ARGV[1])
return {'started'}
`)

/** ARGV: ttl, run id, lease ms → 1 when renewed, 0 when the run is not the active one. */
export const renewLease = new LuaScript(`
if redis.call('HGET', KEYS[1], 'runId') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'leaseExpiresAt', now_ms() + tonumber(ARGV[3]))
touch(ARGV[1])
return 1
`)

/** ARGV: ttl, run id → 1 when this call ended the run. */
export const endRun = new LuaScript(`
if redis.call('HGET', KEYS[1], 'runId') ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], 'runId', 'run', 'leaseExpiresAt')
redis.call('HSET', KEYS[1], 'updatedAt', now_ms())
touch(ARGV[1])
return 1
`)

/** What finishRun answers when it appends nothing. */
export const FinishRefused = { notActive: 0, leaseAlive: -1, seqMoved: -2 } as const

/**
 * Appends the run's final event and ends the run in one step. ARGV: ttl, run id, max events,
 * frame head, frame tail, '1' to require an expired lease, the required last seq ('' for any)
 * → the event's seq, or a FinishRefused code.
 */
export const finishRun = new LuaScript(`
if redis.call('HGET', KEYS[1], 'runId') ~= ARGV[2] then return ${FinishRefused.notActive} end
local now = now_ms()
if ARGV[6] == '1' and tonumber(redis.call('HGET', KEYS[1], 'leaseExpiresAt')) > now then return ${FinishRefused.leaseAlive} end
if ARGV[7] ~= '' and tonumber(redis.call('GET', KEYS[5]) or '0') ~= tonumber(ARGV[7]) then return ${FinishRefused.seqMoved} end
local seq = append(KEYS[5], KEYS[6], ARGV[3], ARGV[4], ARGV[5])
redis.call('HDEL', KEYS[1], 'runId', 'run', 'leaseExpiresAt')
redis.call('HSET', KEYS[1], 'updatedAt', now)
touch(ARGV[1])
return seq
`)

/**
 * ARGV: ttl, watcher ttl ms, '1' to only refresh watchers still present ('0' adds them),
 * watcher id... → 0 when the session does not exist.
 */
export const upsertWatchers = new LuaScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local expires = now_ms() + tonumber(ARGV[2])
for i = 4, #ARGV do
  if ARGV[3] == '1' then redis.call('ZADD', KEYS[4], 'XX', expires, ARGV[i]) else redis.call('ZADD', KEYS[4], expires, ARGV[i]) end
end
touch(ARGV[1])
return 1
`)

/** ARGV: watcher id → how many watchers remain (expired ones dropped). */
export const removeWatcher = new LuaScript(`
redis.call('ZREM', KEYS[4], ARGV[1])
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'updatedAt', now) end
return redis.call('ZCARD', KEYS[4])
`)

/** → how many watchers have not expired. */
export const countWatchers = new LuaScript(`
return redis.call('ZCOUNT', KEYS[4], '(' .. now_ms(), '+inf')
`)
