import type { BEARER_PROTOCOL_PREFIX, CloseCode, SUBPROTOCOL } from '../protocol/index.ts'

// The SDK loads no runtime code from the server's modules (its bundle has no dependencies), so
// the contract's constants are restated here; each is typed by the original, so tsc fails on drift.
export const SUBPROTOCOL_NAME: typeof SUBPROTOCOL = 'agent.v1'
export const BEARER_PREFIX: typeof BEARER_PROTOCOL_PREFIX = 'bearer.'

export const Close = {
  normal: 1000,
  policyViolation: 1008,
  messageTooBig: 1009,
  serviceRestart: 1012,
  unauthorized: 4001,
  forbiddenOrigin: 4003,
} as const satisfies Partial<typeof CloseCode>

/** Session ids the server accepts (protocol.md §2). */
export const SESSION_ID_PATTERN = /^[A-Za-z0-9_-]{1,128}$/

/** A random UUID (v4) from `crypto.getRandomValues`, which, unlike randomUUID, also works on plain-http pages. */
export function randomId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16))
  bytes[6] = ((bytes[6] as number) & 0x0f) | 0x40
  bytes[8] = ((bytes[8] as number) & 0x3f) | 0x80
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('')
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`
}
