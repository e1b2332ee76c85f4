import type { Test } from 'tap'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { startApp, signToken, type StartedApp } from '../helpers/app.ts'
import { connect, bearer, type Frame, type TestClient } from '../helpers/ws-client.ts'
import { createFakeUpstream, type FakeUpstream, type Script } from '../helpers/fake-upstream.ts'
import { ServerFrame, type CompleteFrame, type ErrorFrame } from '../../src/protocol/index.ts'
import type { Config } from '../../src/config.ts'

const validServerFrame = TypeCompiler.Compile(ServerFrame)

/**
 * Tight limits so every fault ends quickly; retries as in production (2). The first-token
 * budget covers retries, so it leaves room for the whole backoff (at most 250 + 500 ms).
 */
export const FAULT_LIMITS = {
  UPSTREAM_FIRST_TOKEN_TIMEOUT_MS: 2500,
  UPSTREAM_IDLE_TIMEOUT_MS: 300,
  UPSTREAM_TIMEOUT_MS: 20_000,
  UPSTREAM_MAX_RETRIES: 2,
} satisfies Partial<Config>

export interface UpstreamSetup {
  up: FakeUpstream
  started: StartedApp
  client: TestClient
  /** The service's log lines at `LOG_LEVEL` (silent unless the test sets it). */
  logs: Array<{ level: number; msg: string } & Record<string, unknown>>
}

/** The real app against the scriptable upstream, through the real SDK. */
export async function setupUpstream(t: Test, config: Partial<Config> = {}): Promise<UpstreamSetup> {
  const up = await createFakeUpstream()
  t.teardown(() => up.close())
  const logs: UpstreamSetup['logs'] = []
  const logStream = { write: (line: string) => void logs.push(JSON.parse(line)) }
  const started = await startApp(
    t,
    { modelProvider: 'openai', OPENAI_BASE_URL: up.baseURL, OPENAI_API_KEY: 'test', ...FAULT_LIMITS, ...config },
    { logStream },
  )
  const client = await connect(t, started.wsUrl, bearer(signToken('alice')))
  return { up, started, client, logs }
}

/** The nth request gets the nth script; the last one repeats. */
export function scripted(up: FakeUpstream, scripts: Script[]): void {
  up.script((request) => scripts[Math.min(request.index, scripts.length - 1)] as Script)
}

export interface RunResult {
  frames: Frame[]
  types: string[]
  error: ErrorFrame | undefined
  complete: CompleteFrame
  text: string
  elapsedMs: number
}

/** Sends a chat and collects its run up to `complete`, checking the frames against the contract. */
export async function chat(t: Test, client: TestClient, content: string, sessionId?: string): Promise<RunResult> {
  const startedAt = performance.now()
  client.send({ type: 'chat', content, ...(sessionId ? { session_id: sessionId } : {}) })
  const frames = await client.untilComplete(15_000)
  const elapsedMs = performance.now() - startedAt
  for (const frame of frames) t.ok(validServerFrame.Check(frame), `valid ${frame.type} frame`)
  const complete = frames.at(-1) as CompleteFrame
  const error = frames.find((frame) => frame.type === 'error') as ErrorFrame | undefined
  const text = frames.flatMap((frame) => (frame.type === 'token' ? [frame.content] : [])).join('')
  const types = frames.map((frame) => (frame.type === 'status' ? `status:${frame.content}` : frame.type))
  return { frames, types, error, complete, text, elapsedMs }
}
