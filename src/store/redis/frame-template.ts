import type { UnsequencedRunEvent } from '../../protocol/index.ts'
import { serializeEvent } from '../types.ts'

export interface FrameTemplate {
  /** The frame up to and including `"seq":`. */
  head: string
  /** The frame after the seq. */
  tail: string
}

const SEQ_ZERO = '"seq":0'

/**
 * The serialized frame split around its seq, so Redis (which assigns the seq atomically) can
 * store `head .. seq .. tail`: byte for byte `serializeEvent(event, seq)`. The first `"seq":0`
 * is the seq's own: inside a JSON string a quote is escaped, so the text cannot occur there.
 */
export function frameTemplate(event: UnsequencedRunEvent): FrameTemplate {
  const zero = serializeEvent(event, 0)
  const at = zero.indexOf(SEQ_ZERO) + SEQ_ZERO.length - 1
  return { head: zero.slice(0, at), tail: zero.slice(at + 1) }
}

export function frameWithSeq(template: FrameTemplate, seq: number): string {
  return `${template.head}${seq}${template.tail}`
}
