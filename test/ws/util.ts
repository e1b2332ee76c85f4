import type { TestClient, Frame } from '../helpers/ws-client.ts'

/** Settings that keep the guards out of the way of tests about something else. */
export const roomy = { RATE_LIMIT_MESSAGES: 100_000, MAX_CONNECTIONS_PER_USER: 1000 } as const

/** The close, or `{ code: -1 }` after `ms` instead of hanging when the server wrongly keeps the socket. */
export async function closedWithin(client: TestClient, ms = 3000): Promise<{ code: number; reason: string }> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<{ code: number; reason: string }>((resolve) => {
    timer = setTimeout(() => resolve({ code: -1, reason: 'still open' }), ms)
  })
  const closed = await Promise.race([client.closed, timeout])
  clearTimeout(timer)
  return { code: closed.code, reason: closed.reason }
}

/** `content` of any frame (the union's pong has none). */
export function contentOf(frame: Frame): string | undefined {
  return (frame as { content?: string }).content
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Polls `condition` every 5 ms; throws after `timeoutMs`. */
export async function waitFor(condition: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = performance.now() + timeoutMs
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`waitFor: ${what} not met within ${timeoutMs} ms`)
    await sleep(5)
  }
}
