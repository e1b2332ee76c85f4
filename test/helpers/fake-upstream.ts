/**
 * A scriptable, real HTTP server that speaks OpenAI's chat-completions wire
 * format (streaming SSE and, as a convenience, non-streaming JSON).
 *
 * Point the real `openai` SDK at it:
 *
 *   const up = await createFakeUpstream(() => ({ steps: textSteps('Hi there') }))
 *   t.teardown(() => up.close())
 *   const client = new OpenAI({ baseURL: up.baseURL, apiKey: 'test', maxRetries: 0 })
 *
 * Only node:http is used. Listens on 127.0.0.1, port 0.
 */
import http from 'node:http'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import { randomBytes } from 'node:crypto'
import { performance } from 'node:perf_hooks'

export type Step =
  /** A content delta chunk: choices[0].delta.content */
  | { text: string }
  /** A delta.tool_calls chunk. id/name belong on the first delta of a call; arguments are string fragments. */
  | { toolCalls: Array<{ index: number; id?: string; name?: string; arguments?: string }> }
  /** A chunk with choices[0].finish_reason set and an empty delta. */
  | { finish: 'stop' | 'length' | 'tool_calls' | 'content_filter' }
  /**
   * One SSE event whose data is this JSON, exactly as given (no id, role or usage added): a
   * server's own chunk shape, for the stream corpus (test/fixtures/streams/).
   */
  | { chunk: unknown }
  /** The usage chunk (choices: []), total_tokens is computed. */
  | { usage: { prompt_tokens: number; completion_tokens: number } }
  /** `data: [DONE]` (the response is ended when the steps run out, not by this step). */
  | { done: true }
  /** Wait before the next step; cut short when the request closes. */
  | { delayMs: number }
  /** SSE comment line `: ...` (keep-alive). */
  | { comment: string }
  /** Raw bytes written as they are (malformed SSE etc.). */
  | { raw: string }
  /** Destroy the socket abruptly (TCP RST where supported). */
  | { reset: true }
  /** Stop writing and never end, until the client closes (or the upstream is closed). */
  | { stall: true }
  /** `count` content chunks as fast as the socket allows, awaiting 'drain' when res.write returns false. */
  | { flood: { text: string; count: number } }

export interface Script {
  /** Default 200. Non-200 answers with an OpenAI-like JSON error body. */
  status?: number
  /** Extra response headers, e.g. { 'retry-after': '1' } or { 'retry-after-ms': '10' }. */
  headers?: Record<string, string>
  /** Overrides the JSON error body for non-200 statuses. */
  errorBody?: unknown
  /** For status 200: streamed as SSE. Defaults to textSteps(['Hello', ' world']) when omitted. */
  steps?: Step[]
}

export interface RecordedRequest {
  index: number
  /** Parsed JSON request body (the raw text if it was not JSON). */
  body: any
  headers: Record<string, string | string[] | undefined>
  method: string
  url: string
  /** performance.now() when the request body had been read. */
  receivedAt: number
  /** performance.now() when the response closed (finished, aborted by the client, or destroyed). */
  closedAt?: number
  /** True when the client closed before the server finished writing. */
  closedByClient: boolean
  /** Resolves when the response closed. Never rejects. */
  closed: Promise<void>
  /** True once res.write returned false (backpressure), in a flood or any other step. */
  backpressured: boolean
  /** performance.now() of the first time res.write returned false. */
  pausedAt?: number
  /** Number of SSE `data:` events written (chunks, usage chunk, [DONE]). */
  chunksWritten: number
}

export interface FakeUpstream {
  /** e.g. http://127.0.0.1:PORT/v1 */
  baseURL: string
  requests: RecordedRequest[]
  /** Replace the scripting function (applies to requests received afterwards). */
  script(fn: (req: RecordedRequest) => Script): void
  /**
   * The oldest request not yet returned by nextRequest(), or the next one to arrive.
   * Rejects if the upstream is (or gets) closed first.
   */
  nextRequest(): Promise<RecordedRequest>
  /** TCP connections accepted so far (keep-alive reuse shows as fewer connections than requests). */
  readonly connections: number
  /** Closes the server, destroys open sockets, ends running scripts. Never hangs. */
  close(): Promise<void>
}

