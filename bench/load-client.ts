/**
 * Child process: one load-generator worker. Holds `ws` client connections (each its own user
 * and session, spread over source addresses 127.0.0.2… to escape the ephemeral-port limit)
 * and runs chat loops on them, counting what arrives. Token frames are recognised by their
 * first bytes, without parsing, so the client stays cheap next to the server it measures.
 *
 * Requests (see ipc.ts): open, run, sample, waitRuns, halt, status, closeAll, stop.
 */
import type { Socket } from 'node:net'
import WebSocket from 'ws'
import { createSigner } from 'fast-jwt'
import { emit, serveRequests } from './ipc.ts'
import { countWords, parseStamp, RUN_ID_PLACEHOLDER } from './prompts.ts'
import { until } from './until.ts'

export interface OpenArgs {
  url: string
  secret: string
  count: number
  /** Handshakes in flight at once (this worker). */
  inflight: number
  localAddresses: string[]
  timeoutMs: number
}

export interface OpenResult {
  opened: number
  failed: number
  /** hrtime (ns) when the first handshake started and when the last one ended. */
  startNs: number
  endNs: number
  errors: string[]
}

/** A chat loop on connections [from, from + count) of this worker. */
export interface LoadGroup {
  from: number
  count: number
  /** RUN_ID_PLACEHOLDER in it is replaced by a run id unique across workers. */
  prompt: string
  /** Token texts carry the upstream's emission time: record receipt latency. */
  stamped: boolean
  /** Send `cancel` after this many token frames (and record when), or never. */
  cancelAfterTokens: number | null
  /** Runs per connection, or unbounded until `stop`. */
  maxRuns: number | null
  /** Pause between a run's `complete` and the next `chat`. */
  gapMs: number
}

export interface Counters {
  tokenFrames: number
  completes: number
  cancelled: number
  /** Upstream tokens in completed runs (one word each) … */
  words: number
  /** … and the token frames that carried them: their quotient is the coalescing factor. */
  framesInCompleted: number
  errors: Record<string, number>
}

export interface CancelRecord {
  id: string
  sentNs: number
}

export interface Sample {
  counters: Counters
  latenciesUs: number[]
  cancels: CancelRecord[]
  atNs: number
}

export interface Status {
  open: number
  unexpectedCloses: Record<string, number>
}

const TOKEN_PREFIX = Buffer.from('{"type":"token",')

export function isTokenFrame(data: Buffer): boolean {
  return data.length > TOKEN_PREFIX.length && data.compare(TOKEN_PREFIX, 0, TOKEN_PREFIX.length, 0, TOKEN_PREFIX.length) === 0
}

const nowNs = (): number => Number(process.hrtime.bigint())

function emptyCounters(): Counters {
  return { tokenFrames: 0, completes: 0, cancelled: 0, words: 0, framesInCompleted: 0, errors: {} }
}

interface Client {
  ws: WebSocket
  index: number
  sessionId: string
  group: LoadGroup | null
  /** A chat was sent and its `complete` has not arrived. */
  active: boolean
  /** The loop has ended (maxRuns reached or stopped). */
  done: boolean
  runs: number
  runId: string
  runFrames: number
  cancelSent: boolean
  closedByUs: boolean
}

interface ServerFrameLike {
  type?: string
  seq?: number
  content?: string
  metadata?: { finish_reason?: string; code?: string }
}

export class LoadWorker {
  readonly #name: string
  #clients: Client[] = []
  #running = false
  #counters = emptyCounters()
  #latencies: number[] = []
  #cancels: CancelRecord[] = []
  /** Makes run ids unique across loops, phases and servers. */
  #runSerial = 0
  readonly #unexpectedCloses: Record<string, number> = {}

  constructor(name: string) {
    this.#name = name
  }

