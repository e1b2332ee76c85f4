import { randomUUID } from 'node:crypto'
import { ErrorCode, ProtocolError, type ClientTool, type OnBusy } from '../protocol/index.ts'
import { refKey, type Backend, type RunInput, type SessionRef } from '../store/types.ts'
import type { LeaseSweeper } from './lease-sweeper.ts'
import type { RunExecutor } from './run-executor.ts'
import type { Subscriptions } from './subscriptions.ts'
import { WatcherClosed, type Watcher } from './watcher.ts'
import { titleOf } from '../store/run-input.ts'

export interface BeginRunDeps {
  backend: Backend
  executor: RunExecutor
  subscriptions: Subscriptions
  leases: LeaseSweeper | undefined
  config: {
    instanceId: string
    leaseMs: number
    historyMaxMessages: number
    maxQueuedRuns: number
    busyRetryAfterMs: number
  }
}

export interface RunRequest {
  input: RunInput
  requestId: string | undefined
  onBusy: OnBusy | undefined
  reasoning?: boolean | undefined
  clientTools?: ClientTool[] | undefined
}

/**
 * Asks the store for a run and attaches the sender to it: started (the executor takes it),
 * queued behind the active run (interrupt also cancels that one, as `superseded`), or already
 * asked for with this idempotency key (the sender is attached to that run, nothing else happens).
 */
export async function beginAndWatch(deps: BeginRunDeps, watcher: Watcher, ref: SessionRef, request: RunRequest): Promise<void> {
  const { backend, config } = deps
  const runId = randomUUID()
  const ids = { sessionId: ref.id, ...(request.requestId === undefined ? {} : { requestId: request.requestId }) }
  const message = request.input.kind === 'regenerate' ? undefined : request.input.message
  const begin = () =>
    backend.sessions.beginRun(ref, {
      runId,
      instanceId: config.instanceId,
      leaseMs: config.leaseMs,
      input: request.input,
      maxMessages: config.historyMaxMessages,
      onBusy: request.onBusy ?? 'reject',
      maxQueued: config.maxQueuedRuns,
      ...(request.onBusy === 'enqueue' ? { queuedEvent: queuedEvent(ref, runId, request.requestId) } : {}),
      ...(message?.content ? { title: titleOf(message.content) } : {}),
      ...(request.requestId === undefined ? {} : { requestId: request.requestId }),
      ...(request.reasoning ? { reasoning: true } : {}),
      ...(request.clientTools?.length ? { clientTools: request.clientTools } : {}),
    })
  let begun = await begin()
  // The run of a dead instance holds the session until somebody ends it: the first to ask does.
  if (begun.kind === 'busy' && (await deps.leases?.endIfExpired(ref, begun.active))) begun = await begin()
  switch (begun.kind) {
    case 'gone':
      throw new ProtocolError(ErrorCode.notFound, 'the session was deleted meanwhile', ids)
    case 'no_message':
      throw new ProtocolError(ErrorCode.notFound, request.input.kind === 'edit' ? 'no user message of that id' : 'nothing to regenerate', ids)
    case 'busy':
      throw new ProtocolError(ErrorCode.busy, undefined, { ...ids, runId: begun.active.runId, retryAfterMs: config.busyRetryAfterMs })
    case 'duplicate': {
      if (watcher.watching.get(refKey(ref))) return
      const held = await backend.events.read(ref, begun.startAfterSeq)
      if (held.gone) throw new ProtocolError(ErrorCode.historyGone, undefined, ids)
      return watch(deps, watcher, ref, begun.startAfterSeq)
    }
    case 'queued': {
      if (request.onBusy === 'interrupt') {
        const active = await backend.sessions.activeRun(ref)
        if (active && active.runId !== runId) await deps.executor.abort(ref, active, 'superseded')
      }
      return watch(deps, watcher, ref, begun.startAfterSeq)
    }
    case 'started': {
      const { kind: _kind, ...started } = begun
      // The sender watches from the run's start before the run logs anything.
      try {
        await deps.subscriptions.subscribe(watcher, ref, started.startAfterSeq)
      } catch (err) {
        // Gone meanwhile: the run goes on for the grace, as for any disconnect.
        if (err instanceof WatcherClosed) return deps.executor.start({ ref, ...started }, { unwatched: true })
        // Nothing will execute it: free the session before answering.
        await backend.sessions.releaseRun(ref, runId)
        throw err
      }
      deps.executor.start({ ref, ...started })
    }
  }
}

/** Subscribes; a connection that closed meanwhile is no error (the hub counted it gone). */
async function watch(deps: BeginRunDeps, watcher: Watcher, ref: SessionRef, afterSeq: number): Promise<void> {
  try {
    await deps.subscriptions.subscribe(watcher, ref, afterSeq)
  } catch (err) {
    if (!(err instanceof WatcherClosed)) throw err
  }
}

function queuedEvent(ref: SessionRef, runId: string, requestId: string | undefined) {
  return {
    type: 'status' as const,
    session_id: ref.id,
    content: 'queued' as const,
    metadata: { run_id: runId, position: 0, ...(requestId === undefined ? {} : { request_id: requestId }) },
  }
}
