import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http'
import { randomUUID } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { Server } from '@modelcontextprotocol/sdk/server/index.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import { CallToolRequestSchema, ListToolsRequestSchema, type CallToolResult, type Tool } from '@modelcontextprotocol/sdk/types.js'

export interface TestToolContext {
  /** Aborted when the client sends notifications/cancelled for this call. */
  signal: AbortSignal
  /** Sends notifications/progress, when the client asked for it. */
  progress(progress: number, total?: number, message?: string): Promise<void>
}

export interface TestTool {
  definition: Tool
  run(args: Record<string, unknown>, ctx: TestToolContext): Promise<CallToolResult> | CallToolResult
}

export interface TestMcpServer {
  url: string
  /** Headers of every HTTP request received. */
  headers: IncomingHttpHeaders[]
  /** Tool calls the server saw cancelled, with the reason the client gave. */
  cancelled: Array<{ tool: string; reason: unknown }>
  /** Tool calls received, by tool name. */
  calls: string[]
  /** While set, answers tools/list instead (pagination, slow listings). */
  listPage: ((cursor: string | undefined, tools: Tool[]) => Promise<{ tools: Tool[]; nextCursor?: string }>) | undefined
  /** While set, tools/list fails with this message. */
  failListings: string | undefined
  /** The next tools/call POST is answered with this HTTP status instead. */
  failNextCall: number | undefined
  /** Forgets every session while staying up, as a restarted server behind the same address would. */
  forgetSessions(): void
  /** Replaces the tools and tells every connected client (notifications/tools/list_changed). */
  setTools(tools: TestTool[]): Promise<void>
  /** The server goes away: every connection dropped at once, nothing listening. */
  kill(): Promise<void>
  /** Listens again on the same port, with no session of before. */
  restart(): Promise<void>
  close(): Promise<void>
}

interface Session {
  server: Server
  transport: StreamableHTTPServerTransport
}

/** A real MCP server (the official SDK's server side) over Streamable HTTP on loopback. */
export async function createTestMcpServer(initialTools: TestTool[], port = 0): Promise<TestMcpServer> {
  let tools = initialTools
  let sessions = new Map<string, Session>()
  const headers: IncomingHttpHeaders[] = []
  const cancelled: TestMcpServer['cancelled'] = []
  const calls: string[] = []

  const newSession = (): StreamableHTTPServerTransport => {
    const server = new Server({ name: 'test-mcp', version: '1.0.0' }, { capabilities: { tools: { listChanged: true } } })
    server.setRequestHandler(ListToolsRequestSchema, (request) => {
      if (state.failListings !== undefined) throw new Error(state.failListings)
      const definitions = tools.map((tool) => tool.definition)
      return state.listPage ? state.listPage(request.params?.cursor, definitions) : { tools: definitions }
    })
    server.setRequestHandler(CallToolRequestSchema, async (request, extra) => {
      const tool = tools.find((candidate) => candidate.definition.name === request.params.name)
      if (!tool) return { content: [{ type: 'text', text: `no tool ${request.params.name}` }], isError: true }
      calls.push(tool.definition.name)
      extra.signal.addEventListener('abort', () => cancelled.push({ tool: tool.definition.name, reason: extra.signal.reason }))
      const progressToken = request.params._meta?.progressToken
      return tool.run(request.params.arguments ?? {}, {
        signal: extra.signal,
        progress: async (progress, total, message) => {
          if (progressToken === undefined) return
          await extra.sendNotification({ method: 'notifications/progress', params: { progressToken, progress, total, message } })
        },
      })
    })
    const transport: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => {
        sessions.set(id, { server, transport })
      },
    })
    void server.connect(transport)
    return transport
  }

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    headers.push(req.headers)
    if (state.failNextCall !== undefined && req.method === 'POST' && req.headers['mcp-session-id'] !== undefined) {
      // Only a call arrives with a session id and a POST while a test has this set.
      res.writeHead(state.failNextCall).end('upstream trouble')
      state.failNextCall = undefined
      return
    }
    const id = req.headers['mcp-session-id']
    const session = typeof id === 'string' ? sessions.get(id) : undefined
    if (session) return void session.transport.handleRequest(req, res)
    if (id !== undefined) {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"jsonrpc":"2.0","error":{"code":-32001,"message":"Session not found"},"id":null}')
      return
    }
    void newSession().handleRequest(req, res)
  }

  let http = createServer(handle)
  const listen = async (onPort: number) => {
    await new Promise<void>((resolve) => http.listen(onPort, '127.0.0.1', resolve))
    return (http.address() as AddressInfo).port
  }
  const stop = async () => {
    for (const { server } of sessions.values()) await server.close().catch(() => undefined)
    sessions = new Map()
    http.closeAllConnections()
    await new Promise<void>((resolve) => http.close(() => resolve()))
  }
  const boundPort = await listen(port)
  let running = true

  const state: TestMcpServer = {
    failListings: undefined,
    listPage: undefined,
    failNextCall: undefined,
    forgetSessions() {
      sessions = new Map()
    },
    url: `http://127.0.0.1:${boundPort}/mcp`,
    headers,
    cancelled,
    calls,
    async setTools(next) {
      tools = next
      for (const { server } of sessions.values()) await server.sendToolListChanged()
    },
    async kill() {
      running = false
      // Dropped before the sessions end, as when the process dies: nothing is answered.
      http.closeAllConnections()
      await stop()
    },
    async restart() {
      http = createServer(handle)
      await listen(boundPort)
      running = true
    },
    async close() {
      if (running) await stop()
      running = false
    },
  }
  return state
}

/** A tool definition with a JSON Schema of the given properties (all required). */
export function toolDefinition(name: string, properties: Record<string, object> = {}, extra: Partial<Tool> = {}): Tool {
  return {
    name,
    description: `test tool ${name}`,
    inputSchema: { type: 'object', properties, required: Object.keys(properties), additionalProperties: false },
    ...extra,
  }
}

export function text(value: string): CallToolResult {
  return { content: [{ type: 'text', text: value }] }
}