  async open(args: OpenArgs): Promise<OpenResult> {
    const sign = createSigner({ key: args.secret, algorithm: 'HS256', expiresIn: 3_600_000 })
    const first = this.#clients.length
    // Signed before the clock starts: the client's own crypto is not the server's handshake.
    const tokens = Array.from({ length: args.count }, (_, i) => sign({ sub: `${this.#name}-u${first + i}` }) as string)
    const result: OpenResult = { opened: 0, failed: 0, startNs: nowNs(), endNs: 0, errors: [] }
    let next = 0
    const lane = async () => {
      while (next < args.count) {
        const i = next++
        try {
          await this.#connect(args, first + i, tokens[i] as string)
          result.opened++
        } catch (err) {
          result.failed++
          if (result.errors.length < 5) result.errors.push(String((err as Error).message))
        }
      }
    }
    await Promise.all(Array.from({ length: Math.max(1, Math.min(args.inflight, args.count)) }, lane))
    result.endNs = nowNs()
    return result
  }

  #connect(args: OpenArgs, index: number, token: string): Promise<void> {
    const ws = new WebSocket(args.url, {
      headers: { authorization: `Bearer ${token}` },
      perMessageDeflate: false,
      skipUTF8Validation: true,
      handshakeTimeout: args.timeoutMs,
      localAddress: args.localAddresses[index % args.localAddresses.length] as string,
    })
    const client: Client = {
      ws,
      index,
      sessionId: `${this.#name}-s${index}`,
      group: null,
      active: false,
      done: true,
      runs: 0,
      runId: '',
      runFrames: 0,
      cancelSent: false,
      closedByUs: false,
    }
    return new Promise<void>((resolve, reject) => {
      let opened = false
      ws.once('open', () => {
        opened = true
        this.#clients.push(client)
        resolve()
      })
      ws.on('error', reject)
      ws.once('unexpected-response', (request, response) => {
        reject(new Error(`HTTP ${response.statusCode}`))
        request.destroy()
      })
      ws.on('message', (data) => this.#onMessage(client, data as Buffer))
      ws.once('close', (code) => {
        reject(new Error(`closed ${code} before open`))
        client.active = false
        client.done = true
        if (opened && !client.closedByUs) this.#unexpectedCloses[code] = (this.#unexpectedCloses[code] ?? 0) + 1
      })
    })
  }

  #onMessage(client: Client, data: Buffer): void {
    if (isTokenFrame(data)) {
      this.#counters.tokenFrames++
      client.runFrames++
      const group = client.group
      if (group?.stamped) {
        const receivedNs = nowNs()
        const stamp = parseStamp(String((JSON.parse(data.toString()) as ServerFrameLike).content))
        if (stamp !== null) this.#latencies.push((receivedNs - stamp) / 1000)
      }
      if (group?.cancelAfterTokens && !client.cancelSent && client.runFrames >= group.cancelAfterTokens) this.#cancel(client, true)
      return
    }
    const frame = JSON.parse(data.toString()) as ServerFrameLike
    if (frame.type === 'complete') {
      this.#counters.completes++
      this.#counters.words += countWords(frame.content ?? '')
      this.#counters.framesInCompleted += client.runFrames
      if (frame.metadata?.finish_reason === 'cancelled') this.#counters.cancelled++
      client.active = false
      this.#next(client)
    } else if (frame.type === 'error') {
      const code = frame.metadata?.code ?? 'unknown'
      this.#counters.errors[code] = (this.#counters.errors[code] ?? 0) + 1
      // A refused chat (no seq: it started no run) is retried; a run's error is followed by its complete.
      if (frame.seq === undefined && client.active && (code === 'busy' || code === 'rate_limited')) {
        client.active = false
        client.runs--
        setTimeout(() => this.#next(client), Math.max(10, (client.group as LoadGroup).gapMs))
      }
    }
  }

  #next(client: Client): void {
    const group = client.group
    if (!this.#running || !group || (group.maxRuns !== null && client.runs >= group.maxRuns) || client.ws.readyState !== WebSocket.OPEN) {
      client.done = true
      return
    }
    if (group.gapMs > 0) setTimeout(() => this.#start(client), group.gapMs)
    else this.#start(client)
  }

