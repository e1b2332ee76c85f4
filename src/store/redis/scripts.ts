import { createHash } from 'node:crypto'
import type { RedisClient } from './connections.ts'

/**
 * A Lua script run with EVALSHA, falling back to EVAL when Redis does not know it (first use,
 * or a restarted Redis). Scripts are atomic: no other client's command runs in between.
 * @see https://redis.io/docs/latest/develop/interact/programmability/eval-intro/
 */
export class LuaScript {
  /** On one Redis and on a cluster: only a cluster's tails need the doorbell. */
  readonly #variants: Record<'standalone' | 'cluster', { lua: string; sha: string }>

  constructor(lua: string) {
    const variant = (doorbell: string) => {
      const source = PRELUDE.replace(DOORBELL, doorbell) + lua
      return { lua: source, sha: createHash('sha1').update(source).digest('hex') }
    }
    this.#variants = { standalone: variant(''), cluster: variant(RING) }
  }

  async run(redis: RedisClient, keys: readonly string[], args: ReadonlyArray<string | number>): Promise<unknown> {
    const { lua, sha } = this.#variants[redis.isCluster ? 'cluster' : 'standalone']
    try {
      return await redis.evalsha(sha, keys.length, ...keys, ...args)
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err
      return redis.eval(lua, keys.length, ...keys, ...args)
    }
  }
}

const DOORBELL = '--[[doorbell]]'
const RING = "redis.pcall('SPUBLISH', KEYS[6], '')"

// Times come from Redis's clock, so leases and watcher expiries mean the same on every instance.
// `append` gives the event the next seq and stores the frame with the seq spliced in: the exact
// bytes every reader replays (see frameTemplate). Integers below 2^53 print without exponent.
// Session scripts get KEYS in keys.ts allKeys order: meta, messages, requests, watchers, seq,
// events, queue, round; `holds` is the fence: the session is still this generation and this
// run (its fence token, `runId` in meta) is its active one.
const PRELUDE = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function touch(ttl_ms)
  for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ttl_ms) end
end
local function touch_if_half_gone(ttl_ms)
  if redis.call('PTTL', KEYS[1]) < tonumber(ttl_ms) / 2 then touch(ttl_ms) end
end
local function is_gen(gen)
  return redis.call('HGET', KEYS[1], 'gen') == gen
end
local function holds(gen, run_id)
  local meta = redis.call('HMGET', KEYS[1], 'gen', 'runId')
  return meta[1] == gen and meta[2] == run_id
end
-- On a Redis Cluster, rings the stream's shard channel (its own name, so its own slot): the tails
-- read on that ring (cluster-tail.ts); XREAD cannot span slots. On one Redis it does nothing
-- (the tails block in XREAD). pcall: Redis < 7 has no SPUBLISH.
local function doorbell()
  --[[doorbell]]
end
local function append(max_len, head, tail, ttl_ms)
  local seq = redis.call('INCR', KEYS[5])
  redis.call('XADD', KEYS[6], 'MAXLEN', max_len, seq .. '-0', 'f', head .. seq .. tail)
  -- The generation's stream is created by its first event: it expires with the session.
  if seq == 1 then redis.call('PEXPIRE', KEYS[6], ttl_ms) end
  doorbell()
  return seq
end
local function push_messages(first, max)
  if #ARGV >= first then redis.call('RPUSH', KEYS[2], unpack(ARGV, first)) end
  redis.call('LTRIM', KEYS[2], -max, -1)
end
local function end_run()
  redis.call('HDEL', KEYS[1], 'runId', 'run', 'runStart', 'leaseExpiresAt')
  redis.call('DEL', KEYS[8])
end
local function remember(request, run_id, start, kept)
  if request == '' then return end
  -- A queued run is remembered again when it starts: listed once, as in memory.
  if redis.call('HSET', KEYS[1], 'r:' .. request, run_id .. ' ' .. start) == 0 then return end
  if redis.call('RPUSH', KEYS[3], request) > kept then
    redis.call('HDEL', KEYS[1], 'r:' .. redis.call('LPOP', KEYS[3]))
  end