type Usage = { prompt_tokens: number; completion_tokens: number }

/**
 * Splits a string into word tokens (leading whitespace kept with each word, so the
 * tokens join back to the original), or takes the array as is; then appends
 * finish 'stop', the usage chunk (if given) and [DONE]. With delayMs, every token
 * is preceded by a delay.
 */
export function textSteps(
  text: string | string[],
  opts: { delayMs?: number; usage?: Usage } = {},
): Step[] {
  const tokens = typeof text === 'string' ? splitWords(text) : text
  const steps: Step[] = []
  for (const token of tokens) {
    if (opts.delayMs !== undefined) steps.push({ delayMs: opts.delayMs })
    steps.push({ text: token })
  }
  steps.push({ finish: 'stop' })
  if (opts.usage) steps.push({ usage: { ...opts.usage } })
  steps.push({ done: true })
  return steps
}

function splitWords(text: string): string[] {
  const tokens: string[] = [...(text.match(/\s*\S+/g) ?? [])]
  const consumed = tokens.join('').length
  if (consumed < text.length) {
    const rest = text.slice(consumed)
    if (tokens.length === 0) tokens.push(rest)
    else tokens[tokens.length - 1] += rest
  }
  return tokens
}

const defaultScript = (): Script => ({ steps: textSteps(['Hello', ' world']) })

const ROUTES = new Set(['/v1/chat/completions', '/chat/completions'])

function errorType(status: number): { type: string; code: string | null } {
  if (status === 401) return { type: 'invalid_request_error', code: 'invalid_api_key' }
  if (status === 404) return { type: 'invalid_request_error', code: 'model_not_found' }
  if (status === 429) return { type: 'requests', code: 'rate_limit_exceeded' }
  if (status >= 500) return { type: 'server_error', code: null }
  return { type: 'invalid_request_error', code: null }
}

function defaultErrorBody(status: number, message?: string): unknown {
  const { type, code } = errorType(status)
  return {
    error: {
      message: message ?? `Fake upstream error (HTTP ${status})`,
      type,
      param: null,
      code,
    },
  }
}

function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const payload = JSON.stringify(body)
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(payload),
    ...headers,
  })
  res.end(payload)
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of req) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}

interface Conn {
  rec: RecordedRequest
  req: IncomingMessage
  res: ServerResponse
  /** Aborted when the response closes or the upstream shuts down. */
  stop: AbortController
  serverEnded: boolean
  serverDestroyed: boolean
}

