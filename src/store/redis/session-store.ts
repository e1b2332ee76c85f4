import { randomUUID } from 'node:crypto'
import type { UnsequencedRunEvent } from '../../protocol/index.ts'
import type {
  ActiveRun,
  BeginRun,
  BeginRunResult,
  ExpiredLease,
  FinishRun,
  Finished,
  HistoryMessage,
  LoggedEvent,
  OpenResult,
  SessionPage,
  SessionRecord,
  SessionRef,
  SessionStore,
  Settles,
  StartedRun,
} from '../types.ts'
import { waitingCalls, type Adoption, type AdoptedRun, type CallState, type Claim, type StoredAnswer, type WaitingRound } from '../waiting-round.ts'
import { listSessions, pruneExpired } from './session-list.ts'
import { RedisWaitingRounds } from './waiting-round.ts'
import type { ClientTool, PendingCall } from '../../protocol/index.ts'
import type { RedisLog, SharedRedis } from './connections.ts'
import { frameTemplate, frameWithSeq } from './frame-template.ts'
import { allKeys, leasesKey, metaKey, sessionKeys, userSessionsKey } from './keys.ts'
import * as scripts from './scripts.ts'
import { checkStore } from './readiness.ts'

/** Idempotency keys remembered per session; older ones are forgotten first (as in memory). */
const REQUEST_IDS_KEPT = 256

export interface RedisSessionStoreOptions {
  commands: SharedRedis
  prefix: string
  ttlSeconds: number
  /** Stream MAXLEN. */
  maxEvents: number
  /** A watcher not refreshed for this long no longer counts: a crashed instance's age out. */
  watcherTtlMs: number
  log: RedisLog
}

/** What the `run` hash field holds: the ActiveRun without its fence (the `runId` field), start seq and lease. */
type StoredRun = Omit<ActiveRun, 'fence' | 'leaseExpiresAt' | 'startAfterSeq'>
type OpenReply = [gen: string, createdAt: string, updatedAt: string, run: string, runStart: string, lease: string, messages: string[], title: string, fence: string]

/**
 * Sessions in Redis: a hash (owner, generation, timestamps, active run, idempotency keys), a
 * list of history messages, a ZSET of watchers and the generation's seq and stream, all
 * expiring together `ttlSeconds` after the last run, resume or read. Every check-then-write
 * is one Lua script on one session's keys (one hash slot), fenced by generation and run id.
 */
export class RedisSessionStore implements SessionStore {
  readonly #commands: SharedRedis
  readonly #prefix: string
  readonly #ttlMs: number
  readonly #maxEvents: number
  readonly #watcherTtlMs: number
  readonly #rounds: RedisWaitingRounds
  #closed = false

  constructor(options: RedisSessionStoreOptions) {
    this.#commands = options.commands
    this.#prefix = options.prefix
    this.#ttlMs = options.ttlSeconds * 1000
    this.#maxEvents = options.maxEvents
    this.#watcherTtlMs = options.watcherTtlMs
    this.#rounds = new RedisWaitingRounds((script, ref, args) => this.#run(script, ref, args), this.#ttlMs)
  }

