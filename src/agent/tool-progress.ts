import type { AgentEvent } from './run-agent.ts'
import type { ToolProgress } from './tools/types.ts'

export interface ProgressRelay {
  /** Hands to the tool as `ctx.onProgress`. */
  report(progress: ToolProgress): void
  /** Stops relaying, waits for the event in flight, and throws if an emit failed. */
  settle(): Promise<void>
}

/**
 * Relays one tool call's progress as `tool_progress` events: in order, none after the call
 * settled, and, while the log or a slow watcher holds an emit back, only the latest report
 * waits (progress supersedes itself, so a chatty server cannot queue without bound).
 */
export function progressRelay(emit: (event: AgentEvent) => Promise<void> | undefined, tool: string, callId: string): ProgressRelay {
  let open = true
  let latest: ToolProgress | undefined
  let flushing: Promise<void> | undefined
  let failure: { error: unknown } | undefined

  const flush = async () => {
    try {
      while (latest && open) {
        const { progress, total, message } = latest
        latest = undefined
        await emit({
          type: 'tool_progress',
          tool,
          callId,
          progress,
          ...(total === undefined ? {} : { total }),
          ...(message === undefined ? {} : { message }),
        })
      }
    } catch (error) {
      open = false
      failure = { error }
    } finally {
      // Synchronous with the loop's last check, so a report arriving later starts a new flush.
      flushing = undefined
    }
  }

  return {
    report(progress) {
      if (!open) return
      latest = progress
      flushing ??= flush()
    },
    async settle() {
      open = false
      await flushing
      if (failure) throw failure.error
    },
  }
}
