/**
 * The chat contents the load clients send, which tell the bench upstream what to stream.
 * The same prompt goes through the project server and the baseline unchanged, so both get
 * the same upstream behaviour.
 */

export type UpstreamPlan =
  /** `count` one-word tokens, written as fast as the socket takes them. */
  | { kind: 'flood'; count: number }
  /** `count` tokens `intervalMs` apart, each carrying the upstream's hrtime at emission. */
  | { kind: 'paced'; count: number; intervalMs: number; id: string | null }

/** Replaced by the load client with a run id unique across workers. */
export const RUN_ID_PLACEHOLDER = '{id}'

export function floodPrompt(count: number): string {
  return `bench flood ${count}`
}

/** `id` (usually RUN_ID_PLACEHOLDER) makes the upstream report when this request is closed. */
export function pacedPrompt(count: number, intervalMs: number, id = '-'): string {
  return `bench paced ${count} ${intervalMs} ${id}`
}

const PROMPT = /^bench (flood|paced) (\d+)(?: (\d+) (\S+))?$/

export function parsePrompt(text: string): UpstreamPlan | null {
  const match = PROMPT.exec(text)
  if (!match) return null
  const count = Number(match[2])
  if (match[1] === 'flood') return { kind: 'flood', count }
  if (match[3] === undefined) return null
  return { kind: 'paced', count, intervalMs: Number(match[3]), id: match[4] === '-' ? null : (match[4] as string) }
}

/**
 * A prompt for the offline mock model, which echoes it: `words` words give about
 * `words + 17` tokens. The words avoid what makes the mock call a tool (time, arithmetic).
 */
export function mockPrompt(words: number): string {
  return Array.from({ length: words }, (_, i) => `lorem${i % 10}`).join(' ')
}

/** A token's text carrying `process.hrtime.bigint()` (CLOCK_MONOTONIC: one clock for every process). */
export function stampText(nowNs: bigint): string {
  return ` s${nowNs}`
}

/** The nanosecond stamps in a token frame's text: one per upstream token, several when the server merged them. */
export function parseStamps(text: string): number[] {
  return Array.from(text.matchAll(/ s(\d+)/g), (match) => Number(match[1]))
}

/** Upstream tokens in a run's text: every token is one word with its leading space. */
export function countWords(text: string): number {
  return text.match(/\S+/g)?.length ?? 0
}