export async function createFakeUpstream(
  script?: (req: RecordedRequest) => Script,
): Promise<FakeUpstream> {
  let scriptFn = script ?? defaultScript
  const requests: RecordedRequest[] = []
  const sockets = new Set<Socket>()
  const live = new Set<Conn>()
  let consumed = 0
  let waiters: Array<{ resolve: (r: RecordedRequest) => void; reject: (e: Error) => void }> = []
  let closing = false
  let closePromise: Promise<void> | undefined

  const server = http.createServer()
  let connections = 0
  server.on('connection', (socket) => {
    connections++
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  server.on('request', (req, res) => {
    handle(req, res).catch((err: unknown) => {
      // A bug in the helper itself: answer 500 if still possible, never crash the test process.
      if (!res.headersSent && !res.destroyed) {
        sendJson(res, 500, defaultErrorBody(500, `fake upstream failure: ${String(err)}`))
      } else {
        res.destroy()
      }
    })
  })

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0] ?? '/'
    let text: string
    try {
      text = await readBody(req)
    } catch {
      return // client went away while sending the body
    }
    if (req.method !== 'POST' || !ROUTES.has(path)) {
      sendJson(res, 404, defaultErrorBody(404, `Unknown route ${req.method} ${path}`))
      return
    }
    let body: any
    try {
      body = text === '' ? undefined : JSON.parse(text)
    } catch {
      body = text
    }

    const { promise: closed, resolve: resolveClosed } = Promise.withResolvers<void>()
    const rec: RecordedRequest = {
      index: requests.length,
      body,
      headers: { ...req.headers },
      method: req.method,
      url: req.url ?? path,
      receivedAt: performance.now(),
      closedByClient: false,
      closed,
      backpressured: false,
      chunksWritten: 0,
    }
    const conn: Conn = {
      rec,
      req,
      res,
      stop: new AbortController(),
      serverEnded: false,
      serverDestroyed: false,
    }
    live.add(conn)
    res.on('close', () => {
      rec.closedAt = performance.now()
      rec.closedByClient = !conn.serverEnded && !conn.serverDestroyed && !closing
      live.delete(conn)
      conn.stop.abort()
      resolveClosed()
    })
    requests.push(rec)
    const waiter = waiters.shift()
    if (waiter) {
      consumed++
      waiter.resolve(rec)
    }
    if (res.destroyed) {
      // The client was gone before the body had been read; 'close' may already have fired.
      if (rec.closedAt === undefined) {
        rec.closedAt = performance.now()
        rec.closedByClient = true
        resolveClosed()
      }
      live.delete(conn)
      return
    }

    let s: Script
    try {
      s = scriptFn(rec)
    } catch (err) {
      conn.serverEnded = true
      sendJson(res, 500, defaultErrorBody(500, `fake upstream script threw: ${String(err)}`))
      return
    }
    const status = s.status ?? 200
    if (status !== 200) {
      conn.serverEnded = true
      sendJson(res, status, s.errorBody ?? defaultErrorBody(status), s.headers)
      return
    }
    const steps = s.steps ?? defaultScript().steps ?? []
    if (body !== null && typeof body === 'object' && body.stream === true) {
      await streamSteps(conn, steps, s.headers ?? {})
    } else {
      await respondNonStreaming(conn, steps, s.headers ?? {})
    }
  }

  return await new Promise<FakeUpstream>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject)
      const { port } = server.address() as AddressInfo
      resolve({
        baseURL: `http://127.0.0.1:${port}/v1`,
        requests,
        get connections() {
          return connections
        },
        script(fn) {
          scriptFn = fn
        },
        nextRequest() {
          if (consumed < requests.length) {
            const rec = requests[consumed++]
            if (rec) return Promise.resolve(rec)
          }
          const p = closing
            ? Promise.reject(new Error('fake upstream is closed'))
            : new Promise<RecordedRequest>((res, rej) => {
                waiters.push({ resolve: res, reject: rej })
              })
          // A waiter rejected by close() must not count as an unhandled rejection
          // when the test never awaits it; awaiting it still throws.
          p.catch(() => {})
          return p
        },
        close() {
          closePromise ??= (async () => {
            closing = true
            for (const conn of live) conn.stop.abort()
            const pending = waiters
            waiters = []
            for (const w of pending) w.reject(new Error('fake upstream closed'))
            const serverClosed = new Promise<void>((r) => server.close(() => r()))
            server.closeAllConnections()
            for (const socket of sockets) socket.destroy()
            await serverClosed
          })()
          return closePromise
        },
      })
    })
  })
}

// ---------------------------------------------------------------------------
// Streaming

function newChunkId(): string {
  return `chatcmpl-${randomBytes(12).toString('hex')}`
}

