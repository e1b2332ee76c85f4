import type { PendingCall } from '../../protocol/index.ts'
import type { ActiveRun, SessionRef } from '../types.ts'
import type { Adoption, AdoptedRun, CallState, Claim, RoundSnapshot, StoredAnswer, WaitingRound } from '../waiting-round.ts'
import { LuaScript } from './scripts.ts'

/**
 * (1.1) The round a run waits in, in the session's `round` HASH (keys.ts; its hash slot):
 * `round` is the snapshot, `c:<id>` a call's state and `p:<id>` its pending call exactly as
 * announced. States are written whole by the caller and never re-encoded in Lua (cjson would
 * turn a model's `[]` arguments into `{}`). The hash goes with the run (end_run, scripts.ts).
 */

// Hands the run to another instance under a new fence: { run JSON, run start, lease, round fields }.
const ADOPT = `
local function adopt(instance, lease_ms, fence)
  local meta = redis.call('HMGET', KEYS[1], 'run', 'runStart')
  local run = cjson.decode(meta[1])
  run.instanceId = instance
  local encoded = cjson.encode(run)
  local expires = now_ms() + tonumber(lease_ms)
  redis.call('HSET', KEYS[1], 'runId', fence, 'run', encoded, 'leaseExpiresAt', expires)
  return {encoded, meta[2], expires, redis.call('HGETALL', KEYS[8])}
end
local function lapsed()
  return tonumber(redis.call('HGET', KEYS[1], 'leaseExpiresAt')) <= now_ms()
end
`

/**
 * ARGV: gen, fence, ttl, snapshot JSON, call id, its state JSON, its pending JSON, then (call
 * id, state JSON) of the round's other calls → 1, or 0 when fenced. Recorded calls keep their state.
 */
const addPending = new LuaScript(`
if not holds(ARGV[1], ARGV[2]) then return 0 end
redis.call('HSETNX', KEYS[8], 'round', ARGV[4])
redis.call('HSET', KEYS[8], 'c:' .. ARGV[5], ARGV[6], 'p:' .. ARGV[5], ARGV[7])
for i = 8, #ARGV, 2 do redis.call('HSETNX', KEYS[8], 'c:' .. ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[8], ARGV[3])
return 1
`)

/**
 * ARGV: gen, call id, kind, answer JSON, adopting instance ('' for none), lease ms, new fence →
 * false, or { run JSON[, adoption as ADOPT answers it] }.
 */
const claimPending = new LuaScript(`${ADOPT}
if not is_gen(ARGV[1]) then return false end
local state = redis.call('HGET', KEYS[8], 'c:' .. ARGV[2])
local pending = redis.call('HGET', KEYS[8], 'p:' .. ARGV[2])
if not state or not pending or cjson.decode(state).state ~= 'waiting' or cjson.decode(pending).kind ~= ARGV[3] then return false end
redis.call('HSET', KEYS[8], 'c:' .. ARGV[2], '{"state":"answered","answer":' .. ARGV[4] .. '}')
local run = redis.call('HGET', KEYS[1], 'run')
if ARGV[5] ~= '' and lapsed() then return {run, adopt(ARGV[5], ARGV[6], ARGV[7])} end
return {run}
`)

/** ARGV: gen, fence, instance, lease ms, new fence → the adoption, or false. */
const adoptRun = new LuaScript(`${ADOPT}
if not holds(ARGV[1], ARGV[2]) or redis.call('EXISTS', KEYS[8]) == 0 or not lapsed() then return false end
return adopt(ARGV[3], ARGV[4], ARGV[5])
`)

/** ARGV: gen, fence → 1 when the run's lease lapses now. */
const parkRun = new LuaScript(`
if not holds(ARGV[1], ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'leaseExpiresAt', now_ms())
return 1
`)

/** ARGV: gen, fence → 1 when the round is forgotten. */
const endRound = new LuaScript(`
if not holds(ARGV[1], ARGV[2]) then return 0 end
redis.call('DEL', KEYS[8])
return 1
`)

