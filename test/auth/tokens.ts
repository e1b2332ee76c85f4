import { createHmac } from 'node:crypto'
import { TEST_SECRET } from '../helpers/app.ts'

export const b64url = (value: string | Buffer) => Buffer.from(value).toString('base64url')
export const now = () => Math.floor(Date.now() / 1000)

/**
 * A JWT built by hand, so a test controls every byte: the header (alg), every claim (exp in
 * the past, nbf in the future, no sub…) and the key.
 */
export function handToken(
  payload: Record<string, unknown>,
  options: { secret?: string; header?: Record<string, unknown>; hash?: 'sha256' | 'sha384' | 'sha512' } = {},
): string {
  const hash = options.hash ?? 'sha256'
  const header = options.header ?? { alg: `HS${hash.slice(3)}`, typ: 'JWT' }
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`
  const signature = createHmac(hash, options.secret ?? TEST_SECRET).update(input).digest('base64url')
  return `${input}.${signature}`
}

/** A valid payload for `sub`, expiring in an hour; `extra` adds or (with undefined) removes claims. */
export function claims(sub: unknown = 'alice', extra: Record<string, unknown> = {}): Record<string, unknown> {
  const payload: Record<string, unknown> = { sub, iat: now(), exp: now() + 3600, ...extra }
  for (const [key, value] of Object.entries(extra)) if (value === undefined) delete payload[key]
  return payload
}
