/**
 * Request/reply over the child_process IPC channel, both ends. Children (servers, upstream,
 * load clients) answer named requests and emit events; the orchestrator starts them through
 * a shell that first raises the soft fd limit to the hard one.
 */
import { spawn, type ChildProcess } from 'node:child_process'

export interface RequestMessage {
  kind: 'request'
  id: number
  cmd: string
  args: unknown
}

export interface ReplyMessage {
  kind: 'reply'
  id: number
  ok: boolean
  result?: unknown
  error?: string
}

export interface EventMessage {
  kind: 'event'
  name: string
  data: unknown
}

type ChildMessage = ReplyMessage | EventMessage

// Handlers take whatever the orchestrator sends; each child types its own arguments.
export type Handler = (args: any) => unknown

/** Children are only ever started by ChildHandle, with an IPC channel. */
function send(message: ReplyMessage | EventMessage): void {
  ;(process.send as NonNullable<typeof process.send>)(message)
}

/** Child side: answers the orchestrator's requests; exits when the orchestrator goes away. */
export function serveRequests(handlers: Record<string, Handler>): void {
  process.on('message', (message: RequestMessage) => {
    const handler = handlers[message.cmd]
    Promise.resolve()
      .then(() => {
        if (!handler) throw new Error(`unknown command ${message.cmd}`)
        return handler(message.args)
      })
      .then(
        (result) => send({ kind: 'reply', id: message.id, ok: true, result }),
        (err: unknown) => send({ kind: 'reply', id: message.id, ok: false, error: err instanceof Error ? String(err.stack) : String(err) }),
      )
  })
  // A child never outlives the orchestrator (hard timeout, crash, Ctrl-C).
  process.on('disconnect', () => process.exit(0))
}

export function emit(name: string, data: unknown): void {
  send({ kind: 'event', name, data })
}

export interface StartOptions {
  env: NodeJS.ProcessEnv
  execArgv?: string[]
  /** Names the child in errors and progress lines. */
  label: string
}

/** Every child started and not yet exited: the hard timeout kills these. */
const running = new Set<ChildHandle>()

export function killAll(): void {
  for (const child of running) child.kill()
}

/** Keeps the tail of a stream for error messages. */
function tail(limit: number): { push(chunk: string): void; text(): string } {
  let text = ''
  return {
    push(chunk) {
      text = (text + chunk).slice(-limit)
    },
    text: () => text,
  }
}

export class ChildHandle {
  readonly label: string
  readonly process: ChildProcess
  readonly exited: Promise<number | null>
  #nextId = 1
  readonly #pending = new Map<number, { resolve: (value: unknown) => void; reject: (err: Error) => void; timer: NodeJS.Timeout }>()
  readonly #listeners = new Map<string, Set<(data: unknown) => void>>()
  readonly #stderr = tail(4000)

  constructor(file: string, options: StartOptions) {
    this.label = options.label
    // `ulimit -n` in a shell wrapper: children get the hard fd limit as their soft one.
    this.process = spawn(
      '/bin/sh',
      ['-c', 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"', 'bench-child', process.execPath, ...(options.execArgv ?? []), file],
      { env: options.env, stdio: ['ignore', 'ignore', 'pipe', 'ipc'], serialization: 'advanced' },
    )
    running.add(this)
    ;(this.process.stderr as NodeJS.ReadableStream).setEncoding('utf8').on('data', (chunk: string) => this.#stderr.push(chunk))
    this.process.on('message', (message: ChildMessage) => this.#onMessage(message))
    // A send racing the child's exit: the pending request is rejected by the exit below.
    this.process.on('error', () => {})
    this.exited = new Promise((resolve) => {
      this.process.once('exit', (code) => {
        running.delete(this)
        const error = new Error(`${this.label} exited (code ${code}) ${this.#stderr.text()}`)
        for (const pending of this.#pending.values()) {
          clearTimeout(pending.timer)
          pending.reject(error)
        }
        this.#pending.clear()
        resolve(code)
      })
    })
  }

  get pid(): number {
    return this.process.pid as number
  }

  get stderr(): string {
    return this.#stderr.text()
  }

  #onMessage(message: ChildMessage): void {
    if (message.kind === 'event') {
      for (const listener of this.#listeners.get(message.name) ?? []) listener(message.data)
      return
    }
    const pending = this.#pending.get(message.id)
    if (!pending) return
    this.#pending.delete(message.id)
    clearTimeout(pending.timer)
    if (message.ok) pending.resolve(message.result)
    else pending.reject(new Error(`${this.label}: ${message.error}`))
  }

  request<T>(cmd: string, args: unknown, timeoutMs: number): Promise<T> {
    const id = this.#nextId++
    return new Promise<T>((resolve, reject) => {
      if (!this.process.connected) return reject(new Error(`${this.label}: ${cmd} after the child exited`))
      const timer = setTimeout(() => {
        this.#pending.delete(id)
        reject(new Error(`${this.label}: ${cmd} timed out after ${timeoutMs} ms`))
      }, timeoutMs)
      this.#pending.set(id, { resolve: resolve as (value: unknown) => void, reject, timer })
      this.process.send({ kind: 'request', id, cmd, args } satisfies RequestMessage)
    })
  }

  /** Calls `listener` with every `name` event; returns the unsubscribe. */
  on(name: string, listener: (data: unknown) => void): () => void {
    let listeners = this.#listeners.get(name)
    if (!listeners) this.#listeners.set(name, (listeners = new Set()))
    listeners.add(listener)
    return () => listeners.delete(listener)
  }

  /** The next `name` event, or an error when the child exits or the time is up first. */
  once<T>(name: string, timeoutMs: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.label}: no ${name} within ${timeoutMs} ms ${this.#stderr.text()}`)), timeoutMs)
      const off = this.on(name, (data) => {
        clearTimeout(timer)
        off()
        resolve(data as T)
      })
      void this.exited.then((code) => {
        clearTimeout(timer)
        reject(new Error(`${this.label} exited (code ${code}) before ${name}: ${this.#stderr.text()}`))
      })
    })
  }

  kill(): void {
    this.process.kill('SIGKILL')
  }

  /** Asks the child to stop; kills it when it has not exited within `timeoutMs`. */
  async stop(timeoutMs: number): Promise<void> {
    const stopped = this.request('stop', null, timeoutMs).catch(() => undefined)
    const timer = setTimeout(() => this.kill(), timeoutMs)
    await stopped
    await this.exited
    clearTimeout(timer)
  }
}
