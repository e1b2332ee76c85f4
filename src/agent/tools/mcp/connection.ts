import { setTimeout as sleep } from 'node:timers/promises'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import {
  ErrorCode,
  McpError,
  ToolListChangedNotificationSchema,
  type CallToolResult,
  type Tool as McpTool,
} from '@modelcontextprotocol/sdk/types.js'
import type { FastifyBaseLogger } from 'fastify'
import type { ToolProgress } from '../types.ts'
import type { McpServerConfig } from './config.ts'

export type { McpTool }

/** For readiness: `degraded` when down (it never makes the instance unready). */
export interface McpServerCheck {
  ok: boolean
  degraded?: true
  error?: string
}

/** Timings that are not configuration: tests shorten them. */
export interface McpTuning {
  /** Bounds the handshake and each listing, so a hung server cannot hold start-up. */
  connectTimeoutMs: number
  /** First reconnect delay; doubles per failed attempt up to `maxReconnectDelayMs`. */
  reconnectDelayMs: number
  maxReconnectDelayMs: number
}

export const DEFAULT_MCP_TUNING: McpTuning = { connectTimeoutMs: 10_000, reconnectDelayMs: 1000, maxReconnectDelayMs: 30_000 }

export interface McpConnectionOptions {
  server: McpServerConfig
  callTimeoutMs: number
  tuning: McpTuning
  log: FastifyBaseLogger
  /** The server's tools, listed again at each (re)connection and on `notifications/tools/list_changed`. */
  onTools(tools: McpTool[]): void
  /** The connection came up or went down. */
  onStatus?(up: boolean): void
}

export interface McpCallOptions {
  signal: AbortSignal
  onProgress?: ((progress: ToolProgress) => void) | undefined
}

/** Listing pages followed at most, so a server answering with a cursor forever cannot loop us. */
const MAX_LIST_PAGES = 100
/** How long closing waits for the server to acknowledge the end of its session. */
const TERMINATE_WAIT_MS = 1000
const CLIENT_INFO = { name: 'agent-gateway', version: '0.1.0' }

/**
 * Transport errors that mean the server is gone: fetch could not reach it, a stream it held
 * open broke, or it no longer knows our session (restarted). The SDK would leave requests in
 * flight on a broken stream waiting for their timeout; we close and reconnect instead.
 */
function isConnectionLost(error: Error): boolean {
  if (error instanceof StreamableHTTPError) return error.code === 404
  return error instanceof TypeError || /SSE stream disconnected|Maximum reconnection attempts/.test(error.message)
}

/**
 * One MCP server over Streamable HTTP: connects, lists its tools, calls them, and reconnects
 * with exponential backoff whenever the server goes away. Never throws out of its own
 * lifecycle: a server that is down is a status, and a call to it a rejected promise.
 */
export class McpConnection {
  readonly name: string
  readonly #options: McpConnectionOptions
  /** The client being connected, or connected. */
  #current: Client | undefined
  /** The same client once connected and listed: calls go to it. */
  #client: Client | undefined
  /** Why it is down; only read while it is. */
  #lastError = 'not connected yet'
  #attempt = 0
  #retry: NodeJS.Timeout | undefined
  #listGeneration = 0

  constructor(options: McpConnectionOptions) {
    this.name = options.server.name
    this.#options = options
  }

  /** For readiness: up, or why not. */
  status(): McpServerCheck {
    return this.#client ? { ok: true } : { ok: false, degraded: true, error: this.#lastError }
  }

  /** The first attempt; resolves once it succeeded or failed (then retries go on in the background). */
  async start(): Promise<void> {
    await this.#connect()
  }

