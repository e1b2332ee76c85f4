import type { Static, TSchema } from '@sinclair/typebox'

/** How far a long tool has got, e.g. from an MCP server's progress notifications. */
export interface ToolProgress {
  progress: number
  total?: number | undefined
  message?: string | undefined
}

/** What a tool gets besides its arguments: the turn's cancellation and who it runs for. */
export interface ToolContext {
  signal: AbortSignal
  sessionId: string
  userId: string
  /** Reports progress to the run's watchers (a `status:tool_progress` event); absent outside a run. */
  onProgress?: ((progress: ToolProgress) => void) | undefined
}

/** A method's type, not a function property's: a Tool of any schema is still a Tool (as `run` is). */
type ApprovalRule<A> = { rule(args: A): boolean }['rule']

export interface Tool<S extends TSchema = TSchema> {
  /** Matches ^[a-zA-Z0-9_-]{1,64}$ (OpenAI's rule for function names). */
  name: string
  description: string
  /** TypeBox object schema: sent to the model as JSON Schema and used to validate its arguments. */
  parameters: S
  /**
   * Checks the arguments instead of compiling `parameters` with TypeBox, for a schema TypeBox
   * cannot compile (a remote tool's JSON Schema): why they are invalid, or undefined when valid.
   */
  validate?: ((args: unknown) => string | undefined) | undefined
  /**
   * (1.1) The run asks a person before it runs this tool (protocol.md §7): always, or when the
   * function says so for these arguments. TOOLS_REQUIRING_APPROVAL names tools the same way.
   */
  needsApproval?: boolean | ApprovalRule<Static<S>> | undefined
  /** The result must be JSON-serialisable. */
  run(args: Static<S>, ctx: ToolContext): Promise<unknown> | unknown
}

/** Identity function so `run` gets its argument type inferred from `parameters`. */
export function defineTool<S extends TSchema>(tool: Tool<S>): Tool<S> {
  return tool
}