end
-- Where a run's input puts its user message: { index of the last kept history message, the
-- user message JSON }, or nil when it names nothing (src/store/run-input.ts, the same rules).
local function place(input, messages)
  if input.kind == 'message' then return #messages, input.message end
  for i = #messages, 1, -1 do
    local message = cjson.decode(messages[i])
    if message.role == 'user' and (input.kind == 'regenerate' or message.id == input.messageId) then
      if input.kind == 'regenerate' then return i - 1, messages[i] end
      return i - 1, input.message
    end
  end
  return nil
end
-- Makes a run active: applies its input to the history, records it; nil when its input names
-- nothing. run: { runId, requestId, input (JSON), reasoning, maxMessages, title }.
local function start_run(run, instance, lease_ms, kept)
  local messages = redis.call('LRANGE', KEYS[2], 0, -1)
  local kept_until, user = place(cjson.decode(run.input), messages)
  if not kept_until then return nil end
  local history = {}
  for i = 1, kept_until do history[i] = messages[i] end
  if kept_until == 0 then redis.call('DEL', KEYS[2]) else redis.call('LTRIM', KEYS[2], 0, kept_until - 1) end
  redis.call('RPUSH', KEYS[2], user)
  redis.call('LTRIM', KEYS[2], -tonumber(run.maxMessages), -1)
  local now = now_ms()
  local start = redis.call('GET', KEYS[5])
  if not start then
    start = '0'
    redis.call('SET', KEYS[5], 0)
  end
  local stored = { runId = run.runId, instanceId = instance }
  if run.requestId ~= '' then stored.requestId = run.requestId end
  redis.call('HSET', KEYS[1], 'runId', run.runId, 'run', cjson.encode(stored), 'runStart', start, 'leaseExpiresAt', now + tonumber(lease_ms), 'updatedAt', now)
  if kept_until == 0 and run.title ~= '' then redis.call('HSET', KEYS[1], 'title', run.title) end
  remember(run.requestId, run.runId, start, kept)
  return {'started', start, history, user, run.runId, run.requestId, run.reasoning, run.clientTools or ''}
end
`

/**
 * KEYS: user sessions. ARGV: ttl, max sessions, session id → 1 (listed), or 0 when the user holds
 * max already. Entries of sessions that expired are pruned by the caller (they live in other slots).
 */
export const admitSession = new LuaScript(`
if not redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
  redis.call('ZADD', KEYS[1], now_ms(), ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
`)

/**
 * KEYS: meta, messages, requests, watchers, round. ARGV: ttl, owner, new gen → { gen, createdAt,
 * updatedAt, run, runStart, lease, messages, title, fence }. A new generation starts with nothing of an old one.
 */
export const openSession = new LuaScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
  local now = now_ms()
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
  redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'gen', ARGV[3], 'createdAt', now, 'updatedAt', now)
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
local meta = redis.call('HMGET', KEYS[1], 'gen', 'createdAt', 'updatedAt', 'run', 'runStart', 'leaseExpiresAt', 'title', 'runId')
return {meta[1], meta[2], meta[3], meta[4] or '', meta[5] or '', meta[6] or '', redis.call('LRANGE', KEYS[2], 0, -1), meta[7] or '', meta[8] or ''}
`)

/** ARGV: ttl, gen → 1 when the session (this generation) exists; its expiry is pushed out. */
export const touchSession = new LuaScript(`
if not is_gen(ARGV[2]) then return 0 end
touch(ARGV[1])
return 1
`)

/** ARGV: gen → ms until the session expires, or -1 when it is gone. */
export const sessionExpiry = new LuaScript(`
if not is_gen(ARGV[1]) then return -1 end
return redis.call('PTTL', KEYS[1])
`)

