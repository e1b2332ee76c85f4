/**
 * The agent-gateway client SDK: zero runtime dependencies, on the standard WebSocket
 * (browsers, Node 22+). `import { AgentClient } from 'agent-gateway/client'`.
 */
export {
  AgentClient,
  type AgentClientOptions,
  type ChatOptions,
  type ClientToolHandler,
  type RunOptions,
  type SessionHistory,
  type SessionList,
  type ConnectionState,
  type StateChange,
  type TokenProvider,
  type TokenRequest,
  type WebSocketConstructor,
} from './agent-client.ts'
export type { RunEvent, RunResult, RunStream } from './run-stream.ts'
export { AgentError, type AgentErrorCode } from './errors.ts'
export { backoffDelay, DEFAULT_BACKOFF, type BackoffPolicy } from './backoff.ts'
export type { FinishReason, ServerFrame, Usage } from '../protocol/index.ts'
