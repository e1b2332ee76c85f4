import fp from 'fastify-plugin'
import fastifyJwt from '@fastify/jwt'
import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import type { Algorithm } from 'fast-jwt'
import { BEARER_PROTOCOL_PREFIX, CloseCode, CloseReason, type AuthFailure } from '../protocol/index.ts'
import type { Config } from '../config.ts'

export interface Claims {
  sub: string
  /** Seconds since the epoch. */
  exp: number
}

export type Verified = { ok: true; claims: Claims } | { ok: false; reason: AuthFailure }

/** What the handshake hook decided; the WebSocket handler acts on it synchronously. */
export type UpgradeAuth =
  | { ok: true; claims: Claims }
  | { ok: false; code: typeof CloseCode.unauthorized; reason: AuthFailure }
  | { ok: false; code: typeof CloseCode.forbiddenOrigin; reason: typeof CloseReason.forbiddenOrigin }

declare module 'fastify' {
  interface FastifyInstance {
    /** Verifies a JWT against the configured key, algorithms, issuer and audience. Never throws. */
    verifyToken(token: string): Verified
    /** preValidation hook for the upgrade: sets `request.upgradeAuth`. */
    authenticateUpgrade(request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void
    /** preHandler for REST: answers 401 unless a valid bearer token is present; sets `request.claims`. */
    requireBearer(request: FastifyRequest, reply: FastifyReply): Promise<void>
  }
  interface FastifyRequest {
    upgradeAuth: UpgradeAuth | null
    claims: Claims | null
  }
}

const BEARER = /^Bearer(?:\s+(.*))?$/i
/** Never a valid JWT: verifying it answers invalid_token (4001). */
const DUPLICATE_TOKENS = ''

/** A Bearer header is the token source even when what follows is empty or malformed (then refused). */
function bearerHeader(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization
  const match = header ? BEARER.exec(header) : null
  return match ? (match[1] ?? '').trim() : undefined
}

function bearerProtocol(request: FastifyRequest): string | undefined {
  const header = request.headers['sec-websocket-protocol']
  if (!header) return undefined
  const offered = header.split(',').map((protocol) => protocol.trim())
  return offered.find((protocol) => protocol.startsWith(BEARER_PROTOCOL_PREFIX))?.slice(BEARER_PROTOCOL_PREFIX.length)
}

function queryToken(request: FastifyRequest): string | undefined {
  const token = (request.query as Record<string, unknown> | undefined)?.token
  // `?token=a&token=b`: which one a proxy or a logger saw is anyone's guess, so neither is used.
  if (Array.isArray(token)) return DUPLICATE_TOKENS
  return typeof token === 'string' && token !== '' ? token : undefined
}

/** The contract's order: Authorization header, then the bearer subprotocol, then `?token=`. */
export function findToken(request: FastifyRequest): string | undefined {
  return bearerHeader(request) ?? bearerProtocol(request) ?? queryToken(request)
}

function isClaims(payload: unknown): payload is Claims {
  const claims = payload as Partial<Claims> | null
  return typeof claims?.sub === 'string' && claims.sub.length > 0 && typeof claims.exp === 'number'
}

async function authPlugin(app: FastifyInstance, options: { config: Config }) {
  const { config } = options
  const allowedOrigins = new Set(config.ALLOWED_ORIGINS)
  await app.register(fastifyJwt, {
    secret: config.JWT_PUBLIC_KEY ? { public: config.JWT_PUBLIC_KEY } : (config.jwtSecret as string),
    verify: {
      algorithms: config.jwtAlgorithms as Algorithm[],
      // fast-jwt checks iss/aud only when the token carries them: a configured one must be required.
      requiredClaims: ['sub', 'exp', ...(config.JWT_ISSUER ? ['iss'] : []), ...(config.JWT_AUDIENCE ? ['aud'] : [])],
      ...(config.JWT_ISSUER ? { allowedIss: config.JWT_ISSUER } : {}),
      ...(config.JWT_AUDIENCE ? { allowedAud: config.JWT_AUDIENCE } : {}),
    },
  })

  function verifyToken(token: string): Verified {
    try {
      const payload: unknown = app.jwt.verify(token)
      return isClaims(payload) ? { ok: true, claims: { sub: payload.sub, exp: payload.exp } } : { ok: false, reason: CloseReason.invalidToken }
    } catch (err) {
      const code = (err as { code?: string }).code
      return { ok: false, reason: code === 'FAST_JWT_EXPIRED' ? CloseReason.tokenExpired : CloseReason.invalidToken }
    }
  }

  app.decorate('verifyToken', verifyToken)
  app.decorateRequest('upgradeAuth', null)
  app.decorateRequest('claims', null)

  function upgradeAuth(request: FastifyRequest): UpgradeAuth {
    const origin = request.headers.origin
    // Browsers always send Origin; other clients do not, and are judged by their token alone.
    if (allowedOrigins.size > 0 && origin !== undefined && !allowedOrigins.has(origin)) {
      return { ok: false, code: CloseCode.forbiddenOrigin, reason: CloseReason.forbiddenOrigin }
    }
    const token = findToken(request)
    const verified = token === undefined ? ({ ok: false, reason: CloseReason.missingToken } as const) : verifyToken(token)
    return verified.ok ? verified : { ok: false, code: CloseCode.unauthorized, reason: verified.reason }
  }

  // A callback hook, not an async one: the check is synchronous, and Fastify then goes on in
  // the same turn instead of after a promise job per hook.
  app.decorate('authenticateUpgrade', function authenticateUpgrade(request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction) {
    request.upgradeAuth = upgradeAuth(request)
    done()
  })

  app.decorate('requireBearer', async function requireBearer(request: FastifyRequest, reply: FastifyReply) {
    const token = bearerHeader(request)
    const verified = token === undefined ? ({ ok: false, reason: CloseReason.missingToken } as const) : verifyToken(token)
    if (!verified.ok) {
      await reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'unauthorized', message: verified.reason })
      return
    }
    request.claims = verified.claims
  })
}

export default fp(authPlugin, { name: 'auth', fastify: '5.x' })
