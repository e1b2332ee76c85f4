import { createHash, timingSafeEqual } from 'node:crypto'
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { CloseCode, ErrorCode, type FinishReason } from '../protocol/index.ts'
import type { RunObserver, RunTracker } from '../sessions/run-executor.ts'
import type { ConnectionObserver } from '../ws/connection.ts'
import type { UpstreamObserver } from '../agent/models/openai-model.ts'
import type { McpObserver } from '../agent/tools/mcp/index.ts'
import { TallyHistogram } from './tally-histogram.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** This app's Prometheus metrics, and the observers that feed them. */
    metrics: Metrics
  }
}

/** Labels stay low-cardinality: every value comes from a fixed set, never a user or session id. */
export interface Metrics {
  registry: Registry
  connectionsActive: Gauge
  /** Session subscriptions open on this instance: back to its baseline when connections close. */
  subscriptionsActive: Gauge
  /** result: ok, unauthorized, forbidden_origin, too_many, draining. */
  connectionsOpened: Counter<'result'>
  /** code: a close code of the contract, 1005, 1006, or `other`. */
  connectionsClosed: Counter<'code'>
  /** type: a client frame type, or `invalid`. */
  framesReceived: Counter<'type'>
  /** type: a server frame type. */
  framesSent: Counter<'type'>
  /** outcome: completed, cancelled, error, interrupted. */
  runs: Counter<'outcome'>
  runDuration: Histogram<'outcome'>
  timeToFirstToken: Histogram
  interTokenGap: TallyHistogram
  cancelLatency: Histogram
  tokensStreamed: Counter
  reasoningDeltas: Counter
  /** status_class: 2xx, 4xx, 5xx…, network (no response), aborted (we gave up first: a cancel or a watchdog timeout). */
  upstreamRequests: Counter<'status_class'>
  /** failure: an UpstreamFailure (rate_limited, server, connection, …). */
  upstreamRetries: Counter<'failure'>
  /** result: ok or the error code answered (not_found, forbidden, history_gone, internal). */
  resumeAttempts: Counter<'result'>
  maxBufferedAmount: Gauge
  /** limit: which limit was hit: messages (the per-user frame budget). */
  rateLimitHits: Counter<'limit'>
  /** server: a configured MCP server's name (a fixed set); outcome: ok, error (the tool said so), failed (no answer), cancelled. */
  mcpCalls: Counter<'server' | 'outcome'>
  mcpCallDuration: Histogram<'server'>
  mcpServerUp: Gauge<'server'>
  runObserver: RunObserver
  connectionObserver: ConnectionObserver
  upstreamObserver: UpstreamObserver
  mcpObserver: McpObserver
}

export interface MetricsOptions {
  /** How long a peak of `bufferedAmount` is remembered: it is reported for one to two windows. */
  peakWindowMs?: number
  now?: () => number
}

const RUN_OUTCOMES = ['completed', 'cancelled', 'error', 'interrupted'] as const
type RunOutcome = (typeof RUN_OUTCOMES)[number]
const OPEN_RESULTS = ['ok', 'unauthorized', 'forbidden_origin', 'too_many', 'draining']
const STATUS_CLASSES = ['2xx', '4xx', '5xx', 'network', 'aborted']
const RESUME_RESULTS = ['ok', ErrorCode.notFound, ErrorCode.forbidden, ErrorCode.historyGone]
const HANDOVERS = ['parked', 'adopted'] as const
const CLOSE_CODES = new Set<number>([...Object.values(CloseCode), 1005, 1006])
/** Most frequent first: `sentFrameType` runs once per frame written. */
const SERVER_FRAME_TYPES = ['token', 'status', 'complete', 'error', 'pong'] as const
const TYPE_PREFIXES = SERVER_FRAME_TYPES.map((type) => [type, `{"type":"${type}"`] as const)
type SentFrameType = (typeof SERVER_FRAME_TYPES)[number] | 'other'

