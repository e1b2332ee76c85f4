/**
 * Child process: one load-generator worker. Holds `ws` client connections (each its own user
 * and session, spread over source addresses 127.0.0.2… to escape the ephemeral-port limit)
 * and runs chat loops on them, counting what arrives. Token frames are recognised by their
 * first bytes and their upstream tokens counted by their spaces, without parsing, so the
 * client stays cheap next to the server it measures. Watching connections (opened with
 * `watch`) belong to the same users as the first chatting ones and `resume` their sessions,
 * usually on another instance.
 *
 * Requests (see ipc.ts): open, run, sample, waitRuns, halt, status, closeAll, cycles, stop.
 */
import type { Socket } from 'node:net'
import WebSocket from 'ws'
import { createSigner } from 'fast-jwt'
import { runCycles, type CycleArgs } from './cycles.ts'
import { isTokenFrame, tokensInFrame } from './frames.ts'
import { emit, serveRequests } from './ipc.ts'
import { countWords, parseStamps, RUN_ID_PLACEHOLDER } from './prompts.ts'
import { until } from './until.ts'

export interface OpenArgs {
  url: string
  secret: string
  count: number
  /** Handshakes in flight at once (this worker). */
  inflight: number
  localAddresses: string[]
  timeoutMs: number
  /**
   * Watching connections: the i-th one opened belongs to the user of the i-th chatting one
   * and resumes its session when that one's first run starts.
   */
  watch?: boolean
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
  /** Token frames at the chatting connections … */
  tokenFrames: number
  /** … and the upstream tokens they carried (several per frame when the server coalesces). */
  tokens: number
  completes: number
  cancelled: number
  /** Completed runs whose token frames did not carry as many tokens as their `complete`'s text: a miscount. */
  miscountedRuns: number
  /** Token frames and tokens at the watching connections. */
  watchFrames: number
  watchTokens: number
  watchErrors: number
  /** By code; a watching connection's errors are `watch:<code>`. */
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
  /** Chatting connections whose loop runs, and those of them that received a token since it started. */
  running: number
  streaming: number
  unexpectedCloses: Record<string, number>
}

const nowNs = (): number => Number(process.hrtime.bigint())

function emptyCounters(): Counters {
  return { tokenFrames: 0, tokens: 0, completes: 0, cancelled: 0, miscountedRuns: 0, watchFrames: 0, watchTokens: 0, watchErrors: 0, errors: {} }
}

interface Client {
  ws: WebSocket
  index: number
  /** Resumes the sessions of another connection of its user instead of chatting. */
  watching: boolean
  sessionId: string
  group: LoadGroup | null
  /** A chat was sent and its `complete` has not arrived. */
  active: boolean
  /** The loop has ended (maxRuns reached or stopped). */
  done: boolean
  runs: number
  runId: string
  runFrames: number
  runTokens: number
  /** A token frame arrived since its loop started. */
  streamed: boolean
  cancelSent: boolean
  closedByUs: boolean
  /** A chatting connection whose watcher (if any) was told to resume. */
  resumed: boolean
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
  /** Watching connections by index: each watches the sessions of the chatting one of its index (its user). */
  #watchers = new Map<number, Client>()
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
    const first = args.watch ? this.#watchers.size : this.#clients.length
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
      watching: args.watch === true,
      sessionId: `${this.#name}-s${index}`,
      group: null,
      active: false,
      done: true,
      runs: 0,
      runId: '',
      runFrames: 0,
      runTokens: 0,
      streamed: false,
      cancelSent: false,
      closedByUs: false,
      resumed: false,
    }
    return new Promise<void>((resolve, reject) => {
      let opened = false
      ws.once('open', () => {
        opened = true
        if (client.watching) this.#watchers.set(index, client)
        else this.#clients.push(client)
        resolve()
      })
      ws.on('error', reject)
      ws.once('unexpected-response', (request, response) => {
        reject(new Error(`HTTP ${response.statusCode}`))
        request.destroy()
      })
      ws.on('message', (data) => this.#onMessage(client, data as Buffer))
      ws.once('close', (code, reason) => {
        reject(new Error(`closed ${code} before open`))
        client.active = false
        client.done = true
        if (opened && !client.closedByUs) {
          // By code and reason (`1011 store unavailable`): what the server said is the diagnosis.
          const key = `${code}${reason.length > 0 ? ` ${reason}` : ''}`
          this.#unexpectedCloses[key] = (this.#unexpectedCloses[key] ?? 0) + 1
        }
      })
    })
  }

  #onMessage(client: Client, data: Buffer): void {
    if (client.watching) return this.#onWatched(data)
    if (isTokenFrame(data)) {
      const tokens = tokensInFrame(data)
      this.#counters.tokenFrames++
      this.#counters.tokens += tokens
      client.runFrames++
      client.runTokens += tokens
      client.streamed = true
      const group = client.group
      if (group?.stamped) {
        const receivedNs = nowNs()
        // A merged frame carries several stamps: each token's latency includes its wait for the merge.
        for (const stamp of parseStamps(String((JSON.parse(data.toString()) as ServerFrameLike).content))) this.#latencies.push((receivedNs - stamp) / 1000)
      }
      if (group?.cancelAfterTokens && !client.cancelSent && client.runFrames >= group.cancelAfterTokens) this.#cancel(client, true)
      return
    }
    const frame = JSON.parse(data.toString()) as ServerFrameLike
    if (frame.seq !== undefined && !client.resumed) this.#resumeWatcher(client, frame.seq)
    if (frame.type === 'complete') {
      this.#counters.completes++
      if (countWords(frame.content ?? '') !== client.runTokens) this.#counters.miscountedRuns++
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

  /** A watching connection counts token frames and errors; it starts nothing. */
  #onWatched(data: Buffer): void {
    if (isTokenFrame(data)) {
      this.#counters.watchFrames++
      this.#counters.watchTokens += tokensInFrame(data)
      return
    }
    const frame = JSON.parse(data.toString()) as ServerFrameLike
    if (frame.type === 'error') {
      this.#counters.watchErrors++
      const code = `watch:${frame.metadata?.code ?? 'unknown'}`
      this.#counters.errors[code] = (this.#counters.errors[code] ?? 0) + 1
    }
  }

  /** The chatting connection's first sequenced frame: its watcher, if any, resumes from it (a closed one drops the send). */
  #resumeWatcher(client: Client, seq: number): void {
    client.resumed = true
    this.#watchers.get(client.index)?.ws.send(JSON.stringify({ type: 'resume', session_id: client.sessionId, last_seq: seq - 1 }))
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
    client.runTokens = 0
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
        client.streamed = false
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
    const open = [...this.#clients, ...this.#watchers.values()].filter((client) => client.ws.readyState === WebSocket.OPEN).length
    const running = this.#clients.filter((client) => client.group !== null && !client.done)
    return { open, running: running.length, streaming: running.filter((client) => client.streamed).length, unexpectedCloses: { ...this.#unexpectedCloses } }
  }

  /**
   * Drops every connection with a TCP reset: a normal close would leave tens of thousands of
   * sockets in TIME_WAIT on the client addresses for a minute, which slows every handshake
   * measured after it (seen as one side's repetition suddenly 5× slower).
   */
  async closeAll(args: { timeoutMs: number }): Promise<{ closed: number }> {
    const clients = [...this.#clients, ...this.#watchers.values()]
    this.#clients = []
    this.#watchers = new Map()
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
    cycles: (args: CycleArgs) => runCycles(process.env.BENCH_WORKER_NAME as string, args),
  })
  emit('ready', null)
}

if (import.meta.main) main()
