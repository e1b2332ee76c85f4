import type { TSchema } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import {
  CloseCode,
  CloseReason,
  ErrorCode,
  SUBPROTOCOL,
  clientFrameSchemas,
  errorFrame,
  serverFrameSchemas,
} from '../protocol/index.ts'
import type { Config } from '../config.ts'
import { defaultGuardTuning } from '../plugins/guards.ts'

type JsonSchema = Record<string, unknown>

interface CloseCodeGuide {
  meaning: string
  reasons: string[]
  client_action: string
}

/** What each close code means to a client; keyed by name so a new code cannot go undocumented. */
const closeGuide: Record<keyof typeof CloseCode, CloseCodeGuide> = {
  normal: { meaning: 'normal closure', reasons: [], client_action: 'none' },
  goingAway: { meaning: 'going away', reasons: [], client_action: 'reconnect with backoff, then resume' },
  policyViolation: {
    meaning: 'policy violation (abuse, slow client)',
    reasons: [CloseReason.slowClient, CloseReason.tooManyInvalidFrames, CloseReason.bufferLimit, CloseReason.tooManyPendingFrames],
    client_action: 'do not retry blindly: fix what the reason names first',
  },
  messageTooBig: { meaning: 'frame larger than limits.max_payload_bytes', reasons: [], client_action: 'fix the client' },
  internalError: { meaning: 'internal error', reasons: [CloseReason.storeUnavailable, CloseReason.sessionLost], client_action: 'reconnect with backoff, then resume' },
  serviceRestart: { meaning: 'service restart (drain)', reasons: [CloseReason.serviceRestart], client_action: 'reconnect at once (another instance answers), then resume' },
  unauthorized: {
    meaning: 'unauthorized',
    reasons: [CloseReason.missingToken, CloseReason.invalidToken, CloseReason.tokenExpired],
    client_action: 'get a fresh token, then reconnect; never retry with the same token',
  },
  forbiddenOrigin: { meaning: 'Origin not allowed', reasons: [CloseReason.forbiddenOrigin], client_action: 'never retry' },
  tooManyConnections: { meaning: 'too many connections for this user', reasons: [CloseReason.tooManyConnections], client_action: 'back off, then reconnect' },
}

/** 1006 is never sent: it is what a client sees when the connection drops without a close frame. */
const dropped = { code: 1006, name: 'abnormal', meaning: 'dropped without a close frame (network, heartbeat missed)', reasons: [], client_action: 'reconnect with backoff, then resume' }

/** A TypeBox schema as plain JSON Schema: its symbols dropped, its `$id` turned into a title. */
function plain(schema: TSchema): JsonSchema {
  const { $id, ...rest } = JSON.parse(JSON.stringify(schema)) as JsonSchema
  return { title: $id, ...rest }
}

/** One self-contained JSON Schema: `$defs` holds each frame, the root accepts any of them. */
function frameSchema(side: 'client' | 'server', frames: Record<string, TSchema>): JsonSchema {
  const defs = Object.fromEntries(Object.values(frames).map((schema) => [schema.$id as string, plain(schema)]))
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    $id: `urn:agent-gateway:protocol:v1:${side}`,
    title: side === 'client' ? 'A frame a client sends' : 'A frame the server sends',
    $defs: defs,
    anyOf: Object.keys(defs).map((name) => ({ $ref: `#/$defs/${name}` })),
  }
}

/**
 * The machine-readable contract, generated from the very schemas the server validates with,
 * plus the codes and this deployment's limits.
 */
export function protocolDocument(config: Config) {
  const HIGH_WATER_MARK_BYTES = defaultGuardTuning.highWaterMark
  return {
    version: 1,
    revision: '1.1',
    subprotocol: SUBPROTOCOL,
    endpoint: '/ws/agent',
    client: frameSchema('client', clientFrameSchemas),
    server: frameSchema('server', serverFrameSchemas),
    error_codes: Object.values(ErrorCode).map((code) => {
      const frame = errorFrame(code, '')
      return { code, retryable: frame.metadata.retryable, message: frame.content }
    }),
    close_codes: [
      ...Object.entries(closeGuide).map(([name, guide]) => ({ code: CloseCode[name as keyof typeof CloseCode], name, ...guide })),
      dropped,
    ].sort((a, b) => a.code - b.code),
    limits: {
      max_content_chars: config.MAX_CONTENT_CHARS,
      max_payload_bytes: config.MAX_PAYLOAD_BYTES,
      rate_limit_messages: config.RATE_LIMIT_MESSAGES,
      rate_limit_window_ms: config.RATE_LIMIT_WINDOW_MS,
      max_connections_per_user: config.MAX_CONNECTIONS_PER_USER,
      heartbeat_interval_ms: config.HEARTBEAT_INTERVAL_MS,
      resume_grace_ms: config.RESUME_GRACE_MS,
      resume_buffer_events: config.RESUME_BUFFER_EVENTS,
      session_ttl_seconds: config.SESSION_TTL_SECONDS,
      max_sessions_per_user: config.MAX_SESSIONS_PER_USER,
      max_watched_per_connection: config.MAX_WATCHED_PER_CONNECTION,
      high_water_mark_bytes: HIGH_WATER_MARK_BYTES,
      max_buffered_bytes: config.MAX_BUFFERED_BYTES,
      max_pending_frames: config.MAX_PENDING_FRAMES,
      slow_client_timeout_ms: config.SLOW_CLIENT_TIMEOUT_MS,
    },
  }
}

export default async function protocolRoutes(app: FastifyInstance, options: { config: Config }) {
  const body = JSON.stringify(protocolDocument(options.config))
  app.get('/v1/protocol', async (_request, reply) => reply.type('application/json; charset=utf-8').header('cache-control', 'public, max-age=300').send(body))
}