  #start(client: Client): void {
    if (!this.#running || client.ws.readyState !== WebSocket.OPEN) {
      client.done = true
      return
    }
    client.runs++
    client.runId = `${this.#name}.${client.index}.${++this.#runSerial}`
    client.runFrames = 0
    client.cancelSent = false
    client.active = true
    const content = (client.group as LoadGroup).prompt.replace(RUN_ID_PLACEHOLDER, client.runId)
    client.ws.send(JSON.stringify({ type: 'chat', session_id: client.sessionId, content }))
  }

  #cancel(client: Client, record: boolean): void {
    client.cancelSent = true
    if (record) this.#cancels.push({ id: client.runId, sentNs: nowNs() })
    client.ws.send(JSON.stringify({ type: 'cancel', session_id: client.sessionId }))
  }

  run(args: { groups: LoadGroup[] }): { started: number } {
    this.#running = true
    let started = 0
    for (const group of args.groups) {
      for (const client of this.#clients.slice(group.from, group.from + group.count)) {
        client.group = group
        client.runs = 0
        client.done = false
        this.#start(client)
        started++
      }
    }
    return { started }
  }

  /** What arrived since the previous sample. */
  sample(): Sample {
    const sample: Sample = { counters: this.#counters, latenciesUs: this.#latencies, cancels: this.#cancels, atNs: nowNs() }
    this.#counters = emptyCounters()
    this.#latencies = []
    this.#cancels = []
    return sample
  }

  /** Waits for every bounded loop (maxRuns) to finish. */
  async waitRuns(args: { timeoutMs: number }): Promise<{ unfinished: number }> {
    const bounded = () => this.#clients.filter((client) => client.group !== null && client.group.maxRuns !== null && !client.done)
    await until(() => bounded().length === 0, args.timeoutMs)
    return { unfinished: bounded().length }
  }

  /** Ends every loop: in-flight runs are cancelled and their `complete` awaited. */
  async halt(args: { timeoutMs: number }): Promise<{ stuck: number }> {
    this.#running = false
    for (const client of this.#clients) if (client.active && !client.cancelSent) this.#cancel(client, false)
    const active = () => this.#clients.filter((client) => client.active).length
    await until(() => active() === 0, args.timeoutMs)
    for (const client of this.#clients) client.group = null
    return { stuck: active() }
  }

  status(): Status {
    return { open: this.#clients.filter((client) => client.ws.readyState === WebSocket.OPEN).length, unexpectedCloses: { ...this.#unexpectedCloses } }
  }

  /**
   * Drops every connection with a TCP reset: a normal close would leave tens of thousands of
   * sockets in TIME_WAIT on the client addresses for a minute, which slows every handshake
   * measured after it (seen as one side's repetition suddenly 5× slower).
   */
  async closeAll(args: { timeoutMs: number }): Promise<{ closed: number }> {
    const clients = this.#clients
    this.#clients = []
    for (const client of clients) {
      client.closedByUs = true
      const socket = (client.ws as unknown as { _socket: Socket })._socket
      if (client.ws.readyState === WebSocket.OPEN) socket.resetAndDestroy()
      else client.ws.terminate()
    }
    await until(() => clients.every((client) => client.ws.readyState === WebSocket.CLOSED), args.timeoutMs)
    for (const key of Object.keys(this.#unexpectedCloses)) delete this.#unexpectedCloses[key]
    return { closed: clients.length }
  }
}

function main(): void {
  const worker = new LoadWorker(process.env.BENCH_WORKER_NAME as string)
  serveRequests({
    open: (args: OpenArgs) => worker.open(args),
    run: (args: { groups: LoadGroup[] }) => worker.run(args),
    sample: () => worker.sample(),
    waitRuns: (args: { timeoutMs: number }) => worker.waitRuns(args),
    halt: (args: { timeoutMs: number }) => worker.halt(args),
    stop: () => setImmediate(() => process.exit(0)),
    status: () => worker.status(),
    closeAll: (args: { timeoutMs: number }) => worker.closeAll(args),
  })
  emit('ready', null)
}

if (import.meta.main) main()