/**
 * ARGV: ttl, gen, run JSON ({ runId, requestId ('' for none), input (JSON), reasoning ('1' or
 * ''), maxMessages, title }), instance id, lease ms, request ids kept, on busy, max queued, queued
 * frame head, queued frame tail ('' for none), max events → {'started', start seq, history,
 * user message, run id, request id, reasoning} | {'queued', position, start seq} |
 * {'duplicate', run id, start seq} | {'busy', run JSON, run start, lease expiry, fence} | {'gone'} | {'no_message'}.
 */
export const beginRun = new LuaScript(`
if not is_gen(ARGV[2]) then return {'gone'} end
local run = cjson.decode(ARGV[3])
local kept = tonumber(ARGV[6])
if run.requestId ~= '' then
  local seen = redis.call('HGET', KEYS[1], 'r:' .. run.requestId)
  if seen then
    local space = string.find(seen, ' ')
    return {'duplicate', string.sub(seen, 1, space - 1), string.sub(seen, space + 1)}
  end
end
local active = redis.call('HMGET', KEYS[1], 'run', 'runStart', 'leaseExpiresAt', 'runId')
if active[1] then
  local on_busy = ARGV[7]
  if (on_busy ~= 'enqueue' and on_busy ~= 'interrupt') or redis.call('LLEN', KEYS[7]) >= tonumber(ARGV[8]) then
    return {'busy', active[1], active[2], active[3], active[4]}
  end
  if not place(cjson.decode(run.input), redis.call('LRANGE', KEYS[2], 0, -1)) then return {'no_message'} end
  local position = 1
  if on_busy == 'interrupt' then redis.call('LPUSH', KEYS[7], ARGV[3]) else position = redis.call('RPUSH', KEYS[7], ARGV[3]) end
  local start = redis.call('GET', KEYS[5]) or '0'
  remember(run.requestId, run.runId, start, kept)
  if ARGV[9] ~= '' then
    local tail = string.gsub(ARGV[10], '"position":0', '"position":' .. position, 1)
    append(ARGV[11], ARGV[9], tail, ARGV[1])
  end
  touch(ARGV[1])
  return {'queued', position, start}
end
local started = start_run(run, ARGV[4], ARGV[5], kept)
if not started then return {'no_message'} end
-- While the run is active, its lease renewals keep the session from expiring (renewLease), and
-- its finish sets the full TTL again: at the start only a session near its end needs pushing
-- out, and the keys the start may have created (history, seq, request ids) an expiry.
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[5], ARGV[1])
if run.requestId ~= '' then redis.call('PEXPIRE', KEYS[3], ARGV[1]) end
touch_if_half_gone(ARGV[1])
return started
`)

/**
 * ARGV: ttl, gen, fence, max events, frame head, frame tail[, call id, call state JSON: the
 * call of the recorded round the event settles] → the new seq, or 0 when fenced.
 */
export const appendEvent = new LuaScript(`
if not holds(ARGV[2], ARGV[3]) then return 0 end
if ARGV[7] then redis.call('HSET', KEYS[8], 'c:' .. ARGV[7], ARGV[8]) end
return append(ARGV[4], ARGV[5], ARGV[6], ARGV[1])
`)

/** ARGV: ttl, gen, run id, lease ms → the new lease expiry, or 0 when fenced. */
export const renewLease = new LuaScript(`
if not holds(ARGV[2], ARGV[3]) then return 0 end
local expires = now_ms() + tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'leaseExpiresAt', expires)
-- A session with a run does not expire: pushed out again once half its TTL has passed (one
-- PTTL per renewal rather than a PEXPIRE of each of its keys).
touch_if_half_gone(ARGV[1])
return expires
`)

/** What finishRun answers when it appends nothing. */
export const FinishRefused = { notActive: 0, leaseAlive: -1, seqMoved: -2, waiting: -3 } as const

/**
 * Logs the run's final event, stores its messages and ends the run in one step, then starts the
 * first queued run whose input still applies. ARGV: ttl, gen, run id, max events, frame head,
 * frame tail, '1' to require an expired lease, the required last seq ('' for any), max
 * messages, instance id, lease ms, request ids kept, message JSON... → {seq} or {seq, started
 * run as beginRun answers it}, or {FinishRefused code}.
 */
