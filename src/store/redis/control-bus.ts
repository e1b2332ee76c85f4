import { TypeCompiler } from '@sinclair/typebox/compiler'
import type { Redis } from 'ioredis'
import { ControlMessage, type ControlBus } from '../types.ts'
import { closeRedis, type RedisLog, type SharedRedis } from './connections.ts'

const isControlMessage = TypeCompiler.Compile(ControlMessage)

export interface RedisControlBusOptions {
  /** Publishes. */
  commands: SharedRedis
  /** This bus's own connection, not yet connected: a subscribed connection serves nothing else. */
  subscriber: Redis
  channel: string
  log: RedisLog
}

/**
 * Control messages over Redis pub/sub: every instance hears every message and acts on the runs
 * it executes. Fire-and-forget suits them: a cancel nobody hears had no run to stop.
 */
export class RedisControlBus implements ControlBus {
  readonly #commands: SharedRedis
  readonly #subscriber: Redis
  readonly #channel: string
  readonly #log: RedisLog
  readonly #handlers = new Set<(message: ControlMessage) => void>()
  readonly #subscribed: Promise<void>
  #closed = false

  constructor(options: RedisControlBusOptions) {
    this.#commands = options.commands
    this.#subscriber = options.subscriber
    this.#channel = options.channel
    this.#log = options.log
    const { promise, resolve } = Promise.withResolvers<void>()
    this.#subscribed = promise
    // Subscribed on every (re)connect: the fail-fast client neither queues nor resubscribes.
    const subscribe = () => {
      this.#subscriber.subscribe(this.#channel).then(
        () => resolve(),
        (err: unknown) => this.#log.warn({ err }, 'control channel subscribe failed'),
      )
    }
    this.#subscriber.on('ready', subscribe)
    this.#subscriber.on('message', (_channel: string, text: string) => this.#receive(text))
  }

  /** True once the channel is subscribed, false if that took longer than `timeoutMs`. */
  async ready(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<false>((resolve) => (timer = setTimeout(resolve, timeoutMs, false)))
    try {
      return await Promise.race([this.#subscribed.then(() => true), timeout])
    } finally {
      clearTimeout(timer)
    }
  }

  #receive(text: string): void {
    let message: unknown
    try {
      message = JSON.parse(text)
    } catch {
      message = undefined
    }
    if (!isControlMessage.Check(message)) {
      this.#log.warn({ channel: this.#channel }, 'invalid control message ignored')
      return
    }
    for (const handler of this.#handlers) handler(message)
  }

  async publish(message: ControlMessage): Promise<void> {
    await this.#commands.client.publish(this.#channel, JSON.stringify(message))
  }

  onMessage(handler: (message: ControlMessage) => void): void {
    this.#handlers.add(handler)
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#handlers.clear()
    await closeRedis(this.#subscriber)
    await this.#commands.release()
  }
}