/** ARGV: gen → the round's fields, or false. */
const readRound = new LuaScript(`
if not is_gen(ARGV[1]) then return false end
return redis.call('HGETALL', KEYS[8])
`)

type Run = (script: LuaScript, ref: SessionRef, args: ReadonlyArray<string | number>) => Promise<unknown>
type Adopted = [run: string, runStart: string, lease: number, fields: string[]]

/** The store's waiting-round steps over its script runner (keys in allKeys order). */
export class RedisWaitingRounds {
  readonly #run: Run
  readonly #ttlMs: number

  constructor(run: Run, ttlMs: number) {
    this.#run = run
    this.#ttlMs = ttlMs
  }

  async add(ref: SessionRef, fence: string, round: WaitingRound, callId: string): Promise<boolean> {
    const { calls, ...snapshot } = round
    const own = calls[callId] as Extract<CallState, { state: 'waiting' }>
    const others = Object.entries(calls).flatMap(([id, state]) => (id === callId || state.state === 'waiting' ? [] : [id, JSON.stringify(state)]))
    const args = [ref.gen, fence, this.#ttlMs, JSON.stringify(snapshot), callId, JSON.stringify({ state: 'waiting' }), JSON.stringify(own.pending), ...others]
    return (await this.#run(addPending, ref, args)) === 1
  }

  async claim(ref: SessionRef, callId: string, answer: StoredAnswer, adopt: Adoption | undefined): Promise<Claim | null> {
    const args = [ref.gen, callId, answer.kind, JSON.stringify(answer), adopt?.instanceId ?? '', adopt?.leaseMs ?? 0, adopt?.fence ?? '']
    const reply = (await this.#run(claimPending, ref, args)) as [run: string, adopted?: Adopted] | null
    if (!reply) return null
    return { runId: (JSON.parse(reply[0]) as ActiveRun).runId, adopted: reply[1] ? adoption(reply[1], adopt as Adoption) : null }
  }

  async adopt(ref: SessionRef, fence: string, adopt: Adoption): Promise<AdoptedRun | null> {
    const reply = (await this.#run(adoptRun, ref, [ref.gen, fence, adopt.instanceId, adopt.leaseMs, adopt.fence])) as Adopted | null
    return reply ? adoption(reply, adopt) : null
  }

  async park(ref: SessionRef, fence: string): Promise<boolean> {
    return (await this.#run(parkRun, ref, [ref.gen, fence])) === 1
  }

  async end(ref: SessionRef, fence: string): Promise<boolean> {
    return (await this.#run(endRound, ref, [ref.gen, fence])) === 1
  }

  async read(ref: SessionRef): Promise<WaitingRound | null> {
    const fields = (await this.#run(readRound, ref, [ref.gen])) as string[] | null
    return fields ? parseRound(fields) : null
  }
}

function adoption([run, runStart, lease, fields]: Adopted, adopt: Adoption): AdoptedRun {
  const active: ActiveRun = { ...(JSON.parse(run) as Omit<ActiveRun, 'fence' | 'startAfterSeq' | 'leaseExpiresAt'>), fence: adopt.fence, startAfterSeq: Number(runStart), leaseExpiresAt: Number(lease) }
  return { active, round: parseRound(fields) as WaitingRound }
}

/** HGETALL's flat [field, value, …] of a round HASH; null when it holds no round. */
function parseRound(fields: string[]): WaitingRound | null {
  const hash = new Map<string, string>()
  for (let i = 0; i < fields.length; i += 2) hash.set(fields[i] as string, fields[i + 1] as string)
  const snapshot = hash.get('round')
  if (snapshot === undefined) return null
  const calls: Record<string, CallState> = {}
  for (const [field, value] of hash) {
    if (!field.startsWith('c:')) continue
    const id = field.slice(2)
    const state = JSON.parse(value) as CallState
    const pending = hash.get(`p:${id}`)
    calls[id] = pending !== undefined && (state.state === 'waiting' || state.state === 'answered') ? { ...state, pending: JSON.parse(pending) as PendingCall } : state
  }
  return { ...(JSON.parse(snapshot) as RoundSnapshot), calls }
}
