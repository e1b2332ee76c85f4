import type { StatusQueued } from '../protocol/index.ts'

/** A page cursor of GET /v1/sessions: the last listed session's (updatedAt, id), opaque to clients. */
export function encodeCursor(updatedAt: number, id: string): string {
  return Buffer.from(JSON.stringify([updatedAt, id])).toString('base64url')
}

/** The cursor's position, or undefined for a missing or malformed one (the first page). */
export function decodeCursor(cursor: string | undefined): [updatedAt: number, id: string] | undefined {
  if (!cursor) return undefined
  try {
    const value = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown
    if (Array.isArray(value) && typeof value[0] === 'number' && typeof value[1] === 'string') return [value[0], value[1]]
  } catch {
    // A cursor we did not make: start from the top.
  }
  return undefined
}

/** A `status:queued` event with its place in line. */
export function withPosition(event: Omit<StatusQueued, 'seq'>, position: number): Omit<StatusQueued, 'seq'> {
  return { ...event, metadata: { ...event.metadata, position } }
}
