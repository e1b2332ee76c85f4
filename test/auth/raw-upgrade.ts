import net from 'node:net'
import { randomBytes } from 'node:crypto'

export interface RawFrame {
  opcode: number
  payload: Buffer
}

export interface RawUpgrade {
  socket: net.Socket
  /** The HTTP status line and headers the server answered. */
  status: number
  headers: Record<string, string>
  /** Frames read after the handshake (only while `read` is on). */
  frames: RawFrame[]
  /** Resolves when the server ends the TCP connection. */
  ended: Promise<number>
}

/**
 * A WebSocket handshake done by hand over a plain TCP socket, so a test controls what the
 * peer does afterwards: read the server's frames but never answer its close (`read: true`),
 * or stop reading altogether (`read: false`).
 */
export async function rawUpgrade(
  port: number,
  path: string,
  options: { headers?: Record<string, string>; read?: boolean } = {},
): Promise<RawUpgrade> {
  const socket = net.connect(port, '127.0.0.1')
  socket.on('error', () => {})
  const ended = new Promise<number>((resolve) => socket.once('close', () => resolve(performance.now())))
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve)
    socket.once('error', reject)
  })
  const headers = {
    host: `127.0.0.1:${port}`,
    upgrade: 'websocket',
    connection: 'Upgrade',
    'sec-websocket-key': randomBytes(16).toString('base64'),
    'sec-websocket-version': '13',
    ...options.headers,
  }
  socket.write(`GET ${path} HTTP/1.1\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`)
  let buffer = Buffer.alloc(0)
  const head = await new Promise<string>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk])
      const end = buffer.indexOf('\r\n\r\n')
      if (end === -1) return
      socket.off('data', onData)
      socket.pause()
      const text = buffer.subarray(0, end).toString('latin1')
      buffer = buffer.subarray(end + 4)
      resolve(text)
    }
    socket.on('data', onData)
    socket.once('close', () => reject(new Error('closed before the handshake answer')))
  })
  const [statusLine = '', ...lines] = head.split('\r\n')
  const parsedHeaders = Object.fromEntries(
    lines.map((line) => {
      const colon = line.indexOf(':')
      return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()]
    }),
  )
  const frames: RawFrame[] = []
  const parse = () => {
    // Server frames are unmasked; every frame this suite expects is under 126 bytes.
    while (buffer.length >= 2) {
      const length = (buffer[1] as number) & 0x7f
      if (length > 125 || buffer.length < 2 + length) return
      frames.push({ opcode: (buffer[0] as number) & 0x0f, payload: buffer.subarray(2, 2 + length) })
      buffer = buffer.subarray(2 + length)
    }
  }
  if (options.read !== false) {
    parse()
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk])
      parse()
    })
    socket.resume()
  }
  return { socket, status: Number(statusLine.split(' ')[1]), headers: parsedHeaders, frames, ended }
}

export function closeFrame(frame: RawFrame): { code: number; reason: string } {
  return { code: frame.payload.readUInt16BE(0), reason: frame.payload.subarray(2).toString('utf8') }
}
