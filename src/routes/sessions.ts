import { Type, type Static } from '@sinclair/typebox'
import type { FastifyError, FastifyInstance } from 'fastify'
import { ErrorCode, ProtocolError, SessionId } from '../protocol/index.ts'
import type { HistoryMessage, SessionRecord } from '../store/types.ts'

const Params = Type.Object({ id: SessionId })
type Params = Static<typeof Params>

export const VisibleMessage = Type.Object(
  { role: Type.Union([Type.Literal('user'), Type.Literal('assistant')]), content: Type.String() },
  { additionalProperties: false },
)
export type VisibleMessage = Static<typeof VisibleMessage>

export const SessionView = Type.Object(
  {
    session_id: SessionId,
    messages: Type.Array(VisibleMessage, { description: 'Oldest first: each user message, then the whole answer of its run' }),
    created_at: Type.String({ format: 'date-time' }),
    updated_at: Type.String({ format: 'date-time' }),
  },
  { additionalProperties: false, $id: 'SessionView' },
)
export type SessionView = Static<typeof SessionView>

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
  for (const message of history) {
    if ((message.role !== 'user' && message.role !== 'assistant') || !message.content) continue
    const last = visible.at(-1)
    if (message.role === 'assistant' && last?.role === 'assistant') last.content += message.content
    else visible.push({ role: message.role, content: message.content })
  }
  return visible
}

function view(session: SessionRecord): SessionView {
  return {
    session_id: session.id,
    messages: visibleMessages(session.messages),
    created_at: new Date(session.createdAt).toISOString(),
    updated_at: new Date(session.updatedAt).toISOString(),
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
