import { TypeCompiler } from '@sinclair/typebox/compiler'
import { ControlMessage, type ControlBus } from '../types.ts'
import { closeRedis, type RedisClient, type RedisLog, type SharedRedis } from './connections.ts'

const isControlMessage = TypeCompiler.Compile(ControlMessage)

export interface RedisControlBusOptions {
  /** Publishes. */
  commands: SharedRedis
  /** This bus's own connection, not yet connected: a subscribed connection serves nothing else. */
  subscriber: RedisClient
  channel: string
  log: RedisLog
  /**
   * Sharded pub/sub (SSUBSCRIBE, SPUBLISH; Redis >= 7), for a cluster: the message stays within
   * the channel's shard instead of crossing the whole cluster bus.
   */
  sharded?: boolean
}

/**
 * Control messages over Redis pub/sub: every instance hears every message and acts on the runs
 * it executes. Fire-and-forget suits them: a cancel nobody hears had no run to stop.
 */
export class RedisControlBus implements ControlBus {
  readonly #commands: SharedRedis
  readonly #subscriber: RedisClient
  readonly #channel: string
  readonly #sharded: boolean
  readonly #log: RedisLog
  readonly #handlers = new Set<(message: ControlMessage) => void>()
  readonly #subscribed: Promise<void>
  #closed = false

  constructor(options: RedisControlBusOptions) {
    this.#commands = options.commands
    this.#subscriber = options.subscriber
    this.#channel = options.channel
    this.#log = options.log
    this.#sharded = options.sharded ?? false
    const { promise, resolve } = Promise.withResolvers<void>()
    this.#subscribed = promise
    // Subscribed on every (re)connect: the fail-fast client neither queues nor resubscribes.
    const subscribe = () => {
      const subscribed = this.#sharded ? this.#subscriber.ssubscribe(this.#channel) : this.#subscriber.subscribe(this.#channel)
      subscribed.then(
        () => resolve(),
        (err: unknown) => this.#log.warn({ err }, 'control channel subscribe failed'),
      )
    }
    this.#subscriber.on('ready', subscribe)
    this.#subscriber.on(this.#sharded ? 'smessage' : 'message', (_channel: string, text: string) => this.#receive(text))
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
    const text = JSON.stringify(message)
    await (this.#sharded ? this.#commands.client.spublish(this.#channel, text) : this.#commands.client.publish(this.#channel, text))
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
