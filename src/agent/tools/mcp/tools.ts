import type { TSchema } from '@sinclair/typebox'
import { AjvJsonSchemaValidator } from '@modelcontextprotocol/sdk/validation/ajv'
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js'
import type { FastifyBaseLogger } from 'fastify'
import type { Tool } from '../types.ts'
import type { McpServerConfig } from './config.ts'
import type { McpConnection, McpTool } from './connection.ts'

/** ok: answered; error: the tool said it failed (isError); failed: no answer (down, timeout, protocol); cancelled: the run stopped. */
export type McpCallOutcome = 'ok' | 'error' | 'failed' | 'cancelled'

export interface McpObserver {
  call(server: string, outcome: McpCallOutcome, seconds: number): void
  status(server: string, up: boolean): void
}

/** OpenAI's rule for function names; MCP also allows `.` and `/`, which become `_`. */
const EXPOSED_NAME = /^[a-zA-Z0-9_-]{1,64}$/

export function exposedName(server: string, tool: string): string {
  return `${server}__${tool.replaceAll(/[^a-zA-Z0-9_-]/g, '_')}`
}

/** Text blocks joined, for the model and for error messages. */
function textOf(result: CallToolResult): string {
  return result.content.flatMap((block) => (block.type === 'text' ? [block.text] : [])).join('\n')
}

/** What the model is given: structured content when the tool has some, its text when that is all, else its content blocks. */
function answerOf(result: CallToolResult): unknown {
  if (result.isError) throw new Error(textOf(result) || 'the tool reported an error without a message')
  if (result.structuredContent !== undefined) return result.structuredContent
  return result.content.every((block) => block.type === 'text') ? textOf(result) : result.content
}

export interface McpToolsOf {
  server: McpServerConfig
  listed: McpTool[]
  connection: McpConnection
  observer: McpObserver | undefined
  log: FastifyBaseLogger
}

/**
 * The listed tools the configuration lets through, as registry tools named
 * `<server>__<tool>`, with the server's JSON Schema both sent to the model and checked
 * before each call. A tool that cannot be exposed is left out with a warning.
 */
export function mcpToolsOf({ server, listed, connection, observer, log }: McpToolsOf): Tool[] {
  const allowed = server.tools ? new Set(server.tools) : undefined
  // A fresh validator per listing: schemas are cached by $id, and a new list may reuse one.
  const validator = new AjvJsonSchemaValidator()
  const tools = new Map<string, Tool>()
  for (const listedTool of listed) {
    if (allowed && !allowed.has(listedTool.name)) continue
    const name = exposedName(server.name, listedTool.name)
    const skip = (why: string) => log.warn({ mcpServer: server.name, tool: listedTool.name }, `MCP tool left out: ${why}`)
    if (!EXPOSED_NAME.test(name)) {
      skip(`${name} is longer than 64 characters`)
      continue
    }
    if (tools.has(name)) {
      skip(`another of its tools is also exposed as ${name}`)
      continue
    }
    let validate: (args: unknown) => { valid: boolean; errorMessage?: string | undefined }
    try {
      validate = validator.getValidator(listedTool.inputSchema)
    } catch (err) {
      skip(`its input schema does not compile: ${(err as Error).message}`)
      continue
    }
    tools.set(name, {
      name,
      description: listedTool.description ?? listedTool.title ?? '',
      // Not a TypeBox schema: `validate` checks it, the registry only sends it to the model.
      parameters: listedTool.inputSchema as unknown as TSchema,
      validate: (args) => {
        const { valid, errorMessage } = validate(args)
        return valid ? undefined : String(errorMessage)
      },
      async run(args, ctx) {
        const startedAt = performance.now()
        let outcome: McpCallOutcome = 'failed'
        try {
          const result = await connection.callTool(listedTool.name, args as Record<string, unknown>, ctx)
          outcome = result.isError ? 'error' : 'ok'
          return answerOf(result)
        } finally {
          if (ctx.signal.aborted) outcome = 'cancelled'
          observer?.call(server.name, outcome, (performance.now() - startedAt) / 1000)
        }
      },
    })
  }
  return [...tools.values()]
}
