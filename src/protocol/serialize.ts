import type { UnsequencedRunEvent } from './server-frames.ts'

/** A run event as it goes on the wire and into the log: replays send these exact bytes. */
export function serializeEvent(event: UnsequencedRunEvent, seq: number): string {
  // The hot path (one per model delta), without the rest/spread: the same bytes as the general
  // case. One JSON.stringify, not a template around three: a flat string, where a template
  // left a tree of concatenations (kept as long as the log keeps the frame), and faster too.
  if (event.type === 'token') {
    return JSON.stringify({ type: 'token', session_id: event.session_id, seq, content: event.content, metadata: { run_id: event.metadata.run_id } })
  }
  // type, session_id, seq first: readable on the wire, and the same bytes on every replay.
  const { type, session_id, ...rest } = event
  return JSON.stringify({ type, session_id, seq, ...rest })
}

/**
 * What a logged frame says about its run, read from its first bytes without parsing it:
 * every frame starts `{"type":"<type>","session_id":…,"seq":N,"content":…` (serializeEvent).
 */
export function frameKind(frame: string): 'thinking' | 'complete' | 'other' {
  if (frame.startsWith('{"type":"complete"')) return 'complete'
  if (frame.startsWith('{"type":"status"') && frame.includes(',"content":"thinking","metadata":')) return 'thinking'
  return 'other'
}
