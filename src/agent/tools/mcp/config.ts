import { readFileSync } from 'node:fs'
import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'

/** `<server>__<tool>` must fit OpenAI's 64 characters: the server's part stays short, and never holds `__`. */
const SERVER_NAME = '^(?!.*__)[a-zA-Z0-9][a-zA-Z0-9_-]{0,31}$'

export const McpServerConfig = Type.Object(
  {
    name: Type.String({ pattern: SERVER_NAME, description: 'prefix of its tools: the model sees <name>__<tool>' }),
    url: Type.String({ pattern: '^https?://', description: 'the Streamable HTTP endpoint' }),
    headers: Type.Optional(Type.Record(Type.String(), Type.String(), { description: 'sent with every request, e.g. Authorization' })),
    tools: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { description: "the server's tools to expose (by its names) [all]" })),
  },
  { additionalProperties: false },
)
export type McpServerConfig = Static<typeof McpServerConfig>

const McpServersConfig = Type.Array(McpServerConfig)

function readList(raw: string): unknown {
  // JSON starts with a bracket or a brace; no file path we accept does.
  const text = /^\s*[[{]/.test(raw) ? raw : readFileSync(raw.trim(), 'utf8')
  return JSON.parse(text)
}

/**
 * MCP_SERVERS: a JSON list of servers, or the path of a file holding one. Throws an Error
 * saying what is wrong (the caller names the variable); headers never appear in it.
 */
export function parseMcpServers(raw: string | undefined): McpServerConfig[] {
  if (raw === undefined || raw.trim() === '') return []
  let list: unknown
  try {
    list = readList(raw)
  } catch (err) {
    throw new Error(`expected a JSON list of servers, or a file holding one: ${(err as Error).message}`)
  }
  const error = Value.Errors(McpServersConfig, list).First()
  if (error) throw new Error(`${error.path || 'the list'}: ${error.message}`)
  const servers = list as McpServerConfig[]
  const seen = new Set<string>()
  for (const { name, url } of servers) {
    if (seen.has(name)) throw new Error(`two servers are named ${name}`)
    seen.add(name)
    if (!URL.canParse(url)) throw new Error(`server ${name}: url is not a URL`)
  }
  return servers
}
