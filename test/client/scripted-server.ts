import type { AddressInfo } from 'node:net'
import { WebSocketServer, type WebSocket } from 'ws'

/** One connection the SDK opened, as the scripted server saw it. */
export class ScriptedConnection {
  readonly socket: WebSocket
  readonly index: number
  /** The subprotocols the client offered. */
  readonly protocols: string[]
  readonly frames: Array<Record<string, any>> = []
  readonly closed: Promise<void>
  #cursor = 0
  #wake: (() => void) | undefined

  constructor(socket: WebSocket, index: number, protocols: string[]) {
    this.socket = socket
    this.index = index
    this.protocols = protocols
    socket.on('message', (data) => {
      this.frames.push(JSON.parse(data.toString()))
      this.#wake?.()
    })
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()))
  }

  /** The next frame the client sent, waiting up to `timeoutMs`. */
  async next(timeoutMs = 3000): Promise<Record<string, any>> {
    const deadline = performance.now() + timeoutMs
    while (this.#cursor >= this.frames.length) {
      const remaining = deadline - performance.now()
      if (remaining <= 0) throw new Error(`no frame from the client within ${timeoutMs} ms`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining)
        this.#wake = () => {
          clearTimeout(timer)
          resolve()
        }
      })
    }
    return this.frames[this.#cursor++] as Record<string, any>
  }

  send(frame: unknown): void {
    this.socket.send(JSON.stringify(frame))
  }

  close(code: number, reason = ''): void {
    this.socket.close(code, reason)
  }
}

/**
 * A real WebSocket server on loopback whose every answer the test scripts: for the close codes
 * and error frames a real gateway only sends in situations too slow or rare to stage.
 */
export class ScriptedServer {
  readonly url: string
  readonly connections: ScriptedConnection[] = []
  readonly #server: WebSocketServer
  #waiters: Array<() => void> = []

  private constructor(server: WebSocketServer, onConnection: (connection: ScriptedConnection) => void) {
    this.#server = server
    this.url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}/ws/agent`
    server.on('connection', (socket, request) => {
      const offered = (request.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim())
      const connection = new ScriptedConnection(socket, this.connections.length, offered)
      this.connections.push(connection)
      onConnection(connection)
      for (const wake of this.#waiters.splice(0)) wake()
    })
  }

  static async start(t: { teardown(fn: () => unknown): void }, onConnection: (connection: ScriptedConnection) => void = () => {}): Promise<ScriptedServer> {
    const server = new WebSocketServer({
      host: '127.0.0.1',
      port: 0,
      handleProtocols: (protocols) => (protocols.has('agent.v1') ? 'agent.v1' : false),
    })
    await new Promise<void>((resolve) => server.once('listening', () => resolve()))
    const scripted = new ScriptedServer(server, onConnection)
    t.teardown(() => scripted.close())
    return scripted
  }

  /** The `index`th connection (0-based), waiting up to `timeoutMs` for it. */
  async connection(index: number, timeoutMs = 3000): Promise<ScriptedConnection> {
    const deadline = performance.now() + timeoutMs
    while (this.connections.length <= index) {
      const remaining = deadline - performance.now()
      if (remaining <= 0) throw new Error(`connection #${index} did not come within ${timeoutMs} ms (got ${this.connections.length})`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining)
        this.#waiters.push(() => {
          clearTimeout(timer)
          resolve()
        })
      })
    }
    return this.connections[index] as ScriptedConnection
  }

  close(): Promise<void> {
    for (const socket of this.#server.clients) socket.terminate()
    return new Promise((resolve) => this.#server.close(() => resolve()))
  }
}

/** Frames of one run as the gateway would send them. */
export function runFrames(sessionId: string, runId: string, requestId: string, firstSeq: number, words: string[]) {
  const frames: Array<Record<string, any>> = [
    { type: 'status', session_id: sessionId, seq: firstSeq, content: 'thinking', metadata: { run_id: runId, request_id: requestId } },
  ]
  for (const word of words) {
    frames.push({ type: 'token', session_id: sessionId, seq: firstSeq + frames.length, content: word, metadata: { run_id: runId } })
  }
  frames.push({
    type: 'complete',
    session_id: sessionId,
    seq: firstSeq + frames.length,
    content: words.join(''),
    metadata: { run_id: runId, finish_reason: 'stop', request_id: requestId },
  })
  return frames
}

export function wait(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
