import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type { ToolRegistry } from '../agent/tools/registry.ts'
import { createMcpTools, type McpTools, type McpTuning } from '../agent/tools/mcp/index.ts'
import type { Config } from '../config.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** The MCP tool servers (MCP_SERVERS): their tools live in the agent's tool registry. */
    mcp: McpTools
  }
}

export interface McpPluginOptions {
  config: Config
  tools: ToolRegistry
  tuning?: Partial<McpTuning> | undefined
}

/**
 * Connects to the configured MCP servers before the app listens, so their tools are there
 * for the first run. A server that does not answer only logs: it is reconnected in the
 * background and shows in readiness, which it never fails.
 */
async function mcpPlugin(app: FastifyInstance, options: McpPluginOptions) {
  const mcp = createMcpTools({
    servers: options.config.mcpServers,
    registry: options.tools,
    callTimeoutMs: options.config.MCP_CALL_TIMEOUT_MS,
    log: app.log,
    tuning: options.tuning,
    observer: app.metrics.mcpObserver,
  })
  app.decorate('mcp', mcp)
  app.addHook('onClose', () => mcp.close())
  await mcp.start()
}

export default fp(mcpPlugin, { name: 'mcp', fastify: '5.x', dependencies: ['metrics'] })
