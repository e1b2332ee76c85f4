/**
 * Child process: the baseline, the same job done minimally on plain `ws` — what Node can do
 * at best on this machine. HS256 JWT (fast-jwt, as the project) checked on the upgrade, the
 * contract's frames byte-compatible with the project's (type, session_id, seq first), runs
 * streamed from the same upstream: the project's own mock model in process, or the
 * OpenAI-format upstream over raw node:http with a hand-written SSE parser. No sessions
 * store, history, tools, validation schemas, logging or flow control.
 *
 * Env: PORT, JWT_SECRET, MODEL_PROVIDER (mock|openai), MOCK_TOKEN_DELAY_MS, OPENAI_BASE_URL.
 */
import http from 'node:http'
import { randomUUID } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { createVerifier } from 'fast-jwt'
import { WebSocketServer, type WebSocket } from 'ws'
import { createMockModel } from '../src/agent/models/mock-model.ts'
import { serveServer } from './server-stats.ts'

const SYSTEM_PROMPT = 'You are a helpful assistant.'

/** Streams a reply to `content`, calling `onText` per delta; rejects on failure and on abort. */
export type TextSource = (content: string, signal: AbortSignal, onText: (text: string) => void) => Promise<void>

export function mockSource(tokenDelayMs: number): TextSource {
  const model = createMockModel({ tokenDelayMs })
  return async (content, signal, onText) => {
    const messages = [
      { role: 'system' as const, content: SYSTEM_PROMPT },
      { role: 'user' as const, content },
    ]
    for await (const batch of model.stream({ messages, tools: [], signal })) {
      for (const chunk of batch) if (chunk.type === 'text') onText(chunk.text)
    }
  }
}

/** Calls `onData` with each SSE event's data; returns false after `[DONE]`. */
export function sseParser(onData: (data: string) => void): (chunk: string) => boolean {
  let buffer = ''
  return (chunk) => {
    buffer += chunk
    let end: number
    while ((end = buffer.indexOf('\n\n')) !== -1) {
      const event = buffer.slice(0, end)
      buffer = buffer.slice(end + 2)
      if (!event.startsWith('data: ')) continue
      const data = event.slice(6)
      if (data === '[DONE]') return false
      onData(data)
    }
    return true
  }
}

export function openAISource(baseURL: string): TextSource {
  const agent = new http.Agent({ keepAlive: true })
  const url = new URL(`${baseURL.replace(/\/$/, '')}/chat/completions`)
  return (content, signal, onText) =>
    new Promise<void>((resolve, reject) => {
      const body = JSON.stringify({
        model: 'bench',
        messages: [
          { role: 'system', content: SYSTEM_PROMPT },
          { role: 'user', content },
        ],
        stream: true,
        stream_options: { include_usage: true },
      })
      const request = http.request(url, {
        method: 'POST',
        agent,
        signal,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), authorization: 'Bearer bench' },
      })
      // On abort too: the caller tells a cancel from a failure by its signal.
      request.on('error', () => reject(new Error('upstream request failed')))
      request.on('response', (response) => {
        if (response.statusCode !== 200) {
          response.resume()
          reject(new Error(`upstream answered ${response.statusCode}`))
          return
        }
        response.setEncoding('utf8')
        const parse = sseParser((data) => {
          // Content chunks, the finish chunk (empty delta) and the usage chunk (no choices).
          const text = (JSON.parse(data) as { choices: Array<{ delta: { content?: string } }> }).choices[0]?.delta.content
          if (text) onText(text)
        })
        response.on('data', (chunk: string) => parse(chunk))
        response.on('end', () => resolve())
        response.on('error', () => reject(new Error('upstream response failed')))
      })
      request.end(body)
    })
}

interface Claims {
  sub: string
  exp: number
}

interface Session {
  seq: number
  active: AbortController | null
}

function frame(type: string, sessionId: string, seq: number | undefined, content: string | undefined, metadata: object): string {
  return JSON.stringify({ type, session_id: sessionId, seq, content, metadata })
}

export interface Baseline {
  server: http.Server
  close(): Promise<void>
}