function outcomeOf(finishReason: FinishReason): RunOutcome {
  return finishReason === 'stop' || finishReason === 'length' || finishReason === 'content_filter' ? 'completed' : finishReason
}

/** The type of a serialized server frame: every frame we write starts with its `type`. */
export function sentFrameType(frame: string): SentFrameType {
  for (const [type, prefix] of TYPE_PREFIXES) if (frame.startsWith(prefix)) return type
  return 'other'
}

export function closeCodeLabel(code: number): string {
  return CLOSE_CODES.has(code) ? String(code) : 'other'
}

export function statusClass(outcome: number | 'network' | 'aborted'): string {
  return typeof outcome === 'number' ? `${Math.floor(outcome / 100)}xx` : outcome
}

/** Process-wide metrics (CPU, memory, event loop, GC) exist once per process, however many apps run in it. */
let processRegistry: Registry | undefined
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry()
    collectDefaultMetrics({ register: processRegistry })
  }
  return processRegistry
}

export function createMetrics(options: MetricsOptions = {}): Metrics {
  const registry = new Registry()
  const registers = [registry]
  const now = options.now ?? (() => performance.now())
  const peakWindowMs = options.peakWindowMs ?? 30_000
  const counter = <L extends string>(name: string, help: string, labelNames: L[] = [], collect?: (this: Counter<L>) => void) =>
    new Counter<L>({ name, help, labelNames, registers, ...(collect ? { collect } : {}) })
  const histogram = <L extends string>(name: string, help: string, buckets: number[], labelNames: L[] = []) =>
    new Histogram<L>({ name, help, buckets, labelNames, registers })

  // Counted once per frame and per delta, as plain additions: the counters take them when
  // scraped (prom-client's `inc` hashes and validates its labels on every call).
  const unscrapedFrames = Object.fromEntries([...SERVER_FRAME_TYPES, 'other'].map((type) => [type, 0])) as Record<SentFrameType, number>
  let unscrapedTokens = 0
  // Per handshake and per close, the same way.
  let unscrapedOpened = 0
  let openConnections = 0
  const unscrapedCloses = new Map<string, number>()

  // The peak of the current window and of the one before, so a scrape never misses a spike.
  let peak = 0
  let previousPeak = 0
  let windowStart = now()
  const rotatePeak = (at: number) => {
    if (at - windowStart < peakWindowMs) return
    previousPeak = at - windowStart < 2 * peakWindowMs ? peak : 0
    peak = 0
    windowStart = at
  }

  const metrics = {
    registry,
    connectionsActive: new Gauge({
      name: 'agw_ws_connections_active',
      help: 'Open agent WebSocket connections',
      registers,
      collect() {
        this.set(openConnections)
      },
    }),
    subscriptionsActive: new Gauge({ name: 'agw_subscriptions_active', help: 'Session subscriptions open on this instance (a connection watching a session)', registers }),
    connectionsOpened: counter('agw_ws_connections_opened_total', 'Upgrade attempts on /ws/agent, by result', ['result'], function () {
      this.inc({ result: 'ok' }, unscrapedOpened)
      unscrapedOpened = 0
    }),
    connectionsClosed: counter('agw_ws_connections_closed_total', 'Accepted connections closed, by close code', ['code'], function () {
      for (const [code, count] of unscrapedCloses) this.inc({ code }, count)
      unscrapedCloses.clear()
    }),
    framesReceived: counter('agw_ws_frames_received_total', 'Client frames received, by type (invalid: refused by validation)', ['type']),
    framesSent: counter('agw_ws_frames_sent_total', 'Server frames written to sockets, by type', ['type'], function () {
      for (const [type, count] of Object.entries(unscrapedFrames) as Array<[SentFrameType, number]>) {
        if (count === 0) continue
        this.inc({ type }, count)
        unscrapedFrames[type] = 0
      }
    }),
    runs: counter('agw_runs_total', 'Runs ended, by outcome', ['outcome']),
    runDuration: histogram('agw_run_duration_seconds', 'From a run being accepted to its complete, by outcome', [0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300], ['outcome']),
    timeToFirstToken: histogram('agw_run_time_to_first_token_seconds', 'From a run being accepted to its first token (tool rounds included)', [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30]),
    interTokenGap: new TallyHistogram({
      name: 'agw_run_inter_token_gap_seconds',
      help: 'Between consecutive text deltas of a run, those of one upstream read counted as one (a tool round resets it)',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    }),
    cancelLatency: histogram('agw_run_cancel_latency_seconds', 'From a cancel or delete request to the run\'s complete', [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]),
    tokensStreamed: counter('agw_tokens_streamed_total', 'Text deltas of the model relayed by runs (not frames: deltas may be merged into one token)', [], function () {
      this.inc(unscrapedTokens)
      unscrapedTokens = 0
    }),
    reasoningDeltas: counter('agw_reasoning_deltas_total', "Reasoning deltas the model streamed (relayed only to chats that asked for them)"),
    upstreamRequests: counter('agw_upstream_requests_total', 'HTTP requests to the model server, by status class (network: no response; aborted: cancelled or timed out before one)', ['status_class']),
    upstreamRetries: counter('agw_upstream_retries_total', 'Model requests retried, by the failure that caused the retry', ['failure']),
    resumeAttempts: counter('agw_resume_attempts_total', 'resume frames, by result', ['result']),
    runHandovers: counter('agw_run_handovers_total', 'Runs waiting on a client handed between instances: parked by a draining instance, adopted by this one', ['kind']),
    maxBufferedAmount: new Gauge({
      name: 'agw_ws_buffered_amount_max_bytes',
      help: `Largest socket bufferedAmount seen after a send, over the last ${peakWindowMs / 1000}-${(2 * peakWindowMs) / 1000} s`,
      registers,
      collect() {
        rotatePeak(now())
        this.set(Math.max(peak, previousPeak))
      },
    }),
    rateLimitHits: counter('agw_rate_limit_hits_total', 'Frames refused by a rate limit (answered rate_limited), by limit', ['limit']),
    mcpCalls: counter('agw_mcp_tool_calls_total', 'MCP tool calls, by server and outcome (error: the tool reported one; failed: no answer)', ['server', 'outcome']),
    mcpCallDuration: histogram('agw_mcp_tool_call_duration_seconds', 'MCP tool calls, from the request to its answer or failure, by server', [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60], ['server']),
    mcpServerUp: new Gauge({ name: 'agw_mcp_server_up', help: 'Whether an MCP server is connected (1) or being reconnected (0)', labelNames: ['server'], registers }),
  }
  for (const outcome of RUN_OUTCOMES) {
    metrics.runs.inc({ outcome }, 0)
    metrics.runDuration.zero({ outcome })
  }
  for (const result of OPEN_RESULTS) metrics.connectionsOpened.inc({ result }, 0)
  for (const status_class of STATUS_CLASSES) metrics.upstreamRequests.inc({ status_class }, 0)
  for (const result of RESUME_RESULTS) metrics.resumeAttempts.inc({ result }, 0)
  for (const kind of HANDOVERS) metrics.runHandovers.inc({ kind }, 0)
  metrics.rateLimitHits.inc({ limit: 'messages' }, 0)

  const seconds = (ms: number) => ms / 1000
  const tracker = (): RunTracker => {
    const startedAt = now()
    let tokens = 0
    let lastTokenAt: number | undefined
    let cancelAt: number | undefined
    return {
      event(type, deltas = 1) {
        const at = now()
        // Thinking out loud is not a gap in the answer, nor part of it.
        if (type === 'reasoning') return metrics.reasoningDeltas.inc()
        if (type !== 'token') {
          lastTokenAt = undefined
          return
        }
        if (tokens === 0) metrics.timeToFirstToken.observe(seconds(at - startedAt))
        else if (lastTokenAt !== undefined) metrics.interTokenGap.observe(seconds(at - lastTokenAt))
        tokens++
        lastTokenAt = at
        unscrapedTokens += deltas
      },
      cancelRequested() {
        cancelAt ??= now()
      },
      ended(finishReason) {
        const at = now()
        const outcome = outcomeOf(finishReason)
        metrics.runs.inc({ outcome })
        metrics.runDuration.observe({ outcome }, seconds(at - startedAt))
        if (cancelAt !== undefined) metrics.cancelLatency.observe(seconds(at - cancelAt))
      },
    }
  }

  return {
    ...metrics,
    runObserver: {
      started: tracker,
      resumed: (result) => metrics.resumeAttempts.inc({ result }),
      // Its duration is unknown here: it ran on the instance that was lost.
      interrupted: () => metrics.runs.inc({ outcome: 'interrupted' }),
      handedOver: (kind) => metrics.runHandovers.inc({ kind }),
    },
    connectionObserver: {
      opened() {
        unscrapedOpened++
        openConnections++
      },
      received: (type) => metrics.framesReceived.inc({ type }),
      sent(frame, bufferedAmount) {
        unscrapedFrames[sentFrameType(frame)]++
        // Nothing buffered raises no peak; a scrape rotates the windows by itself.
        if (bufferedAmount === 0) return
        rotatePeak(now())
        peak = Math.max(peak, bufferedAmount)
      },
      rateLimited: () => metrics.rateLimitHits.inc({ limit: 'messages' }),
      closed(code) {
        openConnections--
        const label = closeCodeLabel(code)
        unscrapedCloses.set(label, (unscrapedCloses.get(label) ?? 0) + 1)
      },
    },
    upstreamObserver: {
      request: (outcome) => metrics.upstreamRequests.inc({ status_class: statusClass(outcome) }),
      retry: (failure) => metrics.upstreamRetries.inc({ failure }),
    },
    mcpObserver: {
      call(server, outcome, duration) {
        metrics.mcpCalls.inc({ server, outcome })
        metrics.mcpCallDuration.observe({ server }, duration)
      },
      status: (server, up) => metrics.mcpServerUp.set({ server }, up ? 1 : 0),
    },
  }
}

