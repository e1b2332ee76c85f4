import { calculate } from './calculate.ts'
import { getCurrentTime } from './get-current-time.ts'
import type { Tool } from './types.ts'

export { defineTool, type Tool, type ToolContext, type ToolProgress } from './types.ts'
export { createToolRegistry, type OpenAITool, type ToolOutcome, type ToolRegistry } from './registry.ts'
export { calculate, evaluate, CalculationError } from './calculate.ts'
export { getCurrentTime, currentTime, type CurrentTime } from './get-current-time.ts'

export const builtinTools: Record<string, Tool> = {
  [getCurrentTime.name]: getCurrentTime,
  [calculate.name]: calculate,
}

/** The built-in tools for the configured names, in order, without duplicates. */
export function selectBuiltinTools(names: string[]): Tool[] {
  const known = Object.keys(builtinTools)
  return [...new Set(names)].map((name) => {
    const tool = Object.hasOwn(builtinTools, name) ? builtinTools[name] : undefined
    if (!tool) throw new Error(`unknown built-in tool '${name}': known tools are ${known.join(', ')}`)
    return tool
  })
}
