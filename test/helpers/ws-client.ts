import WebSocket from 'ws'
/** A server frame as a test reads it; tests validate shapes against the schemas separately. */
export interface Frame {
  type: string
  session_id: string
  seq?: number
  content?: string
  metadata?: Record<string, any>
}

export interface Closed {
  code: number
  reason: string
  at: number
}

/**
 * A real `ws` client over loopback that records every frame, raw and parsed, and lets a
 * test wait for the next frame matching a predicate.
 */
export class TestClient {
  readonly socket: WebSocket
  readonly frames: Frame[] = []
  readonly raw: string[] = []
  readonly opened: Promise<void>
  readonly closed: Promise<Closed>
  #cursor = 0
  #waiters: Array<() => void> = []

  constructor(url: string, options: { headers?: Record<string, string>; protocols?: string[]; origin?: string } = {}) {
    this.socket = new WebSocket(url, options.protocols ?? [], {
      headers: options.headers ?? {},
      ...(options.origin ? { origin: options.origin } : {}),
      perMessageDeflate: false,
    })
    this.opened = new Promise((resolve, reject) => {
      this.socket.once('open', () => resolve())
      this.socket.once('unexpected-response', (_req, res) => reject(new Error(`unexpected response ${res.statusCode}`)))
      this.socket.once('error', reject)
    })
    this.opened.catch(() => {})
    this.closed = new Promise((resolve) => {
      this.socket.once('close', (code, reason) => {
        resolve({ code, reason: reason.toString(), at: performance.now() })
        this.#wake()
      })
    })
    this.socket.on('error', () => {})
    this.socket.on('message', (data) => {
      const text = data.toString()
      this.raw.push(text)
      this.frames.push(JSON.parse(text))
      this.#wake()
    })
  }

  #wake(): void {
    const waiters = this.#waiters
    this.#waiters = []
    for (const wake of waiters) wake()
  }

  send(frame: unknown): void {
    this.socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame))
  }

  /** The next frame after the last one returned that matches, waiting up to `timeoutMs`. */
  async next(match: (frame: Frame) => boolean = () => true, timeoutMs = 5000): Promise<Frame> {
    const deadline = performance.now() + timeoutMs
    for (;;) {
      while (this.#cursor < this.frames.length) {
        const frame = this.frames[this.#cursor++] as Frame
        if (match(frame)) return frame
      }
      const remaining = deadline - performance.now()
      if (remaining <= 0 || this.socket.readyState === WebSocket.CLOSED) {
        throw new Error(`no matching frame within ${timeoutMs} ms; got ${JSON.stringify(this.frames.slice(-5))}`)
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining)
        this.#waiters.push(() => {
          clearTimeout(timer)
          resolve()
        })
      })
    }
  }

  nextOfType(type: string, timeoutMs?: number): Promise<Frame> {
    return this.next((frame) => frame.type === type, timeoutMs)
  }

  /** Frames up to and including the next `complete`. */
  async untilComplete(timeoutMs = 10_000): Promise<Frame[]> {
    const start = this.#cursor
    await this.nextOfType('complete', timeoutMs)
    return this.frames.slice(start, this.#cursor)
  }

  close(): void {
    this.socket.close()
  }
}

/** Opens a client and waits for the handshake; closes it at teardown. */
export async function connect(
  t: { teardown(fn: () => unknown): void },
  url: string,
  options?: ConstructorParameters<typeof TestClient>[1],
): Promise<TestClient> {
  const client = new TestClient(url, options)
  t.teardown(() => client.socket.terminate())
  await client.opened
  return client
}

export function bearer(token: string): { headers: Record<string, string> } {
  return { headers: { authorization: `Bearer ${token}` } }
}
