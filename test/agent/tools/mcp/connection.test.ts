import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import pino from 'pino'
import { McpConnection, DEFAULT_MCP_TUNING, type McpTool } from '../../../../src/agent/tools/mcp/connection.ts'
import { createTestMcpServer, text, toolDefinition } from '../../../helpers/mcp-server.ts'
import { freePort } from '../../../helpers/free-port.ts'

const log = pino({ level: 'silent' })
const tuning = { ...DEFAULT_MCP_TUNING, reconnectDelayMs: 10, maxReconnectDelayMs: 20 }
const tool = (name: string) => ({ definition: toolDefinition(name), run: () => text(name) })

function connection(url: string, onTools: (tools: McpTool[]) => void = () => {}) {
  return new McpConnection({ server: { name: 's', url }, callTimeoutMs: 1000, tuning, log, onTools })
}

t.test('closing a connection that never came up', async (t) => {
  const down = connection(`http://127.0.0.1:${await freePort()}/mcp`)
  await down.start()
  t.match(down.status(), { ok: false, degraded: true })
  await down.close()
  await t.rejects(down.callTool('x', {}, { signal: new AbortController().signal }), /MCP server s is unavailable/)
})

t.test('closed while publishing its first listing: it never counts as up', async (t) => {
  const mcp = await createTestMcpServer([tool('a')])
  t.teardown(() => mcp.close())
  const conn: McpConnection = connection(mcp.url, () => void conn.close())
  await conn.start()
  t.equal(conn.status().ok, false)
})

t.test('listings follow every page, at most 100, and a newer listing wins over a slower older one', async (t) => {
  const mcp = await createTestMcpServer([tool('a'), tool('b'), tool('c')])
  t.teardown(() => mcp.close())
  mcp.listPage = async (cursor, tools) => {
    const at = Number(cursor ?? 0)
    return { tools: tools.slice(at, at + 1), ...(at + 1 < tools.length ? { nextCursor: String(at + 1) } : {}) }
  }
  const listings: string[][] = []
  const conn = connection(mcp.url, (tools) => listings.push(tools.map((listed) => listed.name)))
  t.teardown(() => conn.close())
  await conn.start()
  t.same(listings, [['a', 'b', 'c']], 'three pages')

  mcp.listPage = async (cursor) => ({ tools: [toolDefinition(`p${cursor ?? 0}`)], nextCursor: String(Number(cursor ?? 0) + 1) })
  await mcp.setTools([tool('x')])
  for (let i = 0; i < 500 && listings.length < 2; i++) await sleep(10)
  t.equal(listings[1]?.length, 100, 'an endless cursor stops after 100 pages')

  const slow = Promise.withResolvers<void>()
  let calls = 0
  mcp.listPage = async (_cursor, tools) => {
    const call = ++calls
    if (call === 1) await slow.promise
    return { tools: call === 1 ? [toolDefinition('stale')] : tools }
  }
  await mcp.setTools([tool('old')])
  for (let i = 0; i < 500 && calls < 1; i++) await sleep(10)
  await mcp.setTools([tool('new')])
  for (let i = 0; i < 500 && listings.length < 3; i++) await sleep(10)
  slow.resolve()
  await sleep(50)
  t.same(listings.slice(2), [['new']], 'the older, slower listing is dropped')
})