  async callTool(name: string, args: Record<string, unknown>, options: McpCallOptions): Promise<CallToolResult> {
    const client = this.#client
    if (!client) throw new Error(`MCP server ${this.name} is unavailable: ${this.#lastError}`)
    try {
      return (await client.callTool({ name, arguments: args }, undefined, {
        // A signal of its own per call: the SDK never removes the listener it adds to it.
        signal: AbortSignal.any([options.signal]),
        timeout: this.#options.callTimeoutMs,
        onprogress: ({ progress, total, message }) => options.onProgress?.({ progress, total, message }),
      })) as CallToolResult
    } catch (error) {
      if (error instanceof McpError && error.code === ErrorCode.RequestTimeout && !options.signal.aborted) {
        throw new Error(`no answer within ${this.#options.callTimeoutMs} ms (MCP_CALL_TIMEOUT_MS); the call was cancelled`)
      }
      if (error instanceof McpError && error.code === ErrorCode.ConnectionClosed) {
        throw new Error(`MCP server ${this.name} went away during the call`)
      }
      throw error
    }
  }

  async close(): Promise<void> {
    clearTimeout(this.#retry)
    const client = this.#current
    this.#current = this.#client = undefined
    if (!client) return
    const transport = client.transport as StreamableHTTPClientTransport | undefined
    // Politely end the session (a DELETE), but never wait long on a server that does not answer.
    await Promise.race([transport?.terminateSession().catch(() => undefined), sleep(TERMINATE_WAIT_MS, undefined, { ref: false })])
    await client.close()
  }

  async #connect(): Promise<void> {
    const { server, tuning, log } = this.#options
    const client = new Client(CLIENT_INFO, { capabilities: {} })
    this.#current = client
    const transport = new StreamableHTTPClientTransport(new URL(server.url), {
      requestInit: { headers: server.headers ?? {} },
      // Our own backoff reconnects; the SDK's stream retries would only delay noticing.
      reconnectionOptions: { maxRetries: 0, initialReconnectionDelay: 0, maxReconnectionDelay: 0, reconnectionDelayGrowFactor: 1 },
    })
    client.onerror = (error) => {
      if (isConnectionLost(error)) this.#lost(client, error.message)
      else log.warn({ mcpServer: this.name, err: error }, 'MCP transport error')
    }
    client.onclose = () => this.#lost(client, 'the connection closed')
    client.setNotificationHandler(ToolListChangedNotificationSchema, () => this.#list(client).catch((err: unknown) => {
      log.warn({ mcpServer: this.name, err }, 'MCP tools could not be listed again after list_changed; keeping the previous list')
    }))
    try {
      await client.connect(transport, { timeout: tuning.connectTimeoutMs })
      await this.#list(client)
    } catch (error) {
      this.#lost(client, (error as Error).message)
      return
    }
    // Closed, or lost while listing: whoever did that already closed this client.
    if (client !== this.#current) return
    this.#client = client
    this.#attempt = 0
    log.info({ mcpServer: this.name, serverInfo: client.getServerVersion() }, 'MCP server connected')
    this.#options.onStatus?.(true)
  }

  /** Lists every page, and publishes the list unless a newer listing or another connection overtook it. */
  async #list(client: Client): Promise<void> {
    const generation = ++this.#listGeneration
    const tools: McpTool[] = []
    let cursor: string | undefined
    for (let page = 0; page < MAX_LIST_PAGES; page++) {
      const result = await client.listTools(cursor === undefined ? {} : { cursor }, { timeout: this.#options.tuning.connectTimeoutMs })
      tools.push(...result.tools)
      cursor = result.nextCursor
      if (cursor === undefined) break
    }
    if (generation !== this.#listGeneration || client !== this.#current) return
    this.#options.onTools(tools)
  }

  /** The connection failed or broke: close what is left of it, and retry later. */
  #lost(client: Client, reason: string): void {
    // Each failure reports several times (the error, the rejected request, the close): once is enough.
    if (client !== this.#current) return
    const wasUp = client === this.#client
    this.#current = this.#client = undefined
    this.#lastError = reason
    void client.close()
    if (wasUp) this.#options.onStatus?.(false)
    const { reconnectDelayMs, maxReconnectDelayMs } = this.#options.tuning
    const delay = Math.min(maxReconnectDelayMs, reconnectDelayMs * 2 ** this.#attempt++)
    this.#options.log.warn({ mcpServer: this.name, reason, retryInMs: delay }, 'MCP server unavailable; reconnecting')
    this.#retry = setTimeout(() => {
      this.#retry = undefined
      void this.#connect()
    }, delay)
    this.#retry.unref()
  }
}
