import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler'
import type { TSchema } from '@sinclair/typebox'
import type { ToolOutcome } from '../../store/waiting-round.ts'
import type { Tool, ToolContext } from './types.ts'

/** A call's outcome (its schema is the store's: a round records it); an error's text goes back to the model as the tool message. */
export type { ToolOutcome }

export interface OpenAITool {
  type: 'function'
  function: { name: string; description: string; parameters: Record<string, unknown> }
}

export interface ToolRegistry {
  readonly size: number
  names(): string[]
  /** The OpenAI chat.completions `tools` param, as plain JSON (a fresh copy each call). */
  openAITools(): OpenAITool[]
  /** Parses, validates and runs one tool call. Never throws; cancellation resolves promptly. */
  execute(name: string, argumentsJson: string, ctx: ToolContext): Promise<ToolOutcome>
  /** Whether the tool asks a person first (its `needsApproval`), for these arguments. */
  needsApproval(name: string, argumentsJson: string): boolean
  /**
   * Replaces the tools of one source (an MCP server) while the service runs; `[]` removes
   * them. Throws, changing nothing, on an invalid tool or a name another source holds.
   */
  replace(source: string, tools: Tool[]): void
}

const TOOL_NAME = /^[a-zA-Z0-9_-]{1,64}$/
const MAX_REPORTED_ERRORS = 3
const CANCELLED: ToolOutcome = { ok: false, error: 'cancelled' }

interface RegisteredTool {
  tool: Tool
  /** Why the arguments are invalid, or undefined. */
  check(args: unknown): string | undefined
  /** Undefined for the tools given at creation. */
  source: string | undefined
}

function register(tool: Tool, source: string | undefined): RegisteredTool {
  if (typeof tool.name !== 'string' || !TOOL_NAME.test(tool.name)) {
    throw new Error(`invalid tool name ${JSON.stringify(tool.name)}: must match ${TOOL_NAME.source}`)
  }
  // OpenAI only accepts object schemas for function parameters.
  if (tool.parameters.type !== 'object') {
    throw new Error(`tool ${tool.name}: parameters must be an object schema`)
  }
  if (tool.validate) return { tool, check: tool.validate, source }
  const validator = TypeCompiler.Compile(tool.parameters)
  return { tool, check: (args) => (validator.Check(args) ? undefined : describeSchemaErrors(validator, args)), source }
}

/** "field: why" for the first few fields that fail; one reason per field (TypeBox can give several). */
function describeSchemaErrors(validator: TypeCheck<TSchema>, value: unknown): string {
  const reasons = new Map<string, string>()
  for (const error of validator.Errors(value)) {
    const field = error.path === '' ? 'arguments' : error.path.slice(1).replaceAll('/', '.')
    if (!reasons.has(field)) reasons.set(field, `${field}: ${error.message}`)
    if (reasons.size === MAX_REPORTED_ERRORS) break
  }
  return [...reasons.values()].join('; ')
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

/** Resolves when the signal aborts; `dispose` detaches the listener once the race is over. */
function whenAborted(signal: AbortSignal): { aborted: Promise<ToolOutcome>; dispose(): void } {
  const { promise, resolve } = Promise.withResolvers<ToolOutcome>()
  const onAbort = () => resolve(CANCELLED)
  signal.addEventListener('abort', onAbort, { once: true })
  return { aborted: promise, dispose: () => signal.removeEventListener('abort', onAbort) }
}

async function runTool(tool: Tool, args: unknown, ctx: ToolContext): Promise<ToolOutcome> {
  try {
    const result = (await tool.run(args, ctx)) ?? null
    JSON.stringify(result) // a BigInt or a cycle would otherwise break the caller later
    return { ok: true, result }
  } catch (error) {
    return { ok: false, error: `${tool.name} failed: ${messageOf(error)}` }
  }
}

function openAIToolsJsonOf(registered: Map<string, RegisteredTool>): string {
  return JSON.stringify(
    [...registered.values()].map(({ tool }): OpenAITool => ({
      type: 'function',
      function: { name: tool.name, description: tool.description, parameters: tool.parameters },
    })),
  )
}

/** Registers `tools` into `registered` (which may hold other sources' tools); throws on a clash. */
function addAll(registered: Map<string, RegisteredTool>, tools: Tool[], source: string | undefined): void {
  for (const tool of tools) {
    if (registered.has(tool.name)) throw new Error(`duplicate tool name: ${tool.name}`)
    registered.set(tool.name, register(tool, source))
  }
}

export function createToolRegistry(tools: Tool[]): ToolRegistry {
  // Replaced whole on each change, so a run already reading it never sees half a change.
  let registered = new Map<string, RegisteredTool>()
  addAll(registered, tools, undefined)
  let openAIToolsJson = openAIToolsJsonOf(registered)

  return {
    get size() {
      return registered.size
    },
    names: () => [...registered.keys()],
    openAITools: () => JSON.parse(openAIToolsJson) as OpenAITool[],

    replace(source, sourceTools) {
      const next = new Map([...registered].filter(([, entry]) => entry.source !== source))
      addAll(next, sourceTools, source)
      registered = next
      openAIToolsJson = openAIToolsJsonOf(next)
    },

    needsApproval(name, argumentsJson) {
      const rule = registered.get(name)?.tool.needsApproval
      if (typeof rule !== 'function') return rule === true
      try {
        return rule(argumentsJson.trim() === '' ? {} : JSON.parse(argumentsJson)) === true
      } catch {
        // Arguments that do not parse never run (execute refuses them): nothing to approve.
        return false
      }
    },

    async execute(name, argumentsJson, ctx) {
      if (ctx.signal.aborted) return CANCELLED
      const entry = registered.get(name)
      if (!entry) {
        return { ok: false, error: `unknown tool: ${name}; available tools: ${[...registered.keys()].join(', ') || 'none'}` }
      }
      let args: unknown
      try {
        // Models sometimes send an empty string for a call without arguments.
        args = argumentsJson.trim() === '' ? {} : JSON.parse(argumentsJson)
      } catch (error) {
        return { ok: false, error: `arguments are not valid JSON: ${messageOf(error)}` }
      }
      const invalid = entry.check(args)
      if (invalid !== undefined) return { ok: false, error: `invalid arguments for ${name}: ${invalid}` }
      const abort = whenAborted(ctx.signal)
      try {
        // runTool never rejects, so a tool that ignores the signal and fails later is still handled.
        return await Promise.race([runTool(entry.tool, args, ctx), abort.aborted])
      } finally {
        abort.dispose()
      }
    },
  }
}
