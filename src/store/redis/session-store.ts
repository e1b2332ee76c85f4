import type {
  ActiveRun,
  BeginRun,
  BeginRunResult,
  FinishRun,
  HistoryMessage,
  LoggedEvent,
  SessionRecord,
  SessionStore,
} from '../types.ts'
import type { RedisLog, SharedRedis } from './connections.ts'
import { frameTemplate, frameWithSeq } from './frame-template.ts'
import { allKeys, sessionKeys, type SessionKeys } from './keys.ts'
import * as scripts from './scripts.ts'

/** Idempotency keys remembered per session; older ones are forgotten first (as in memory). */
const REQUEST_IDS_KEPT = 256

export interface RedisSessionStoreOptions {
  commands: SharedRedis
  prefix: string
  ttlSeconds: number
  /** Stream MAXLEN, for the final event finishRun appends. */
  maxEvents: number
  /** A watcher not refreshed for this long no longer counts: a crashed instance's age out. */
  watcherTtlMs: number
  log: RedisLog
}

/** What the run hash field holds: the ActiveRun without its lease. */
type StoredRun = Omit<ActiveRun, 'leaseExpiresAt'>
type SessionReply = [owner: string, createdAt: string, updatedAt: string, messages: string[]]

/**
 * Sessions in Redis: a hash (owner, timestamps, active run, idempotency keys), a list of
 * history messages and a ZSET of watchers, all expiring together `ttlSeconds` after the last
 * activity. Every check-then-write is one Lua script, so instances never race each other.
 */
export class RedisSessionStore implements SessionStore {
  readonly #commands: SharedRedis
  readonly #prefix: string
  readonly #ttlMs: number
  readonly #maxEvents: number
  readonly #watcherTtlMs: number
  readonly #log: RedisLog
  /** This instance's watchers, refreshed in Redis while they live. */
  readonly #watching = new Map<string, Set<string>>()
  readonly #refresher: NodeJS.Timeout
  #closed = false

  constructor(options: RedisSessionStoreOptions) {
    this.#commands = options.commands
    this.#prefix = options.prefix
    this.#ttlMs = options.ttlSeconds * 1000
    this.#maxEvents = options.maxEvents
    this.#watcherTtlMs = options.watcherTtlMs
    this.#log = options.log
    this.#refresher = setInterval(() => void this.refreshWatchers(), this.#watcherTtlMs / 3)
    this.#refresher.unref()
  }

  #keys(sessionId: string): SessionKeys {
    return sessionKeys(this.#prefix, sessionId)
  }

  #run(script: scripts.LuaScript, sessionId: string, args: ReadonlyArray<string | number>): Promise<unknown> {
    return script.run(this.#commands.client, allKeys(this.#keys(sessionId)), args)
  }

  async get(sessionId: string): Promise<SessionRecord | null> {
    const keys = this.#keys(sessionId)
    const [[, meta], [, messages]] = (await this.#commands.client
      .multi()
      .hmget(keys.meta, 'owner', 'createdAt', 'updatedAt')
      .lrange(keys.messages, 0, -1)
      .exec()) as [[null, Array<string | null>], [null, string[]]]
    const [owner, createdAt, updatedAt] = meta
    if (owner == null || createdAt == null || updatedAt == null) return null
    return record(sessionId, [owner, createdAt, updatedAt, messages])
  }

