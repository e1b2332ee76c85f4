import type { ClientFrame, ClientTool, ErrorFrame, RunEvent, ServerFrame } from '../protocol/index.ts'
import { DEFAULT_BACKOFF, backoffDelay, type BackoffPolicy } from './backoff.ts'
import { AgentError } from './errors.ts'
import { RunControl, type RunRequestFrame, type RunStream } from './run-stream.ts'
import { restGet, type SessionHistory, type SessionList } from './rest.ts'

export type { SessionHistory, SessionList } from './rest.ts'
import { BEARER_PREFIX, Close, SESSION_ID_PATTERN, SUBPROTOCOL_NAME, randomId } from './wire.ts'

export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed'

export interface StateChange {
  state: ConnectionState
  /** The close that led here, when one did. */
  closeCode?: number
  closeReason?: string
  /** With `reconnecting`: milliseconds until the next attempt. */
  retryInMs?: number
  /** With `closed`: why the client gave up; absent after `close()`. */
  error?: AgentError
}

export interface TokenRequest {
  /** True when the server refused the last token (close 4001): return a fresh one, never the same. */
  refresh: boolean
}

/** Called before every (re)connect; browsers send the token as the `bearer.<jwt>` subprotocol. */
export type TokenProvider = (request: TokenRequest) => string | Promise<string>

export type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocket

export interface AgentClientOptions {
  /** e.g. `wss://example.com/ws/agent` */
  url: string | URL
  token: TokenProvider
  /** The session `chat()` uses unless told otherwise [a new random id]. */
  sessionId?: string
  backoff?: Partial<BackoffPolicy>
  /** Source of the backoff jitter [Math.random]. */
  random?: () => number
  /** Consecutive failed reconnects before giving up [Infinity]. */
  maxReconnectAttempts?: number
  /** Retries of a chat or resume the server refused as retryable (busy, rate_limited) [5]. */
  maxRetries?: number
  /** Ping after this long without a frame; reconnect when the next period stays silent too [30000; 0: off]. */
  heartbeatMs?: number
  /** Events a run holds for a reader that is not reading [10000]. */
  maxBufferedEvents?: number
  onStateChange?: (change: StateChange) => void
  /** Errors that belong to no run (e.g. a frame the server could not parse). */
  onError?: (error: AgentError) => void
  /** Another WebSocket implementation [globalThis.WebSocket]. */
  WebSocket?: WebSocketConstructor
  /** For the REST companions (`sessions()`, `history()`) [globalThis.fetch]. */
  fetch?: typeof fetch
  /**
   * (1.1) Tools this client runs (protocol.md §7), offered to the model with every chat; a call
   * of one is run here and its result sent back as `tool_output` (a throw: `is_error`).
   */
  tools?: Record<string, ClientToolHandler>
}

export interface ClientToolHandler {
  description?: string
  /** A JSON Schema object: the tool's arguments, as the model is told. */
  parameters: Record<string, unknown>
  /** Aborted when the run ends first. A non-string result is sent as JSON. */
  run(args: unknown, context: { signal: AbortSignal; callId: string; sessionId: string }): unknown
}

export interface RunOptions {
  /** [the client's `sessionId`] */
  sessionId?: string
  /** Idempotency key [random]; a retry with the same id never starts a second run. */
  id?: string
  /** Aborting it cancels the run. */
  signal?: AbortSignal
  /**
   * (1.1) When the session already has a run: wait for it here, then send [default]; `interrupt`:
   * the running one ends `cancelled` (`reason: "superseded"`) and this one runs right after;
   * `enqueue`: queued at the server at once (`status:queued`), run after the ones before it.
   */
  onBusy?: 'wait' | 'interrupt' | 'enqueue'
}

export interface ChatOptions extends RunOptions {
  /** (1.1) The id of an earlier user message this one replaces (`edit()`). */
  edit?: string
}

