import { isIP } from 'node:net'
import { Type, type Static } from '@sinclair/typebox'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Algorithm } from 'fast-jwt'
import type { Config } from '../config.ts'

const DevTokenQuery = Type.Object({ sub: Type.String({ minLength: 1, maxLength: 128 }) }, { additionalProperties: false })
const DevTokenReply = Type.Object({ token: Type.String() })

/**
 * Anyone who reaches /dev/token can act as any user, so it exists only with the development
 * secret the server generated itself (no JWT_SECRET or JWT_PUBLIC_KEY: a configured key is a
 * real deployment, even one that forgot NODE_ENV), never in production, and DEV_TOKEN=off
 * removes it.
 */
export function devTokenServed(config: Config): boolean {
  return !config.isProduction && config.devSecretFile !== undefined && config.DEV_TOKEN !== 'off'
}

/** 127.0.0.0/8 and ::1, also as IPv4-mapped IPv6 (a dual-stack listener reports those). */
export function isLoopback(address: string | undefined): boolean {
  if (!address) return false
  const ipv4 = address.startsWith('::ffff:') ? address.slice('::ffff:'.length) : address
  return isIP(ipv4) === 4 ? ipv4.startsWith('127.') : address === '::1'
}

/**
 * A request from this machine: the peer is loopback and no proxy says it forwarded it (a
 * reverse proxy on the same host would otherwise make every client local). Read from the
 * socket, not `request.ip`: with TRUST_PROXY any client could claim 127.0.0.1.
 */
function fromThisMachine(request: FastifyRequest): boolean {
  const forwarded = request.headers['x-forwarded-for'] !== undefined || request.headers.forwarded !== undefined
  return !forwarded && isLoopback(request.socket.remoteAddress)
}

/** GET /dev/token?sub=: a one-hour token for the demo page, on loopback unless DEV_TOKEN=any. */
export default async function devTokenRoute(app: FastifyInstance, options: { config: Config }) {
  const { config } = options
  const signOptions = {
    expiresIn: '1h',
    // The first accepted algorithm (config resolves at least one), so the token verifies here.
    algorithm: config.jwtAlgorithms[0] as Algorithm,
    ...(config.JWT_ISSUER ? { iss: config.JWT_ISSUER } : {}),
    ...(config.JWT_AUDIENCE ? { aud: config.JWT_AUDIENCE } : {}),
  }
  app.get<{ Querystring: Static<typeof DevTokenQuery> }>(
    '/dev/token',
    { schema: { querystring: DevTokenQuery, response: { 200: DevTokenReply } } },
    async (request, reply) => {
      // Not found rather than forbidden: the demo page then asks for a token to paste.
      if (config.DEV_TOKEN !== 'any' && !fromThisMachine(request)) return reply.callNotFound()
      reply.header('cache-control', 'no-store')
      return { token: app.jwt.sign({ sub: request.query.sub }, signOptions) }
    },
  )
}
