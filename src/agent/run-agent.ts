import type { Usage } from '../protocol/index.ts'
import type { HistoryMessage } from '../store/types.ts'
import type { ModelClient } from './models/types.ts'
import type { OpenAITool, ToolOutcome, ToolRegistry } from './tools/registry.ts'
import { UpstreamError } from './upstream-error.ts'
import { progressRelay } from './tool-progress.ts'
import { relayTurn } from '../relay-budget.ts'

export type AgentEvent =
  /** `deltas`: how many of the model's deltas the text joins, 1 when absent (metrics count the model's deltas). */
  | { type: 'token'; text: string; deltas?: number }
  /** A reasoning delta: relayed to clients that asked, never part of the answer or sent back to the model. */
  | { type: 'reasoning'; text: string }
  | { type: 'tool_call'; tool: string; callId: string; arguments: unknown; executor: 'server' | 'client' }
  | { type: 'tool_result'; tool: string; callId: string; result: unknown; isError: boolean }
  | { type: 'tool_progress'; tool: string; callId: string; progress: number; total?: number; message?: string }

export interface AgentRunInput {
  model: ModelClient
  tools: ToolRegistry
  /** System prompt, history and the new user message, oldest first. */
  messages: HistoryMessage[]
  signal: AbortSignal
  maxToolRounds: number
  sessionId: string
  userId: string
  /** (1.1) Tools the client runs, offered to the model for this run (protocol.md §7). */
  clientTools?: OpenAITool[] | undefined
  /**
   * (1.1) Asked before each call: run the tool, or use this outcome instead (a client tool's
   * output, a denied or expired approval). Absent: every call runs.
   */
  gate?: ((call: GatedCall) => Promise<GateDecision>) | undefined
  /**
   * (1.1) Go on with a run another instance started, in the tool round it waited in: its calls
   * are the last assistant turn of `progress.messages` (already announced), `progress` is what
   * the run had produced by then.
   */
  resume?: { round: number } | undefined
  /** (1.1) A tool round is over, all its results in: called before the model is asked again. */
  roundEnded?: (() => Promise<void>) | undefined
  /**
   * Resolves when the event is logged and the run may pull more (backpressure lives here);
   * nothing to wait for when it is only held (a text delta waiting to merge).
   */
  emit: (event: AgentEvent) => Promise<void> | undefined
}

export interface GatedCall {
  tool: string
  callId: string
  argumentsJson: string
  /** The tool round, from 0. */
  round: number
}

/** Run the tool; or use this outcome instead; or this outcome, its `tool_result` already logged (a resumed round). */
export type GateDecision = { kind: 'run' } | { kind: 'outcome'; outcome: ToolOutcome } | { kind: 'logged'; outcome: ToolOutcome }

/** Filled in as the run goes, so a failed or cancelled run still reports what it produced. */
export interface AgentProgress {
  content: string
  /** Messages to append to history: assistant turns and tool results. */
  messages: HistoryMessage[]
  usage: Usage | undefined
  /** Text of the round in flight, not yet in `messages`. */
  pendingText: string
  /** Everything the model reasoned this run, every round (kept apart from `content`). */
  reasoning: string
}

export interface AgentOutcome {
  finishReason: 'stop' | 'length' | 'content_filter'
  reason?: string
}

const RUN: GateDecision = { kind: 'run' }

interface PendingCall {
  id: string
  name: string
  arguments: string
}

export function createProgress(): AgentProgress {
  return { content: '', messages: [], usage: undefined, pendingText: '', reasoning: '' }
}

/** Everything the run produced, the partial round included, as history messages. */
export function producedMessages(progress: AgentProgress): HistoryMessage[] {
  const messages = [...progress.messages]
  // A run stopped mid-tool-round must still leave history the upstream accepts: every
  // tool call answered.
  const answered = new Set(messages.map((message) => message.tool_call_id))
  for (const call of messages.findLast((message) => message.role === 'assistant')?.tool_calls ?? []) {
    if (!answered.has(call.id)) messages.push({ role: 'tool', tool_call_id: call.id, content: 'Error: the run stopped before this tool finished' })
  }
  if (progress.pendingText) messages.push({ role: 'assistant', content: progress.pendingText })
  return messages
}

function addUsage(total: Usage | undefined, more: Usage): Usage {
  return total
    ? { prompt_tokens: total.prompt_tokens + more.prompt_tokens, completion_tokens: total.completion_tokens + more.completion_tokens }
    : { ...more }
}

function parseArguments(json: string): unknown {
  try {
    return JSON.parse(json)
  } catch {
    return json
  }
}

/**
 * The agent loop: stream the model, relay text, run the tools it calls (in parallel), feed
 * the results back, until it stops or the round cap. Throws the signal's reason when
 * cancelled and UpstreamError when the model fails; `progress` holds what was produced.
 */