interface SessionState {
  readonly id: string
  /** Highest seq seen in the session: frames at or below it are duplicates (replays). */
  lastSeq: number
  /** The run streaming now; the session's next chats wait their turn (the server would say busy). */
  active: RunControl
  readonly waiting: RunControl[]
  retryTimer: ReturnType<typeof setTimeout> | undefined
}

const OPEN = 1

/**
 * A connection to the agent service that survives drops: it reconnects with backoff, resumes
 * every run from the last seq it saw, and retries unacknowledged chats under the same id.
 */
export class AgentClient {
  readonly sessionId: string
  readonly #url: string
  readonly #provideToken: TokenProvider
  readonly #WebSocket: WebSocketConstructor
  readonly #fetch: typeof fetch
  readonly #tools: Record<string, ClientToolHandler>
  readonly #clientTools: ClientTool[]
  readonly #backoff: BackoffPolicy
  readonly #random: () => number
  readonly #maxReconnectAttempts: number
  readonly #maxRetries: number
  readonly #heartbeatMs: number
  readonly #maxBufferedEvents: number
  readonly #onStateChange: ((change: StateChange) => void) | undefined
  readonly #onError: ((error: AgentError) => void) | undefined
  readonly #sessions = new Map<string, SessionState>()
  #state: ConnectionState = 'connecting'
  #socket: WebSocket | undefined
  #lastFrameAt = 0
  #pingOutstanding = false
  /** Consecutive failed attempts: the backoff exponent. */
  #attempt = 0
  #token: string | undefined
  #refusedToken: string | undefined
  #refreshToken = false
  #reconnectTimer: ReturnType<typeof setTimeout> | undefined
  #heartbeatTimer: ReturnType<typeof setInterval> | undefined
  /** Set once closed for good: what later chats fail with. */
  #closedBy: AgentError | undefined

