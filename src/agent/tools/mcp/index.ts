import type { FastifyBaseLogger } from 'fastify'
import type { ToolRegistry } from '../registry.ts'
import type { McpServerConfig } from './config.ts'
import { DEFAULT_MCP_TUNING, McpConnection, type McpServerCheck, type McpTuning } from './connection.ts'
import { mcpToolsOf, type McpObserver } from './tools.ts'

export { parseMcpServers, McpServerConfig } from './config.ts'
export { DEFAULT_MCP_TUNING, type McpServerCheck, type McpTuning } from './connection.ts'
export { exposedName, type McpObserver, type McpCallOutcome } from './tools.ts'

export interface McpTools {
  /** Servers configured. */
  readonly size: number
  /** Connects to every server once; resolves whether they answered or not. */
  start(): Promise<void>
  /** Each server, up or why not. */
  checks(): Record<string, McpServerCheck>
  close(): Promise<void>
}

export interface McpToolsOptions {
  servers: McpServerConfig[]
  /** Each server's tools are kept in it under the server's name, replaced on every listing. */
  registry: ToolRegistry
  callTimeoutMs: number
  log: FastifyBaseLogger
  tuning?: Partial<McpTuning> | undefined
  observer?: McpObserver | undefined
}

/** The configured MCP servers, their tools published into the registry as they are listed. */
export function createMcpTools(options: McpToolsOptions): McpTools {
  const { registry, log, observer } = options
  const tuning = { ...DEFAULT_MCP_TUNING, ...options.tuning }
  const connections = options.servers.map((server) => {
    const connection: McpConnection = new McpConnection({
      server,
      callTimeoutMs: options.callTimeoutMs,
      tuning,
      log,
      onStatus: (up) => observer?.status(server.name, up),
      onTools(listed) {
        const tools = mcpToolsOf({ server, listed, connection, observer, log })
        try {
          registry.replace(server.name, tools)
          log.info({ mcpServer: server.name, tools: tools.map((tool) => tool.name) }, 'MCP tools listed')
        } catch (err) {
          log.error({ mcpServer: server.name, err }, 'MCP tools could not be registered; keeping the previous ones')
        }
      },
    })
    return connection
  })
  for (const { name } of connections) observer?.status(name, false)

  return {
    size: connections.length,
    start: async () => {
      await Promise.all(connections.map((connection) => connection.start()))
    },
    checks: () => Object.fromEntries(connections.map((connection) => [connection.name, connection.status()])),
    close: async () => {
      await Promise.all(connections.map((connection) => connection.close()))
    },
  }
}