  get #redis() {
    return this.#commands.client
  }

  #run(script: scripts.LuaScript, ref: SessionRef, args: ReadonlyArray<string | number>): Promise<unknown> {
    return script.run(this.#redis, allKeys(sessionKeys(this.#prefix, ref)), args)
  }

  async get(owner: string, id: string): Promise<SessionRecord | null> {
    const meta = metaKey(this.#prefix, owner, id)
    const [[, fields], [, messages]] = (await this.#redis
      .multi()
      .hmget(meta, 'gen', 'createdAt', 'updatedAt', 'run', 'runStart', 'leaseExpiresAt', 'title', 'runId')
      .lrange(`${meta}:m`, 0, -1)
      .exec()) as [[null, Array<string | null>], [null, string[]]]
    const [gen, createdAt, updatedAt, run, runStart, lease, title, fence] = fields
    if (gen == null || createdAt == null || updatedAt == null) return null
    return record(owner, id, [gen, createdAt, updatedAt, run ?? '', runStart ?? '', lease ?? '', messages, title ?? '', fence ?? ''])
  }

  async open(owner: string, id: string, maxSessions: number): Promise<OpenResult> {
    // The user's count is its own key (its own slot): checked first, then the session opened.
    const listed = userSessionsKey(this.#prefix, owner)
    const admit = () => scripts.admitSession.run(this.#redis, [listed], [this.#ttlMs, maxSessions, id])
    // At the cap: forget listed sessions that expired meanwhile, then ask once more.
    if ((await admit()) !== 1 && ((await pruneExpired(this.#redis, this.#prefix, owner)) === 0 || (await admit()) !== 1)) return { kind: 'too_many' }
    const keys = sessionKeys(this.#prefix, { owner, id, gen: '' })
    const reply = (await scripts.openSession.run(this.#redis, [keys.meta, keys.messages, keys.requests, keys.watchers, keys.round], [this.#ttlMs, owner, randomUUID().slice(0, 8)])) as OpenReply
    return { kind: 'open', session: record(owner, id, reply) }
  }

  async touch(ref: SessionRef): Promise<boolean> {
    return (await this.#run(scripts.touchSession, ref, [this.#ttlMs, ref.gen])) === 1
  }

  async expiresIn(ref: SessionRef): Promise<number | null> {
    const left = Number(await this.#run(scripts.sessionExpiry, ref, [ref.gen]))
    return left < 0 ? null : left
  }

  async delete(ref: SessionRef): Promise<boolean> {
    const deleted = (await this.#run(scripts.deleteSession, ref, [ref.gen])) === 1
    if (deleted) await this.#redis.zrem(userSessionsKey(this.#prefix, ref.owner), ref.id)
    return deleted
  }

  async beginRun(ref: SessionRef, run: BeginRun): Promise<BeginRunResult> {
    const queued = run.queuedEvent ? frameTemplate(run.queuedEvent) : undefined
    const reply = (await this.#run(scripts.beginRun, ref, [
      this.#ttlMs,
      ref.gen,
      queuedRun(run),
      run.instanceId,
      run.leaseMs,
      REQUEST_IDS_KEPT,
      run.onBusy ?? 'reject',
      run.maxQueued ?? 0,
      queued?.head ?? '',
      queued?.tail ?? '',
      this.#maxEvents,
    ])) as [kind: string, ...rest: unknown[]]
    const [kind, first, second, third] = reply as [string, string, string, string]
    switch (kind) {
      case 'gone':
      case 'no_message':
        return { kind }
      case 'duplicate':
        return { kind, runId: first, startAfterSeq: Number(second) }
      case 'busy':
        return { kind, active: activeRun(first, second, third, reply[4] as string) }
      case 'queued':
        return { kind, runId: run.runId, position: Number(first), startAfterSeq: Number(second) }
    }
    return { kind: 'started', ...(await this.#started(ref, reply, run.leaseMs)) }
  }

  /** A run the store made active (begun, or next in line): listed as updated, its lease indexed. */
  async #started(ref: SessionRef, reply: unknown[], leaseMs: number): Promise<StartedRun> {
    const [, start, history, user, runId, requestId, reasoning, clientTools] = reply as [string, string, string[], string, string, string, string, string]
    // Sent together, each on its own: the lease index and the user's list are in other hash slots
    // (no transaction spans slots on a cluster). A crash between leaves a stale entry expiredLeases drops.
    await Promise.all([
      this.#redis.zadd(leasesKey(this.#prefix), Date.now() + leaseMs, leaseMember(ref, runId)),
      this.#redis.zadd(userSessionsKey(this.#prefix, ref.owner), 'XX', Date.now(), ref.id),
    ])
    return {
      runId,
      startAfterSeq: Number(start),
      history: history.map(parseMessage),
      userMessage: parseMessage(user),
      ...(requestId === '' ? {} : { requestId }),
      ...(reasoning === '1' ? { reasoning: true } : {}),
      ...(clientTools ? { clientTools: JSON.parse(clientTools) as ClientTool[] } : {}),
    }
  }

  async activeRun(ref: SessionRef): Promise<ActiveRun | null> {
    const [gen, run, runStart, lease, fence] = await this.#redis.hmget(sessionKeys(this.#prefix, ref).meta, 'gen', 'run', 'runStart', 'leaseExpiresAt', 'runId')
    return gen !== ref.gen || run == null || runStart == null || lease == null || fence == null ? null : activeRun(run, runStart, lease, fence)
  }

  async append(ref: SessionRef, fence: string, event: UnsequencedRunEvent, settles?: Settles): Promise<LoggedEvent | null> {
    const template = frameTemplate(event)
    const settled = settles ? [settles.callId, JSON.stringify(settles.state)] : []
    const seq = Number(await this.#run(scripts.appendEvent, ref, [this.#ttlMs, ref.gen, fence, this.#maxEvents, template.head, template.tail, ...settled]))
    return seq > 0 ? { seq, frame: frameWithSeq(template, seq) } : null
  }

  async renewLease(ref: SessionRef, fence: string, leaseMs: number): Promise<boolean> {
    const expires = Number(await this.#run(scripts.renewLease, ref, [this.#ttlMs, ref.gen, fence, leaseMs]))
    if (expires > 0) await this.#redis.zadd(leasesKey(this.#prefix), 'XX', expires, leaseMember(ref, fence))
    return expires > 0
  }

  async finishRun(ref: SessionRef, finish: FinishRun): Promise<Finished | null> {
    const template = frameTemplate(finish.event)
    const [seq, next] = (await this.#run(scripts.finishRun, ref, [
      this.#ttlMs,
      ref.gen,
      finish.runId,
      this.#maxEvents,
      template.head,
      template.tail,
      finish.ifLeaseExpired ? '1' : '0',
      finish.ifLastSeq ?? '',
      finish.maxMessages,
      finish.instanceId,
      finish.leaseMs,
      REQUEST_IDS_KEPT,
      ...finish.messages.map((message) => JSON.stringify(message)),
    ])) as [number, unknown[] | undefined]
    if (seq <= 0) return null
    await Promise.all([
      this.#redis.zrem(leasesKey(this.#prefix), leaseMember(ref, finish.runId)),
      this.#redis.zadd(userSessionsKey(this.#prefix, ref.owner), 'XX', Date.now(), ref.id),
    ])
    return { event: { seq, frame: frameWithSeq(template, seq) }, next: next ? await this.#started(ref, next, finish.leaseMs) : null }
  }

  async addPending(ref: SessionRef, fence: string, round: WaitingRound, callId: string): Promise<boolean> {
    return this.#rounds.add(ref, fence, round, callId)
  }

  async claimPending(ref: SessionRef, callId: string, answer: StoredAnswer, adopt?: Adoption): Promise<Claim | null> {
    const claim = await this.#rounds.claim(ref, callId, answer, adopt)
    if (claim?.adopted) await this.#leaseMoved(ref, claim.adopted.active)
    return claim
  }

  async callState(ref: SessionRef, callId: string): Promise<CallState | null> {
    return (await this.#rounds.read(ref))?.calls[callId] ?? null
  }

  async waitingRound(ref: SessionRef): Promise<WaitingRound | null> {
    return this.#rounds.read(ref)
  }

  async endRound(ref: SessionRef, fence: string): Promise<boolean> {
    return this.#rounds.end(ref, fence)
  }

  async adoptRun(ref: SessionRef, fence: string, adopt: Adoption): Promise<AdoptedRun | null> {
    const adopted = await this.#rounds.adopt(ref, fence, adopt)
    if (adopted) await this.#leaseMoved(ref, adopted.active, fence)
    return adopted
  }

  async parkRun(ref: SessionRef, fence: string): Promise<boolean> {
    const parked = await this.#rounds.park(ref, fence)
    if (parked) await this.deferLease(ref, fence, Date.now())
    return parked
  }

  async deferLease(ref: SessionRef, fence: string, until: number): Promise<void> {
    await this.#redis.zadd(leasesKey(this.#prefix), 'XX', until, leaseMember(ref, fence))
  }

  /** The lease index follows an adopted run to its new fence. */
  async #leaseMoved(ref: SessionRef, active: ActiveRun, oldFence?: string): Promise<void> {
    const leases = leasesKey(this.#prefix)
    await this.#redis.zadd(leases, active.leaseExpiresAt, leaseMember(ref, active.fence))
    // The old member names the old fence; an answer's claim does not know it, the sweep drops it.
    if (oldFence !== undefined) await this.#redis.zrem(leases, leaseMember(ref, oldFence))
  }

  async listPending(ref: SessionRef): Promise<PendingCall[]> {
    const round = await this.#rounds.read(ref)
    return round ? waitingCalls(round) : []
  }

  async clearQueue(ref: SessionRef): Promise<number> {
    return Number(await this.#run(scripts.clearQueue, ref, [ref.gen]))
  }

  async list(owner: string, limit: number, cursor: string | undefined): Promise<SessionPage> {
    return listSessions(this.#redis, this.#prefix, owner, limit, cursor)
  }

  async releaseRun(ref: SessionRef, runId: string): Promise<boolean> {
    const released = (await this.#run(scripts.releaseRun, ref, [ref.gen, runId])) === 1
    await this.#redis.zrem(leasesKey(this.#prefix), leaseMember(ref, runId))
    return released
  }

  async expiredLeases(limit: number): Promise<ExpiredLease[]> {
    const members = (await scripts.expiredLeases.run(this.#redis, [leasesKey(this.#prefix)], [limit])) as string[]
    const expired: ExpiredLease[] = []
    for (const member of members) {
      const [owner, id, gen, fence] = JSON.parse(member) as [string, string, string, string]
      // Runs that ended (or moved to a new fence) without their entry removed go here.
      if ((await this.activeRun({ owner, id, gen }))?.fence === fence) expired.push({ ref: { owner, id, gen }, fence })
      else await this.#redis.zrem(leasesKey(this.#prefix), member)
    }
    return expired
  }

  async addWatcher(ref: SessionRef, watcherId: string): Promise<void> {
    await this.#run(scripts.upsertWatchers, ref, [ref.gen, this.#watcherTtlMs, this.#ttlMs, watcherId])
  }

  async removeWatcher(ref: SessionRef, watcherId: string): Promise<number> {
    return Number(await this.#run(scripts.removeWatcher, ref, [watcherId]))
  }

  async watcherCount(ref: SessionRef): Promise<number> {
    return Number(await this.#run(scripts.countWatchers, ref, []))
  }

  async refreshWatchers(watched: ReadonlyArray<{ ref: SessionRef; ids: readonly string[] }>): Promise<void> {
    await Promise.all(watched.map(({ ref, ids }) => this.#run(scripts.upsertWatchers, ref, [ref.gen, this.#watcherTtlMs, this.#ttlMs, ...ids])))
  }

  async ping(): Promise<void> {
    await checkStore(this.#redis, this.#prefix)
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await this.#commands.release()
  }
}

/** A run as the scripts take it (beginRun; kept as is in the queue). */
function queuedRun(run: BeginRun): string {
  return JSON.stringify({
    runId: run.runId,
    requestId: run.requestId ?? '',
    input: JSON.stringify(run.input.kind === 'regenerate' ? run.input : { ...run.input, message: JSON.stringify(run.input.message) }),
    reasoning: run.reasoning ? '1' : '',
    clientTools: run.clientTools ? JSON.stringify(run.clientTools) : '',
    maxMessages: run.maxMessages,
    title: run.title ?? '',
  })
}

function leaseMember(ref: SessionRef, fence: string): string {
  return JSON.stringify([ref.owner, ref.id, ref.gen, fence])
}

function parseMessage(message: string): HistoryMessage {
  return JSON.parse(message) as HistoryMessage
}

function record(owner: string, id: string, [gen, createdAt, updatedAt, run, runStart, lease, messages, title, fence]: OpenReply): SessionRecord {
  return {
    owner,
    id,
    gen,
    title,
    messages: messages.map(parseMessage),
    createdAt: Number(createdAt),
    updatedAt: Number(updatedAt),
    active: run && runStart && lease ? activeRun(run, runStart, lease, fence) : null,
  }
}

function activeRun(run: string, runStart: string, leaseExpiresAt: string, fence: string): ActiveRun {
  return { ...(JSON.parse(run) as StoredRun), fence, startAfterSeq: Number(runStart), leaseExpiresAt: Number(leaseExpiresAt) }
}