function digest(secret: string): Buffer {
  return createHash('sha256').update(secret).digest()
}

export interface MetricsPluginOptions {
  /** METRICS_TOKEN: the bearer token a scrape must carry. */
  token: string | undefined
  /** Production: with no token set, /metrics is closed rather than open to anyone who can reach the port. */
  requireToken?: boolean
}

async function metricsPlugin(app: FastifyInstance, options: MetricsPluginOptions) {
  const metrics = createMetrics()
  const processRegistry = processMetrics()
  app.decorate('metrics', metrics)
  app.addHook('onClose', async () => metrics.registry.clear())

  // Hashing both sides gives equal lengths, so the comparison takes the same time whatever was sent.
  const expected = options.token ? digest(options.token) : undefined
  const closed = !expected && options.requireToken === true
  if (closed) app.log.warn('METRICS_TOKEN is not set: /metrics answers 401 in production until it is (give the scraper the same token)')
  const authorize = async (request: FastifyRequest, reply: FastifyReply) => {
    if (closed) {
      await reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'unauthorized', message: 'metrics are closed in production until METRICS_TOKEN is set' })
      return
    }
    if (!expected) return
    const given = /^Bearer\s+(\S+)\s*$/i.exec(request.headers.authorization ?? '')?.[1]
    if (given !== undefined && timingSafeEqual(digest(given), expected)) return
    await reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'unauthorized', message: 'metrics need the METRICS_TOKEN bearer token' })
  }

  // Scrapes come every few seconds: log them only when something goes wrong.
  app.get('/metrics', { logLevel: 'warn', onRequest: authorize }, async (_request, reply) => {
    const text = (await processRegistry.metrics()) + (await metrics.registry.metrics())
    return reply.type(metrics.registry.contentType).send(text)
  })
}

export default fp(metricsPlugin, { name: 'metrics', fastify: '5.x' })