export async function runAgent(input: AgentRunInput, progress: AgentProgress): Promise<AgentOutcome> {
  const { signal } = input
  const messages = [...input.messages, ...(input.resume ? progress.messages : [])]
  const tools = [...input.tools.openAITools(), ...(input.clientTools ?? [])]
  const clientToolNames = new Set((input.clientTools ?? []).map((tool) => tool.function.name))
  for (let round = input.resume?.round ?? 0; ; round++) {
    if (input.resume && round === input.resume.round) {
      // A recorded round ends with the assistant turn that asked for its calls.
      const { tool_calls: calls } = progress.messages.findLast((message) => message.role === 'assistant') as Required<HistoryMessage>
      await runToolRound(input, messages, progress, round, calls.map((call) => ({ id: call.id, name: call.function.name, arguments: call.function.arguments })))
      continue
    }
    // By the model layer's dense slots; a Map, so no index can make a sparse array to walk.
    const calls = new Map<number, PendingCall>()
    let finish: string | undefined
    // A server may report usage on every chunk (running totals): within a request the last
    // report stands; requests (tool rounds) add up.
    const usageBefore = progress.usage
    for await (const batch of input.model.stream({ messages, tools, signal })) {
      signal.throwIfAborted()
      // Reads relayed back to back, this run's or many runs', give the loop back now and then,
      // so that cancels and other sockets are served meanwhile.
      const turn = relayTurn()
      if (turn) {
        await turn
        signal.throwIfAborted()
      }
      for (const chunk of batch) {
        signal.throwIfAborted()
        if (chunk.type === 'text') {
          progress.content += chunk.text
          progress.pendingText += chunk.text
          // Held for merging, mostly: no await (a promise job) per delta then.
          const held = input.emit(chunk.deltas === undefined ? { type: 'token', text: chunk.text } : { type: 'token', text: chunk.text, deltas: chunk.deltas })
          if (held) await held
        } else if (chunk.type === 'reasoning') {
          progress.reasoning += chunk.text
          await input.emit({ type: 'reasoning', text: chunk.text })
        } else if (chunk.type === 'tool_call') {
          let call = calls.get(chunk.index)
          if (!call) calls.set(chunk.index, (call = { id: '', name: '', arguments: '' }))
          call.id ||= chunk.id ?? ''
          // Set once: some servers repeat the whole name on every fragment.
          call.name ||= chunk.name ?? ''
          if (chunk.arguments) call.arguments += chunk.arguments
        } else if (chunk.type === 'usage') {
          progress.usage = addUsage(usageBefore, chunk.usage)
        } else {
          finish = chunk.reason
        }
      }
    }
    signal.throwIfAborted()
    const requested = [...calls.entries()].sort(([a], [b]) => a - b).map(([, call]) => call)
    const assistant: HistoryMessage = { role: 'assistant', content: progress.pendingText || null }
    if (requested.length === 0) {
      if (progress.pendingText) progress.messages.push(assistant)
      progress.pendingText = ''
      return { finishReason: finish === 'length' || finish === 'content_filter' ? finish : 'stop' }
    }
    if (round >= input.maxToolRounds) {
      if (progress.pendingText) progress.messages.push(assistant)
      progress.pendingText = ''
      return { finishReason: 'length', reason: `stopped after ${input.maxToolRounds} tool rounds (MAX_TOOL_ROUNDS)` }
    }
    if (requested.some((call) => !call.id || !call.name)) {
      throw new UpstreamError('malformed', 'the model sent a tool call without an id or a name')
    }
    assistant.tool_calls = requested.map((call) => ({
      id: call.id,
      type: 'function',
      function: { name: call.name, arguments: call.arguments },
    }))
    progress.messages.push(assistant)
    progress.pendingText = ''
    messages.push(assistant)
    for (const call of requested) {
      const executor = clientToolNames.has(call.name) ? 'client' : 'server'
      await input.emit({ type: 'tool_call', tool: call.name, callId: call.id, arguments: parseArguments(call.arguments), executor })
    }
    await runToolRound(input, messages, progress, round, requested)
  }
}

/** Runs (or gets the outcomes of) a round's calls in parallel, then feeds every result back. */
async function runToolRound(input: AgentRunInput, messages: HistoryMessage[], progress: AgentProgress, round: number, requested: PendingCall[]): Promise<void> {
  const { signal } = input
  const context = { signal, sessionId: input.sessionId, userId: input.userId }
  const results = await Promise.all(
    requested.map(async (call) => {
      const decision = input.gate ? await input.gate({ tool: call.name, callId: call.id, argumentsJson: call.arguments, round }) : RUN
      if (decision.kind === 'logged') return { call, outcome: decision.outcome }
      const relay = progressRelay(input.emit, call.name, call.id)
      const outcome = decision.kind === 'outcome' ? decision.outcome : await input.tools.execute(call.name, call.arguments, { ...context, onProgress: relay.report })
      await relay.settle()
      signal.throwIfAborted()
      await input.emit({
        type: 'tool_result',
        tool: call.name,
        callId: call.id,
        result: outcome.ok ? outcome.result : outcome.error,
        isError: !outcome.ok,
      })
      return { call, outcome }
    }),
  )
  for (const { call, outcome } of results) {
    const toolMessage: HistoryMessage = {
      role: 'tool',
      tool_call_id: call.id,
      content: outcome.ok ? JSON.stringify(outcome.result ?? null) : `Error: ${outcome.error}`,
    }
    progress.messages.push(toolMessage)
    messages.push(toolMessage)
  }
  await input.roundEnded?.()
}
