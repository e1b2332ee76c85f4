import { ErrorCode, ProtocolError, type ClientTool } from '../protocol/index.ts'

/** A client tool's `parameters`, serialized, at most (protocol.md §2). */
const MAX_SCHEMA_BYTES = 8 * 1024

/**
 * The checks of `chat.client_tools` a schema cannot make (protocol.md §2, §7): each a JSON
 * Schema object of at most 8 KB, names unique and none a server tool's. A bad declaration is
 * `invalid_message`; the connection stays.
 */
export function checkClientTools(tools: ClientTool[], serverTools: readonly string[], ids: { sessionId: string; requestId?: string }): ClientTool[] {
  const refuse = (why: string) => new ProtocolError(ErrorCode.invalidMessage, `invalid client_tools: ${why}`, ids)
  const taken = new Set(serverTools)
  const seen = new Set<string>()
  for (const tool of tools) {
    if (taken.has(tool.name)) throw refuse(`${tool.name} is a server tool's name`)
    if (seen.has(tool.name)) throw refuse(`${tool.name} is declared twice`)
    seen.add(tool.name)
    if (tool.parameters.type !== 'object') throw refuse(`${tool.name}.parameters must be a JSON Schema object ({"type":"object", ...})`)
    if (Buffer.byteLength(JSON.stringify(tool.parameters)) > MAX_SCHEMA_BYTES) throw refuse(`${tool.name}.parameters is larger than 8 KB`)
  }
  return tools
}
