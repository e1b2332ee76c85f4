import type { Static, TSchema } from '@sinclair/typebox'

/** What a tool gets besides its arguments: the turn's cancellation and who it runs for. */
export interface ToolContext {
  signal: AbortSignal
  sessionId: string
  userId: string
}

export interface Tool<S extends TSchema = TSchema> {
  /** Matches ^[a-zA-Z0-9_-]{1,64}$ (OpenAI's rule for function names). */
  name: string
  description: string
  /** TypeBox object schema: sent to the model as JSON Schema and used to validate its arguments. */
  parameters: S
  /** The result must be JSON-serialisable. */
  run(args: Static<S>, ctx: ToolContext): Promise<unknown> | unknown
}

/** Identity function so `run` gets its argument type inferred from `parameters`. */
export function defineTool<S extends TSchema>(tool: Tool<S>): Tool<S> {
  return tool
}