async function streamSteps(conn: Conn, steps: Step[], extraHeaders: Record<string, string>): Promise<void> {
  const { rec, res, stop } = conn
  const id = newChunkId()
  const created = Math.floor(Date.now() / 1000)
  const model = typeof rec.body?.model === 'string' ? rec.body.model : 'fake-model'
  const includeUsage = rec.body?.stream_options?.include_usage === true
  let roleSent = false

  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    'x-request-id': `req_fake_${rec.index}`,
    ...extraHeaders,
  })
  res.flushHeaders()

  const gone = (): boolean => stop.signal.aborted || res.destroyed

  /** Waits for 'drain' or close. */
  const drained = (): Promise<void> =>
    new Promise<void>((resolve) => {
      const done = (): void => {
        res.off('drain', done)
        stop.signal.removeEventListener('abort', done)
        resolve()
      }
      res.on('drain', done)
      stop.signal.addEventListener('abort', done)
    })

  /** Writes, honouring backpressure. Returns false when the response is gone. */
  const write = async (data: string, isEvent: boolean): Promise<boolean> => {
    if (gone()) return false
    const ok = res.write(data)
    if (isEvent) rec.chunksWritten++
    if (!ok) {
      rec.backpressured = true
      rec.pausedAt ??= performance.now()
      await drained()
    }
    return !gone()
  }

  const chunk = (choices: unknown[], usage?: unknown): string => {
    const obj: Record<string, unknown> = {
      id,
      object: 'chat.completion.chunk',
      created,
      model,
      choices,
    }
    if (usage !== undefined) obj.usage = usage
    else if (includeUsage) obj.usage = null
    return `data: ${JSON.stringify(obj)}\n\n`
  }

  const deltaChunk = (delta: Record<string, unknown>): string => {
    const d = roleSent ? delta : { role: 'assistant', ...delta }
    roleSent = true
    return chunk([{ index: 0, delta: d, logprobs: null, finish_reason: null }])
  }

  for (const step of steps) {
    if (gone()) return
    if ('text' in step) {
      if (!(await write(deltaChunk({ content: step.text }), true))) return
    } else if ('toolCalls' in step) {
      const calls = step.toolCalls.map((c) => {
        const fn: Record<string, string> = {}
        if (c.name !== undefined) fn.name = c.name
        if (c.arguments !== undefined) fn.arguments = c.arguments
        else if (c.id !== undefined || c.name !== undefined) fn.arguments = ''
        const call: Record<string, unknown> = { index: c.index }
        if (c.id !== undefined) {
          call.id = c.id
          call.type = 'function'
        }
        call.function = fn
        return call
      })
      if (!(await write(deltaChunk({ tool_calls: calls }), true))) return
    } else if ('finish' in step) {
      const frame = chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: step.finish }])
      if (!(await write(frame, true))) return
    } else if ('usage' in step) {
      const u = step.usage
      const usage = {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.prompt_tokens + u.completion_tokens,
      }
      if (!(await write(chunk([], usage), true))) return
    } else if ('chunk' in step) {
      if (!(await write(`data: ${JSON.stringify(step.chunk)}\n\n`, true))) return
    } else if ('done' in step) {
      if (!(await write('data: [DONE]\n\n', true))) return
    } else if ('delayMs' in step) {
      await sleep(step.delayMs, stop.signal)
    } else if ('comment' in step) {
      if (!(await write(`: ${step.comment}\n\n`, false))) return
    } else if ('raw' in step) {
      if (!(await write(step.raw, false))) return
    } else if ('reset' in step) {
      conn.serverDestroyed = true
      const socket = res.socket
      if (socket && typeof socket.resetAndDestroy === 'function') socket.resetAndDestroy()
      else res.destroy()
      return
    } else if ('stall' in step) {
      await new Promise<void>((resolve) => {
        if (stop.signal.aborted) resolve()
        else stop.signal.addEventListener('abort', () => resolve(), { once: true })
      })
      return
    } else if ('flood' in step) {
      const { text, count } = step.flood
      for (let i = 0; i < count; i++) {
        if (!(await write(deltaChunk({ content: text }), true))) return
        // Let I/O (and close detection) run now and then even when the socket keeps up.
        if (i % 256 === 255 || (i % 16 === 15 && floodTurnSpent())) await new Promise<void>((r) => setImmediate(r))
      }
    }
  }
  if (gone()) return
  conn.serverEnded = true
  res.end()
}

