import { TypeCompiler } from '@sinclair/typebox/compiler'
import type { ValueError } from '@sinclair/typebox/value'
import { clientFrameSchemas, SessionId, type ClientFrame, type ClientFrameType } from './client-frames.ts'

const validators = Object.fromEntries(
  Object.entries(clientFrameSchemas).map(([type, schema]) => [type, TypeCompiler.Compile(schema)]),
) as { [K in ClientFrameType]: ReturnType<typeof TypeCompiler.Compile<(typeof clientFrameSchemas)[K]>> }

const validSessionId = TypeCompiler.Compile(SessionId)

const frameTypes = Object.keys(clientFrameSchemas).join(', ')

export type ParsedFrame = { ok: true; frame: ClientFrame } | { ok: false; reason: string; sessionId: string }

function isFrameType(value: unknown): value is ClientFrameType {
  return typeof value === 'string' && Object.hasOwn(clientFrameSchemas, value)
}

/** A session id worth echoing in the error, only when it is a valid one. */
function sessionIdOf(value: Record<string, unknown>): string {
  const id = value.session_id
  return validSessionId.Check(id) ? id : ''
}

/**
 * Turns one WebSocket message into a validated client frame, or a reason a client author
 * can act on. Never throws.
 */
export function parseClientFrame(data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean): ParsedFrame {
  if (isBinary) return { ok: false, reason: 'binary frames are not accepted: send JSON text', sessionId: '' }
  const text = Array.isArray(data) ? Buffer.concat(data).toString('utf8') : Buffer.from(data as ArrayBuffer).toString('utf8')
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return { ok: false, reason: 'frame is not valid JSON', sessionId: '' }
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, reason: 'frame must be a JSON object', sessionId: '' }
  }
  const record = value as Record<string, unknown>
  const sessionId = sessionIdOf(record)
  if (!isFrameType(record.type)) {
    return { ok: false, reason: `unknown frame type: expected one of ${frameTypes}`, sessionId }
  }
  const validator = validators[record.type]
  if (validator.Check(value)) return { ok: true, frame: value as ClientFrame }
  // Check failed, so there is a first error; the value is an object, so its path names a field.
  const first = validator.Errors(value).First() as ValueError
  return { ok: false, reason: `invalid ${record.type} frame: ${first.path.slice(1)}: ${first.message}`, sessionId }
}
