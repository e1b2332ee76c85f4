/**
 * Child process: the framework floor of the handshake, what the project's mandated stack costs
 * before any of the project's own code runs. Fastify with the project's logger options,
 * @fastify/websocket and @fastify/jwt (HS256, `sub` and `exp` required, as the project
 * configures it), one route whose async preValidation verifies the bearer token; the handler
 * closes a refused upgrade 4001 and gives an accepted one a message listener. No sessions,
 * guards, metrics, schemas or other plugins. The handshake scenario runs it beside the
 * project and the baseline, so a report tells the framework's share of the gap from ours.
 *
 * Env: PORT, JWT_SECRET.
 */
import { randomUUID } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyRequest } from 'fastify'
import fastifyJwt from '@fastify/jwt'
import websocket from '@fastify/websocket'
import { loggerOptions } from '../src/logger.ts'
import { serveServer } from './server-stats.ts'

const BEARER = /^Bearer (\S+)$/

const app = Fastify({ logger: loggerOptions('warn'), genReqId: () => randomUUID() })
await app.register(fastifyJwt, { secret: process.env.JWT_SECRET as string, verify: { algorithms: ['HS256'], requiredClaims: ['sub', 'exp'] } })
await app.register(websocket, { options: { perMessageDeflate: false, maxPayload: 65_536 } })

const verified = new WeakMap<FastifyRequest, boolean>()
app.get(
  '/ws/agent',
  {
    websocket: true,
    preValidation: async (request) => {
      const token = BEARER.exec(request.headers.authorization ?? '')?.[1]
      try {
        verified.set(request, token !== undefined && typeof app.jwt.verify<{ sub?: unknown }>(token).sub === 'string')
      } catch {
        verified.set(request, false)
      }
    },
  },
  (socket, request) => {
    if (!verified.get(request)) return socket.close(4001, 'invalid token')
    socket.on('message', () => {})
  },
)

await app.listen({ host: '127.0.0.1', port: Number(process.env.PORT) })
serveServer((app.server.address() as AddressInfo).port, () => app.close())