export const finishRun = new LuaScript(`
if not holds(ARGV[2], ARGV[3]) then return {${FinishRefused.notActive}} end
local now = now_ms()
if ARGV[7] == '1' and tonumber(redis.call('HGET', KEYS[1], 'leaseExpiresAt')) > now then return {${FinishRefused.leaseAlive}} end
-- A run waiting in a recorded round is adopted, not interrupted (waiting-round.ts).
if ARGV[7] == '1' and redis.call('EXISTS', KEYS[8]) == 1 then return {${FinishRefused.waiting}} end
if ARGV[8] ~= '' and tonumber(redis.call('GET', KEYS[5]) or '0') ~= tonumber(ARGV[8]) then return {${FinishRefused.seqMoved}} end
local seq = append(ARGV[4], ARGV[5], ARGV[6], ARGV[1])
push_messages(13, tonumber(ARGV[9]))
end_run()
redis.call('HSET', KEYS[1], 'updatedAt', now)
local next = nil
while not next do
  local queued = redis.call('LPOP', KEYS[7])
  if not queued then break end
  next = start_run(cjson.decode(queued), ARGV[10], ARGV[11], tonumber(ARGV[12]))
end
touch(ARGV[1])
if next then return {seq, next} end
return {seq}
`)

/** ARGV: gen → how many queued runs were dropped. */
export const clearQueue = new LuaScript(`
if not is_gen(ARGV[1]) then return 0 end
local dropped = redis.call('LLEN', KEYS[7])
redis.call('DEL', KEYS[7])
return dropped
`)

/** ARGV: gen, run id → 1 when this call freed the session. */
export const releaseRun = new LuaScript(`
if not holds(ARGV[1], ARGV[2]) then return 0 end
end_run()
return 1
`)

/**
 * Forgets the session. Its stream gets an end mark after its last event (id '<last seq>-1')
 * and lives a little longer, so every tail reads the end in order. ARGV: gen → 1 when deleted.
 */
export const deleteSession = new LuaScript(`
if not is_gen(ARGV[1]) then return 0 end
local last = redis.call('GET', KEYS[5]) or '0'
redis.call('XADD', KEYS[6], last .. '-1', 'end', 'deleted')
doorbell()
redis.call('PEXPIRE', KEYS[6], 60000)
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[7], KEYS[8])
return 1
`)

/** ARGV: gen, watcher ttl ms, session ttl ms, watcher id... → 0 when the session is gone. */
export const upsertWatchers = new LuaScript(`
if not is_gen(ARGV[1]) then return 0 end
local expires = now_ms() + tonumber(ARGV[2])
for i = 4, #ARGV do redis.call('ZADD', KEYS[4], expires, ARGV[i]) end
redis.call('PEXPIRE', KEYS[4], ARGV[3])
return 1
`)

/** ARGV: watcher id → how many watchers remain (expired ones dropped). */
export const removeWatcher = new LuaScript(`
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now_ms())
return redis.call('ZCARD', KEYS[4])
`)

/** → how many watchers have not expired. */
export const countWatchers = new LuaScript(`
return redis.call('ZCOUNT', KEYS[4], '(' .. now_ms(), '+inf')
`)

/** KEYS: leases. ARGV: limit → the members whose lease passed. */
export const expiredLeases = new LuaScript(`
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[1]))
`)

/** Event log scripts. KEYS: seq, events. ARGV: after seq → { last seq, gone (0|1), entries after it }. */
export const readEvents = new LuaScript(`
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local after = tonumber(ARGV[1])
local oldest = last + 1
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
if first then oldest = tonumber(string.match(first[1], '^%d+')) end
if after > last or after < oldest - 1 then return {last, 1, {}} end
return {last, 0, redis.call('XRANGE', KEYS[2], (after + 1) .. '-0', last .. '-0')}
`)
