import { TypeCompiler } from '@sinclair/typebox/compiler'
import { ServerFrame } from '../../src/protocol/index.ts'
import type { Config } from '../../src/config.ts'
import type { AppOverrides } from '../../src/app.ts'
import { startApp, signToken, type StartedApp } from '../helpers/app.ts'
import { createFakeUpstream, type FakeUpstream, type RecordedRequest, type Script } from '../helpers/fake-upstream.ts'
import { connect, bearer, type TestClient, type Frame } from '../helpers/ws-client.ts'
import { roomy } from '../ws/util.ts'

export const serverFrame = TypeCompiler.Compile(ServerFrame)

interface Teardown {
  teardown(fn: () => unknown): void
}

export interface UpstreamApp extends StartedApp {
  up: FakeUpstream
  /** A connected client for `user` (default alice), closed at teardown. */
  client(user?: string): Promise<TestClient>
}

/**
 * The service with the real `openai` SDK pointed at the fake upstream (retries off, so one
 * chat is one upstream request), listening on loopback; both closed at teardown.
 */
export async function startWithUpstream(
  t: Teardown,
  script?: (request: RecordedRequest) => Script,
  config: Partial<Config> = {},
  overrides: AppOverrides = {},
): Promise<UpstreamApp> {
  const up = await createFakeUpstream(script)
  t.teardown(() => up.close())
  const started = await startApp(
    t,
    { ...roomy, MODEL_PROVIDER: 'openai', modelProvider: 'openai', OPENAI_BASE_URL: up.baseURL, OPENAI_API_KEY: 'test', UPSTREAM_MAX_RETRIES: 0, ...config },
    overrides,
  )
  return { ...started, up, client: (user = 'alice') => connect(t, started.wsUrl, bearer(signToken(user))) }
}

export function contentOf(frame: Frame | undefined): string | undefined {
  return (frame as { content?: string } | undefined)?.content
}

export function tokensOf(frames: Frame[]): string {
  return frames.filter((f) => f.type === 'token').map((f) => contentOf(f)).join('')
}

/** The messages the upstream was sent, as role:content strings (tool calls summarized). */
export function transcript(request: RecordedRequest): string[] {
  return (request.body.messages as Array<{ role: string; content: string | null; tool_calls?: Array<{ function: { name: string } }> }>).map(
    (m) => `${m.role}:${m.content ?? ''}${m.tool_calls ? `[${m.tool_calls.map((c) => c.function.name).join(',')}]` : ''}`,
  )
}

export const SYSTEM = 'system:You are a helpful assistant.'
