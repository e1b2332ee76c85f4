import { createSigner } from 'fast-jwt'
import type { FastifyInstance } from 'fastify'
import type { AddressInfo } from 'node:net'
import { buildApp, type AppOverrides } from '../../src/app.ts'
import { loadConfig, type Config } from '../../src/config.ts'

export const TEST_SECRET = 'test-secret-test-secret-test-secret!'

/** The service's defaults with a known secret and silent logs, overridden by typed values. */
export function testConfig(overrides: Partial<Config> = {}): Config {
  return { ...loadConfig({ JWT_SECRET: TEST_SECRET, LOG_LEVEL: 'silent', MOCK_TOKEN_DELAY_MS: '1' }), ...overrides }
}

export interface TokenOptions {
  secret?: string
  expiresInMs?: number
  claims?: Record<string, unknown>
}

export function signToken(sub: string, options: TokenOptions = {}): string {
  const sign = createSigner({ key: options.secret ?? TEST_SECRET, expiresIn: options.expiresInMs ?? 3_600_000 })
  return sign({ sub, ...options.claims })
}

interface Teardown {
  teardown(fn: () => unknown): void
}

export interface StartedApp {
  app: FastifyInstance
  config: Config
  baseUrl: string
  wsUrl: string
}

/** Builds the app through the production `buildApp`, listens on loopback, closes at teardown. */
export async function startApp(t: Teardown, overrides: Partial<Config> = {}, appOverrides: AppOverrides = {}): Promise<StartedApp> {
  const config = testConfig(overrides)
  const app = await buildApp(config, appOverrides)
  t.teardown(() => app.close())
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as AddressInfo
  return { app, config, baseUrl: `http://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}/ws/agent` }
}
