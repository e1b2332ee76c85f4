import type { CompleteFrame, FinishReason, RunEvent } from '../../protocol/index.ts'
import type { UiChunk, UiFinishReason } from './frames.ts'

/** A run event of our protocol (protocol.md §3), as a watcher receives it. */
export type RunFrame = RunEvent

const FINISH: Record<Exclude<FinishReason, 'cancelled'>, UiFinishReason> = {
  stop: 'stop',
  length: 'length',
  content_filter: 'content-filter',
  error: 'error',
  interrupted: 'error',
}

/** What one run event becomes: its chunks, and whether the UI message stream is over. */
export interface Translated {
  chunks: UiChunk[]
  done: boolean
}

/**
 * One run as one UI message stream (ai-sdk.md, "Server → client"): our run events in, the
 * SDK's `UIMessageChunk`s out, in order. It keeps the block state the chunks need (the open
 * text or reasoning part, whether a model round ended with tools).
 *
 * Seam for approvals and client tools (protocol.md §7, another issue): `status:approval_required`
 * becomes `tool-approval-request` then `finish-step`, `finish`, `done`; a denied approval's
 * `tool_result` becomes `tool-output-denied`. Both are cases of `#status` below.
 */
export class RunTranslator {
  #blocks = 0
  #text: string | undefined
  #reasoning: string | undefined
  /** A tool round ended: the next model output is a new step. */
  #afterTools = false
  #aborted = false

  translate(frame: RunFrame): Translated {
    const chunks: UiChunk[] = []
    switch (frame.type) {
      case 'token':
        this.#nextStep(chunks)
        this.#endReasoning(chunks)
        if (this.#text === undefined) chunks.push({ type: 'text-start', id: (this.#text = this.#blockId('text')) })
        chunks.push({ type: 'text-delta', id: this.#text, delta: frame.content })
        break
      case 'reasoning':
        this.#nextStep(chunks)
        this.#endText(chunks)
        if (this.#reasoning === undefined) chunks.push({ type: 'reasoning-start', id: (this.#reasoning = this.#blockId('reasoning')) })
        chunks.push({ type: 'reasoning-delta', id: this.#reasoning, delta: frame.content })
        break
      case 'error':
        chunks.push({ type: 'error', errorText: frame.content })
        break
      case 'complete':
        return { chunks: this.#complete(frame), done: true }
      case 'status':
        this.#status(frame, chunks)
        break
    }
    return { chunks, done: false }
  }

  #status(frame: Extract<RunFrame, { type: 'status' }>, chunks: UiChunk[]): void {
    switch (frame.content) {
      case 'thinking':
        chunks.push({ type: 'start', messageId: frame.metadata.run_id }, { type: 'start-step' })
        return
      case 'tool_call':
        this.#nextStep(chunks)
        this.#endBlocks(chunks)
        chunks.push({ type: 'tool-input-available', toolCallId: frame.metadata.call_id, toolName: frame.metadata.tool, input: frame.metadata.arguments, dynamic: true, providerExecuted: true })
        return
      case 'tool_result': {
        const { call_id: toolCallId, result } = frame.metadata
        this.#afterTools = true
        chunks.push(
          frame.metadata.is_error
            ? { type: 'tool-output-error', toolCallId, errorText: typeof result === 'string' ? result : JSON.stringify(result), dynamic: true, providerExecuted: true }
            : { type: 'tool-output-available', toolCallId, output: result, dynamic: true, providerExecuted: true },
        )
        return
      }
      case 'cancelled':
        this.#endBlocks(chunks)
        this.#aborted = true
        chunks.push({ type: 'abort', reason: 'cancelled' })
        return
      // queued, tool_progress: no chunk (ai-sdk.md).
    }
  }

  #complete(frame: CompleteFrame): UiChunk[] {
    const chunks: UiChunk[] = []
    this.#endBlocks(chunks)
    chunks.push({ type: 'finish-step' })
    const { finish_reason: reason, usage } = frame.metadata
    if (reason === 'cancelled') {
      // `abort` instead of `finish`, once: status:cancelled usually said it already.
      if (!this.#aborted) chunks.push({ type: 'abort', reason: frame.metadata.reason ?? 'cancelled' })
      return chunks
    }
    chunks.push({ type: 'finish', finishReason: FINISH[reason], ...(usage ? { messageMetadata: { usage } } : {}) })
    return chunks
  }

  #nextStep(chunks: UiChunk[]): void {
    if (!this.#afterTools) return
    this.#afterTools = false
    chunks.push({ type: 'finish-step' }, { type: 'start-step' })
  }

  #endBlocks(chunks: UiChunk[]): void {
    this.#endReasoning(chunks)
    this.#endText(chunks)
  }

  #endText(chunks: UiChunk[]): void {
    if (this.#text === undefined) return
    chunks.push({ type: 'text-end', id: this.#text })
    this.#text = undefined
  }

  #endReasoning(chunks: UiChunk[]): void {
    if (this.#reasoning === undefined) return
    chunks.push({ type: 'reasoning-end', id: this.#reasoning })
    this.#reasoning = undefined
  }

  #blockId(kind: 'text' | 'reasoning'): string {
    return `${kind}-${++this.#blocks}`
  }
}
