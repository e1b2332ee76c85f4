import { Type, type Static } from '@sinclair/typebox'
import type { FastifyError, FastifyInstance } from 'fastify'
import { ErrorCode, PendingCall, ProtocolError, SessionId } from '../protocol/index.ts'
import type { HistoryMessage, SessionRecord, SessionSummary } from '../store/types.ts'

const Params = Type.Object({ id: SessionId })
type Params = Static<typeof Params>

export const VisibleMessage = Type.Object(
  {
    id: Type.String({ description: '(1.1) The message id: `chat.edit` names a user message by it' }),
    role: Type.Union([Type.Literal('user'), Type.Literal('assistant')]),
    content: Type.String(),
    run_id: Type.Optional(Type.String({ description: 'The run that produced an assistant answer' })),
  },
  { additionalProperties: false },
)
export type VisibleMessage = Static<typeof VisibleMessage>

export const SessionView = Type.Object(
  {
    session_id: SessionId,
    messages: Type.Array(VisibleMessage, { description: 'Oldest first: each user message, then the whole answer of its run' }),
    pending: Type.Array(PendingCall, { description: '(1.1) Tool calls waiting on the client (protocol.md §7)' }),
    created_at: Type.String({ format: 'date-time' }),
    updated_at: Type.String({ format: 'date-time' }),
    active_run: Type.Union([Type.String(), Type.Null()], { description: 'The run in progress, if any' }),
  },
  { additionalProperties: false, $id: 'SessionView' },
)
export type SessionView = Static<typeof SessionView>

export const SessionListItem = Type.Object(
  {
    session_id: SessionId,
    title: Type.String({ description: 'The first user message, cut to 80 characters' }),
    created_at: Type.String({ format: 'date-time' }),
    updated_at: Type.String({ format: 'date-time', description: 'When a run last started or ended' }),
    active_run: Type.Union([Type.String(), Type.Null()]),
  },
  { additionalProperties: false },
)

export const SessionList = Type.Object(
  { sessions: Type.Array(SessionListItem), next_cursor: Type.Union([Type.String(), Type.Null()]) },
  { additionalProperties: false, $id: 'SessionList' },
)
export type SessionList = Static<typeof SessionList>

const ListQuery = Type.Object(
  { limit: Type.Integer({ minimum: 1, maximum: 100, default: 20 }), cursor: Type.Optional(Type.String({ maxLength: 512 })) },
  { additionalProperties: false },
)
type ListQuery = Static<typeof ListQuery>

export const RestError = Type.Object(
  { error: Type.String({ description: 'A stable code: unauthorized, invalid_message, forbidden, not_found, internal' }), message: Type.String() },
  { additionalProperties: false },
)

const errors = { 400: RestError, 401: RestError, 403: RestError, 404: RestError, 500: RestError }

/** The answers a ProtocolError maps to; anything else is a 500. */
const statusOf: Partial<Record<ErrorCode, number>> = { [ErrorCode.forbidden]: 403, [ErrorCode.notFound]: 404 }

/**
 * History as a chat UI shows it: user turns and the assistant's text. Tool plumbing and
 * assistant turns with no text are left out; the text of one run's rounds is joined, so each
 * answer equals the `complete.content` the client saw.
 */
export function visibleMessages(history: HistoryMessage[]): VisibleMessage[] {
  const visible: VisibleMessage[] = []
  history.forEach((message, index) => {
    if ((message.role !== 'user' && message.role !== 'assistant') || !message.content) return
    const last = visible.at(-1)
    if (message.role === 'assistant' && last?.role === 'assistant') {
      last.content += message.content
      return
    }
    // Messages stored before ids existed get a stable one from their place.
    const id = message.id ?? `m${index}`
    visible.push({ id, role: message.role, content: message.content, ...(message.run_id ? { run_id: message.run_id } : {}) })
  })
  return visible
}

function view(session: SessionRecord & { pending: PendingCall[] }): SessionView {
  return {
    session_id: session.id,
    messages: visibleMessages(session.messages),
    pending: session.pending,
    created_at: new Date(session.createdAt).toISOString(),
    updated_at: new Date(session.updatedAt).toISOString(),
    active_run: session.active?.runId ?? null,
  }
}

function listItem(session: SessionSummary): Static<typeof SessionListItem> {
  return {
    session_id: session.id,
    title: session.title,
    created_at: new Date(session.createdAt).toISOString(),
    updated_at: new Date(session.updatedAt).toISOString(),
    active_run: session.activeRunId,
  }
}

/** REST companions of the WebSocket (protocol.md §4): read and delete a session, owner only. */
export default async function sessionRoutes(app: FastifyInstance) {
  app.setErrorHandler((err: FastifyError | ProtocolError, request, reply) => {
    const status = err instanceof ProtocolError ? statusOf[err.code] : undefined
    if (err instanceof ProtocolError && status) return reply.code(status).send({ error: err.code, message: err.message })
    if ('validation' in err && err.validation) return reply.code(400).send({ error: ErrorCode.invalidMessage, message: err.message })
    request.log.error({ err }, 'session request failed')
    return reply.code(500).send({ error: ErrorCode.internal, message: 'internal error' })
  })

  app.get<{ Querystring: ListQuery }>(
    '/v1/sessions',
    { onRequest: app.requireBearer, schema: { querystring: ListQuery, response: { 200: SessionList, ...errors } } },
    async (request) => {
      const page = await app.sessions.list(request.claims!.sub, request.query.limit, request.query.cursor)
      return { sessions: page.sessions.map(listItem), next_cursor: page.nextCursor ?? null }
    },
  )

  app.get<{ Params: Params }>(
    '/v1/sessions/:id',
    { onRequest: app.requireBearer, schema: { params: Params, response: { 200: SessionView, ...errors } } },
    async (request) => view(await app.sessions.get(request.claims!.sub, request.params.id)),
  )

  app.delete<{ Params: Params }>(
    '/v1/sessions/:id',
    { onRequest: app.requireBearer, schema: { params: Params, response: { 204: Type.Null(), ...errors } } },
    async (request, reply) => {
      await app.sessions.delete(request.claims!.sub, request.params.id)
      request.log.info({ sessionId: request.params.id }, 'session deleted')
      return reply.code(204).send()
    },
  )
}