  constructor(options: AgentClientOptions) {
    this.#url = new URL(options.url).href
    this.sessionId = options.sessionId ?? randomId()
    assertSessionId(this.sessionId)
    const Socket = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket
    if (!Socket) throw new TypeError('no WebSocket here: use Node 22+ or a browser, or pass options.WebSocket')
    this.#WebSocket = Socket
    this.#fetch = options.fetch ?? ((...args) => globalThis.fetch(...args))
    this.#tools = options.tools ?? {}
    this.#clientTools = Object.entries(this.#tools).map(([name, tool]) => ({ name, parameters: tool.parameters, ...(tool.description ? { description: tool.description } : {}) }))
    this.#provideToken = options.token
    this.#backoff = { ...DEFAULT_BACKOFF, ...options.backoff }
    this.#random = options.random ?? Math.random
    this.#maxReconnectAttempts = options.maxReconnectAttempts ?? Infinity
    this.#maxRetries = options.maxRetries ?? 5
    this.#heartbeatMs = options.heartbeatMs ?? 30_000
    this.#maxBufferedEvents = options.maxBufferedEvents ?? 10_000
    this.#onStateChange = options.onStateChange
    this.#onError = options.onError
    // After the constructor returns: callbacks may then use the client they were given to.
    queueMicrotask(() => void this.#connect())
  }

  get state(): ConnectionState {
    return this.#state
  }

  /**
   * Sends `content` and returns the run: iterate it for events, or await `text()`. Chats in one
   * session run one after another. Survives reconnects; fails only when the run cannot finish.
   */
  chat(content: string, options: ChatOptions = {}): RunStream {
    if (typeof content !== 'string' || content.length === 0) throw new TypeError('chat content must be a non-empty string')
    const sessionId = options.sessionId ?? this.sessionId
    const frame = { type: 'chat' as const, content, session_id: sessionId, id: runId(options), ...busyField(options), ...(options.edit ? { edit: options.edit } : {}) }
    return this.#run(this.#clientTools.length > 0 ? { ...frame, client_tools: this.#clientTools } : frame, options)
  }

  /** (1.1) Drops the session's last answer and answers its last user message again. */
  regenerate(options: RunOptions = {}): RunStream {
    return this.#run({ type: 'regenerate', session_id: options.sessionId ?? this.sessionId, id: runId(options), ...busyField(options) }, options)
  }

  /** (1.1) Replaces the user message `messageId` (ids: `history()`) with `content`; history after it is dropped. */
  edit(messageId: string, content: string, options: RunOptions = {}): RunStream {
    return this.chat(content, { ...options, edit: messageId })
  }

  /**
   * (1.1) Follows a run this client did not start (another tab's, or one still streaming when the
   * page reloaded: `history().active_run`): its events from its first held one, then live.
   */
  follow(runId: string, options: Pick<RunOptions, 'sessionId' | 'signal'> = {}): RunStream {
    const sessionId = options.sessionId ?? this.sessionId
    if (this.#sessions.has(sessionId)) throw new Error(`session ${sessionId} already has a run of this client`)
    // Never sent: the run exists already; a resume from 0 brings its events, others' are skipped.
    const stream = this.#run({ type: 'regenerate', session_id: sessionId, id: runId }, { ...options, onBusy: 'wait' }, runId)
    return stream
  }

  /** (1.1) The caller's sessions, most recently updated first (REST `GET /v1/sessions`). */
  async sessions(options: { limit?: number; cursor?: string } = {}): Promise<SessionList> {
    const query = new URLSearchParams()
    if (options.limit !== undefined) query.set('limit', String(options.limit))
    if (options.cursor !== undefined) query.set('cursor', options.cursor)
    return (await this.#rest(`/v1/sessions${query.size > 0 ? `?${query}` : ''}`)) as SessionList
  }

  /** (1.1) A session's conversation, message ids and active run (REST `GET /v1/sessions/{id}`). */
  async history(sessionId: string = this.sessionId): Promise<SessionHistory> {
    assertSessionId(sessionId)
    return (await this.#rest(`/v1/sessions/${sessionId}`)) as SessionHistory
  }

  async #rest(path: string): Promise<unknown> {
    return restGet(new URL(path, this.#url.replace(/^ws/, 'http')), await this.#provideToken({ refresh: false }), this.#fetch)
  }

  #run(frame: RunRequestFrame, options: RunOptions, following?: string): RunStream {
    const sessionId = frame.session_id
    assertSessionId(sessionId)
    const run = new RunControl({
      frame,
      maxBufferedEvents: this.#maxBufferedEvents,
      onCancel: (cancelled) => this.#cancel(cancelled),
      onAnswer: (answer) => void this.#send(answer),
    })
    if (following !== undefined) {
      run.runId = following
      run.sent = true
    }
    if (this.#closedBy) {
      run.fail(this.#closedBy)
      return run.stream
    }
    const { signal } = options
    if (signal?.aborted) {
      run.cancelLocally()
      return run.stream
    }
    if (signal) {
      const onAbort = () => run.requestCancel()
      signal.addEventListener('abort', onAbort, { once: true })
      run.onSettled(() => signal.removeEventListener('abort', onAbort))
    }
    const session = this.#sessions.get(sessionId)
    if (!session) {
      const created = { id: sessionId, lastSeq: 0, active: run, waiting: [], retryTimer: undefined }
      this.#sessions.set(sessionId, created)
      if (following === undefined) this.#sendChat(run)
      else if (this.#socket?.readyState === OPEN) this.#sync(created)
    } else if (options.onBusy === 'interrupt') {
      // Next in line here as at the server; its ack comes right after the running one's complete.
      session.waiting.unshift(run)
      this.#sendChat(run)
    } else if (options.onBusy === 'enqueue') {
      session.waiting.push(run)
      this.#sendChat(run)
    } else {
      session.waiting.push(run)
    }
    return run.stream
  }

  /** Closes for good: no reconnect; runs still going fail with code `closed`. */
  close(): void {
    this.#shutdown(undefined, {})
  }

  async #connect(): Promise<void> {
    this.#reconnectTimer = undefined
    if (this.#closedBy) return
    const refresh = this.#refreshToken
    let token: string
    try {
      token = await this.#provideToken({ refresh })
    } catch (err) {
      if (this.#closedBy) return
      // Not a refused token (that is a 4001 close): whoever mints tokens is down or unreachable.
      this.#report(new AgentError('unreachable', `the token provider failed: ${describe(err)}`, { retryable: true }))
      this.#retry({})
      return
    }
    if (this.#closedBy) return
    if (refresh && token === this.#refusedToken) {
      this.#shutdown(new AgentError('unauthorized', 'the server refused the token and the provider returned the same one', { closeCode: Close.unauthorized }), {})
      return
    }
    this.#refreshToken = false
    let socket: WebSocket
    try {
      socket = new this.#WebSocket(this.#url, [SUBPROTOCOL_NAME, BEARER_PREFIX + token])
    } catch (err) {
      // A token a subprotocol cannot carry, or a URL the platform refuses: retrying cannot help.
      this.#shutdown(new AgentError('unreachable', `cannot open a WebSocket: ${describe(err)}`), {})
      return
    }
    this.#token = token
    this.#socket = socket
    socket.addEventListener('open', () => this.#onOpen(socket))
    socket.addEventListener('message', (event) => this.#onMessage(socket, event.data))
    socket.addEventListener('close', (event) => this.#onClose(socket, event.code, event.reason))
    // An 'error' event is always followed by 'close', which decides what happens next.
  }

  #onOpen(socket: WebSocket): void {
    if (socket !== this.#socket) return
    this.#lastFrameAt = Date.now()
    this.#setState({ state: 'open' })
    this.#startHeartbeat(socket)
    for (const session of this.#sessions.values()) this.#sync(session)
  }

  /** Brings a session up to date on a fresh socket: resend its unacknowledged chat, or resume its run. */
  #sync(session: SessionState): void {
    clearTimeout(session.retryTimer)
    session.retryTimer = undefined
    const run = session.active
    if (!run.acknowledged) {
      this.#sendChat(run)
      return
    }
    this.#send({ type: 'resume', session_id: session.id, last_seq: session.lastSeq })
    if (run.cancelRequested) this.#send({ type: 'cancel', session_id: session.id })
  }

  #sendChat(run: RunControl): void {
    if (this.#send(run.chatFrame)) run.sent = true
  }

  #send(frame: ClientFrame): boolean {
    const socket = this.#socket
    if (socket?.readyState !== OPEN) return false
    socket.send(JSON.stringify(frame))
    return true
  }

  #onMessage(socket: WebSocket, data: unknown): void {
    if (socket !== this.#socket) return
    // The server answered: this connection works, so the backoff starts afresh next time.
    this.#attempt = 0
    this.#lastFrameAt = Date.now()
    this.#pingOutstanding = false
    let frame: ServerFrame
    try {
      frame = JSON.parse(String(data)) as ServerFrame
    } catch {
      this.#report(new AgentError('invalid_message', 'the server sent a frame that is not JSON'))
      return
    }
    if (frame.type === 'pong' || (frame.type === 'status' && frame.content === 'resumed')) return
    if (frame.type === 'error' && frame.seq === undefined) this.#onRefusal(frame)
    else this.#onRunEvent(frame as RunEvent)
  }

  #onRunEvent(frame: RunEvent): void {
    const session = this.#sessions.get(frame.session_id)
    if (!session) return
    const run = session.active
    if (!run.acknowledged) {
      if (frame.type !== 'status' || frame.content !== 'thinking' || frame.metadata.request_id !== run.id) return
      // The ack. Its seq is authoritative even below lastSeq: a session recreated after a restart starts over.
      run.runId = frame.metadata.run_id
      run.retries = 0
      session.lastSeq = frame.seq
      run.deliver(frame)
      if (run.cancelRequested) this.#send({ type: 'cancel', session_id: session.id })
      return
    }
    if (frame.seq <= session.lastSeq) return
    session.lastSeq = frame.seq
    if (frame.metadata.run_id !== run.runId) return
    run.deliver(frame)
    if (frame.type === 'status' && frame.content === 'tool_call' && frame.metadata.executor === 'client') this.#runClientTool(run, frame.metadata.tool, frame.metadata.call_id, frame.metadata.arguments)
    if (run.settled) this.#next(session)
  }

  /** A call of one of our tools: run it, send its output (the server ignores a second answer). */
  #runClientTool(run: RunControl, tool: string, callId: string, args: unknown): void {
    const handler = this.#tools[tool]
    if (!handler) return
    const controller = new AbortController()
    run.onSettled(() => controller.abort())
    const answer = (output: string, isError: boolean) => {
      if (!run.settled) this.#send({ type: 'tool_output', session_id: run.sessionId, call_id: callId, output, ...(isError ? { is_error: true } : {}) })
    }
    Promise.resolve()
      .then(() => handler.run(args, { signal: controller.signal, callId, sessionId: run.sessionId }))
      .then(
        (result) => answer(typeof result === 'string' ? result : JSON.stringify(result ?? null), false),
        (err: unknown) => answer(describe(err), true),
      )
  }

  /** An `error` without seq: the answer to one frame (chat, resume, cancel), not a run event. */
  #onRefusal(frame: ErrorFrame): void {
    const { code, retryable, request_id: requestId, retry_after_ms: retryAfterMs } = frame.metadata
    if (code === 'no_active_run') return // a cancel that crossed the run's complete
    if (code === 'not_pending') {
      // An answer to a call answered meanwhile (another tab) or ended: the run is not concerned.
      this.#report(new AgentError(code, frame.content, { retryable }))
      return
    }
    const session = this.#sessions.get(frame.session_id)
    if (!session || (requestId !== undefined && requestId !== session.active.id)) {
      this.#report(new AgentError(code, frame.content, { retryable }))
      return
    }
    const run = session.active
    if (retryable && run.retries < this.#maxRetries) {
      run.retries += 1
      const delay = retryAfterMs ?? backoffDelay(run.retries, this.#backoff, this.#random)
      clearTimeout(session.retryTimer)
      session.retryTimer = setTimeout(() => this.#sync(session), delay)
      return
    }
    run.fail(new AgentError(code, frame.content, { retryable }))
    this.#next(session)
  }

  /** The session's run ended: start its next waiting chat, or forget the session. */
  #next(session: SessionState): void {
    clearTimeout(session.retryTimer)
    session.retryTimer = undefined
    const next = session.waiting.shift()
    if (!next) {
      this.#sessions.delete(session.id)
      return
    }
    session.active = next
    this.#sendChat(next)
  }

  #cancel(run: RunControl): void {
    // A run that has not settled is always its session's active run or one of its waiting ones.
    const session = this.#sessions.get(run.sessionId) as SessionState
    if (session.active !== run) {
      session.waiting.splice(session.waiting.indexOf(run), 1)
      run.cancelLocally()
      return
    }
    if (!run.sent) {
      // The server never saw it: it ends here, as cancelled.
      run.cancelLocally()
      this.#next(session)
      return
    }
    if (run.cancelRequested) return
    run.cancelRequested = true
    // Unacknowledged: the cancel goes out with the ack, so it cannot overtake the chat.
    if (run.acknowledged) this.#send({ type: 'cancel', session_id: session.id })
  }

  #onClose(socket: WebSocket, code: number, reason: string): void {
    if (socket !== this.#socket) return
    this.#socket = undefined
    this.#stopHeartbeat()
    const change = { closeCode: code, closeReason: reason }
    const detail = `${code}${reason ? ` ${reason}` : ''}`
    switch (code) {
      case Close.unauthorized:
        // Never again with this token: the next attempt asks the provider for a fresh one.
        this.#refusedToken = this.#token
        this.#refreshToken = true
        this.#retry(change)
        return
      case Close.serviceRestart:
        this.#attempt = 0
        this.#retry(change, 0)
        return
      case Close.forbiddenOrigin:
        this.#shutdown(new AgentError('forbidden_origin', `the server refused this origin (${detail})`, { closeCode: code }), change)
        return
      case Close.policyViolation:
      case Close.messageTooBig:
        this.#shutdown(new AgentError('policy_violation', `the server closed the connection (${detail})`, { closeCode: code }), change)
        return
      case Close.normal:
        this.#shutdown(new AgentError('closed', 'the server closed the connection', { closeCode: code }), change)
        return
      default:
        this.#retry(change)
    }
  }

  #retry(change: Omit<StateChange, 'state'>, delay?: number): void {
    if (this.#attempt >= this.#maxReconnectAttempts) {
      const error = new AgentError('unreachable', `gave up after ${this.#attempt} reconnect attempts`, { retryable: true, closeCode: change.closeCode })
      this.#shutdown(error, change)
      return
    }
    const retryInMs = delay ?? backoffDelay(this.#attempt, this.#backoff, this.#random)
    this.#attempt += 1
    this.#setState({ state: 'reconnecting', ...change, retryInMs })
    this.#reconnectTimer = setTimeout(() => void this.#connect(), retryInMs)
  }

  #startHeartbeat(socket: WebSocket): void {
    if (this.#heartbeatMs <= 0) return
    this.#pingOutstanding = false
    this.#heartbeatTimer = setInterval(() => {
      if (Date.now() - this.#lastFrameAt < this.#heartbeatMs) return
      if (!this.#pingOutstanding) {
        this.#pingOutstanding = true
        this.#send({ type: 'ping' })
        return
      }
      // Silent through a whole period after a ping: the network went away without a close
      // (laptop sleep, Wi-Fi change). Treat it as dropped now rather than when TCP notices.
      this.#onClose(socket, 1006, 'heartbeat timeout')
      socket.close()
    }, this.#heartbeatMs)
  }

  #stopHeartbeat(): void {
    clearInterval(this.#heartbeatTimer)
    this.#heartbeatTimer = undefined
  }

  #shutdown(error: AgentError | undefined, change: Omit<StateChange, 'state'>): void {
    if (this.#closedBy) return
    const failure = error ?? new AgentError('closed', 'the client was closed')
    this.#closedBy = failure
    clearTimeout(this.#reconnectTimer)
    this.#stopHeartbeat()
    const socket = this.#socket
    this.#socket = undefined
    if (socket && socket.readyState <= OPEN) socket.close(Close.normal)
    this.#setState({ state: 'closed', ...change, ...(error ? { error } : {}) })
    for (const session of this.#sessions.values()) {
      clearTimeout(session.retryTimer)
      session.active.fail(failure)
      for (const run of session.waiting) run.fail(failure)
    }
    this.#sessions.clear()
  }

  #setState(change: StateChange): void {
    this.#state = change.state
    this.#onStateChange?.(change)
  }

  #report(error: AgentError): void {
    this.#onError?.(error)
  }
}

function assertSessionId(sessionId: string): void {
  if (!SESSION_ID_PATTERN.test(sessionId)) throw new TypeError('a session id is 1..128 characters of [A-Za-z0-9_-]')
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

function runId(options: RunOptions): string {
  const id = options.id ?? randomId()
  if (id.length === 0 || id.length > 128) throw new TypeError('a chat id is 1..128 characters')
  return id
}

function busyField(options: RunOptions): { on_busy?: 'interrupt' | 'enqueue' } {
  return options.onBusy === 'interrupt' || options.onBusy === 'enqueue' ? { on_busy: options.onBusy } : {}
}