  async getOrCreate(sessionId: string, owner: string): Promise<SessionRecord> {
    return record(sessionId, (await this.#run(scripts.getOrCreateSession, sessionId, [this.#ttlMs, owner])) as SessionReply)
  }

  async appendMessages(sessionId: string, messages: HistoryMessage[], maxMessages: number): Promise<void> {
    await this.#run(scripts.appendMessages, sessionId, [this.#ttlMs, maxMessages, ...messages.map((message) => JSON.stringify(message))])
  }

  async delete(sessionId: string): Promise<boolean> {
    const keys = allKeys(this.#keys(sessionId))
    const [[, existed]] = (await this.#commands.client
      .multi()
      .del(keys[0] as string)
      .del(...keys.slice(1))
      .exec()) as [[null, number], [null, number]]
    return existed === 1
  }

  async beginRun(sessionId: string, run: BeginRun): Promise<BeginRunResult> {
    const stored: StoredRun = {
      runId: run.runId,
      instanceId: run.instanceId,
      startAfterSeq: run.startAfterSeq,
      ...(run.requestId === undefined ? {} : { requestId: run.requestId }),
    }
    const reply = (await this.#run(scripts.beginRun, sessionId, [
      this.#ttlMs,
      run.runId,
      run.requestId ?? '',
      run.leaseMs,
      JSON.stringify(stored),
      JSON.stringify({ runId: run.runId, startAfterSeq: run.startAfterSeq }),
      REQUEST_IDS_KEPT,
    ])) as [kind: string, ...rest: string[]]
    const [kind, first = '', second = ''] = reply
    if (kind === 'missing') throw new Error(`session ${sessionId} does not exist`)
    if (kind === 'duplicate') return { kind, ...(JSON.parse(first) as { runId: string; startAfterSeq: number }) }
    if (kind === 'busy') return { kind, active: activeRun(first, second) }
    return { kind: 'started' }
  }

  async activeRun(sessionId: string): Promise<ActiveRun | null> {
    const [run, lease] = await this.#commands.client.hmget(this.#keys(sessionId).meta, 'run', 'leaseExpiresAt')
    return run == null || lease == null ? null : activeRun(run, lease)
  }

  async renewLease(sessionId: string, runId: string, leaseMs: number): Promise<boolean> {
    return (await this.#run(scripts.renewLease, sessionId, [this.#ttlMs, runId, leaseMs])) === 1
  }

  async endRun(sessionId: string, runId: string): Promise<boolean> {
    return (await this.#run(scripts.endRun, sessionId, [this.#ttlMs, runId])) === 1
  }

  /** Backend.finishRun: the final event and the end of the run, atomically. */
  async finishRun(sessionId: string, finish: FinishRun): Promise<LoggedEvent | null> {
    const template = frameTemplate(finish.event)
    const seq = Number(
      await this.#run(scripts.finishRun, sessionId, [
        this.#ttlMs,
        finish.runId,
        this.#maxEvents,
        template.head,
        template.tail,
        finish.ifLeaseExpired ? '1' : '0',
        finish.ifLastSeq ?? '',
      ]),
    )
    return seq > 0 ? { seq, frame: frameWithSeq(template, seq) } : null
  }

  async addWatcher(sessionId: string, watcherId: string): Promise<void> {
    let ids = this.#watching.get(sessionId)
    if (!ids) this.#watching.set(sessionId, (ids = new Set()))
    ids.add(watcherId)
    await this.#run(scripts.upsertWatchers, sessionId, [this.#ttlMs, this.#watcherTtlMs, '0', watcherId])
  }

  async removeWatcher(sessionId: string, watcherId: string): Promise<number> {
    const ids = this.#watching.get(sessionId)
    ids?.delete(watcherId)
    if (ids?.size === 0) this.#watching.delete(sessionId)
    return Number(await this.#run(scripts.removeWatcher, sessionId, [watcherId]))
  }

  async watcherCount(sessionId: string): Promise<number> {
    return Number(await this.#run(scripts.countWatchers, sessionId, []))
  }

  /** Pushes out the expiry of this instance's watchers (and of their sessions). Runs on a timer. */
  async refreshWatchers(): Promise<void> {
    const refreshes = [...this.#watching].map(([sessionId, ids]) =>
      this.#run(scripts.upsertWatchers, sessionId, [this.#ttlMs, this.#watcherTtlMs, '1', ...ids]),
    )
    const failed = (await Promise.allSettled(refreshes)).filter((result) => result.status === 'rejected')
    if (failed.length > 0) this.#log.warn({ err: failed[0]?.reason, failed: failed.length }, 'watcher refresh failed')
  }

  async ping(): Promise<void> {
    await this.#commands.client.ping()
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#refresher)
    this.#watching.clear()
    await this.#commands.release()
  }
}

function record(id: string, [owner, createdAt, updatedAt, messages]: SessionReply): SessionRecord {
  return {
    id,
    owner,
    messages: messages.map((message) => JSON.parse(message) as HistoryMessage),
    createdAt: Number(createdAt),
    updatedAt: Number(updatedAt),
  }
}

function activeRun(run: string, leaseExpiresAt: string): ActiveRun {
  return { ...(JSON.parse(run) as StoredRun), leaseExpiresAt: Number(leaseExpiresAt) }
}