/** How long this process's floods, all of them together, write before letting its I/O in. */
const FLOOD_TURN_MS = 2
let floodTurnStart: number | undefined

/**
 * True once the floods' writes of this turn took FLOOD_TURN_MS. A hundred floods of 256
 * writes each held this process's loop for tens of milliseconds a turn, and with it the
 * moment a client's close is seen: the bench's cancel latency measured this server, not the
 * client that closed.
 */
function floodTurnSpent(): boolean {
  const now = performance.now()
  if (floodTurnStart === undefined) {
    floodTurnStart = now
    setImmediate(() => (floodTurnStart = undefined))
    return false
  }
  return now - floodTurnStart > FLOOD_TURN_MS
}

// ---------------------------------------------------------------------------
// Non-streaming (stream !== true): the steps are folded into one chat.completion.

async function respondNonStreaming(conn: Conn, steps: Step[], extraHeaders: Record<string, string>): Promise<void> {
  const { rec, res, stop } = conn
  const model = typeof rec.body?.model === 'string' ? rec.body.model : 'fake-model'
  let content = ''
  let sawContent = false
  let finish: string | null = null
  let usage: Usage | undefined
  const calls: Array<{ id: string; type: 'function'; function: { name: string; arguments: string } }> = []
  for (const step of steps) {
    if (stop.signal.aborted || res.destroyed) return
    if ('text' in step) {
      content += step.text
      sawContent = true
    } else if ('flood' in step) {
      content += step.flood.text.repeat(step.flood.count)
      sawContent = true
    } else if ('toolCalls' in step) {
      for (const c of step.toolCalls) {
        const call = (calls[c.index] ??= { id: '', type: 'function', function: { name: '', arguments: '' } })
        if (c.id !== undefined) call.id = c.id
        if (c.name !== undefined) call.function.name += c.name
        if (c.arguments !== undefined) call.function.arguments += c.arguments
      }
    } else if ('finish' in step) {
      finish = step.finish
    } else if ('usage' in step) {
      usage = step.usage
    } else if ('delayMs' in step) {
      await sleep(step.delayMs, stop.signal)
    } else if ('reset' in step) {
      conn.serverDestroyed = true
      const socket = res.socket
      if (socket && typeof socket.resetAndDestroy === 'function') socket.resetAndDestroy()
      else res.destroy()
      return
    } else if ('stall' in step) {
      await new Promise<void>((resolve) => {
        if (stop.signal.aborted) resolve()
        else stop.signal.addEventListener('abort', () => resolve(), { once: true })
      })
      return
    }
    // done, comment, raw, chunk: no meaning without SSE
  }
  if (stop.signal.aborted || res.destroyed) return
  const message: Record<string, unknown> = {
    role: 'assistant',
    content: sawContent || calls.length === 0 ? content : null,
    refusal: null,
  }
  const toolCalls = calls.filter((c) => c !== undefined)
  if (toolCalls.length > 0) message.tool_calls = toolCalls
  const completion: Record<string, unknown> = {
    id: newChunkId(),
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [{ index: 0, message, logprobs: null, finish_reason: finish ?? 'stop' }],
  }
  if (usage) {
    completion.usage = {
      prompt_tokens: usage.prompt_tokens,
      completion_tokens: usage.completion_tokens,
      total_tokens: usage.prompt_tokens + usage.completion_tokens,
    }
  }
  conn.serverEnded = true
  sendJson(res, 200, completion, { 'x-request-id': `req_fake_${rec.index}`, ...extraHeaders })
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal.aborted) return resolve()
    const onAbort = (): void => {
      clearTimeout(timer)
      resolve()
    }
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal.addEventListener('abort', onAbort, { once: true })
  })
}