export function startBaseline(options: { secret: string; source: TextSource }): Baseline {
  const verify = createVerifier({ key: options.secret, algorithms: ['HS256'], requiredClaims: ['sub', 'exp'] })
  const server = http.createServer((_request, response) => response.writeHead(404).end())
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 65_536 })

  server.on('upgrade', (request, socket, head) => {
    const token = /^Bearer (\S+)$/.exec(request.headers.authorization ?? '')?.[1]
    let claims: Claims | undefined
    try {
      claims = token ? (verify(token) as Claims) : undefined
    } catch {
      claims = undefined
    }
    wss.handleUpgrade(request, socket, head, (ws) => (claims ? accept(ws, claims) : ws.close(4001, 'invalid token')))
  })

  function accept(ws: WebSocket, claims: Claims): void {
    const sessions = new Map<string, Session>()
    const expiry = setTimeout(() => ws.close(4001, 'token expired'), Math.min(claims.exp * 1000 - Date.now(), 2 ** 31 - 1))
    expiry.unref()
    ws.on('close', () => {
      clearTimeout(expiry)
      for (const session of sessions.values()) session.active?.abort()
    })
    ws.on('message', (data) => {
      let message: { type?: string; session_id?: string; content?: string }
      try {
        message = JSON.parse(String(data))
      } catch {
        ws.send(frame('error', '', undefined, 'not JSON', { code: 'invalid_message', retryable: false }))
        return
      }
      const sessionId = message.session_id ?? randomUUID()
      let session = sessions.get(sessionId)
      if (!session) sessions.set(sessionId, (session = { seq: 0, active: null }))
      if (message.type === 'chat' && typeof message.content === 'string') run(ws, sessionId, session, message.content)
      else if (message.type === 'cancel') {
        if (session.active) session.active.abort()
        else ws.send(frame('error', sessionId, undefined, 'no active run', { code: 'no_active_run', retryable: false }))
      } else if (message.type === 'ping') ws.send(frame('pong', sessionId, undefined, undefined, {}))
      else ws.send(frame('error', sessionId, undefined, 'unknown message', { code: 'invalid_message', retryable: false }))
    })
  }

  function run(ws: WebSocket, sessionId: string, session: Session, content: string): void {
    if (session.active) {
      ws.send(frame('error', sessionId, undefined, 'busy', { code: 'busy', retryable: true, retry_after_ms: 1000 }))
      return
    }
    const controller = new AbortController()
    session.active = controller
    const runId = randomUUID()
    const send = (type: string, text: string | undefined, metadata: object) => {
      if (ws.readyState === ws.OPEN) ws.send(frame(type, sessionId, ++session.seq, text, metadata))
    }
    send('status', 'thinking', { run_id: runId })
    let produced = ''
    const finish = (reason: string) => {
      session.active = null
      send('complete', produced, { run_id: runId, finish_reason: reason })
    }
    options
      .source(content, controller.signal, (text) => {
        produced += text
        send('token', text, { run_id: runId })
      })
      .then(
        () => finish('stop'),
        () => {
          if (controller.signal.aborted) send('status', 'cancelled', { run_id: runId })
          else send('error', 'upstream failed', { run_id: runId, code: 'upstream_error', retryable: true })
          finish(controller.signal.aborted ? 'cancelled' : 'error')
        },
      )
  }

  async function close(): Promise<void> {
    for (const ws of wss.clients) ws.terminate()
    await new Promise((resolve) => server.close(resolve))
  }

  return { server, close }
}

async function main(): Promise<void> {
  const env = process.env
  const source = env.MODEL_PROVIDER === 'openai' ? openAISource(env.OPENAI_BASE_URL as string) : mockSource(Number(env.MOCK_TOKEN_DELAY_MS))
  const baseline = startBaseline({ secret: env.JWT_SECRET as string, source })
  await new Promise<void>((resolve) => baseline.server.listen(Number(env.PORT), '127.0.0.1', resolve))
  serveServer((baseline.server.address() as AddressInfo).port, baseline.close)
}

if (import.meta.main) await main()
