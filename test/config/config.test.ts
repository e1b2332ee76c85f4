import t from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadConfig, ConfigError } from '../../src/config.ts'
import { loadOrCreateDevSecret, DEV_SECRET_FILE } from '../../src/dev-secret.ts'

const SECRET = 'a-secret-that-is-at-least-32-bytes!!'
const PEM = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString()
const noDevSecret = () => {
  throw new Error('the dev secret must not be read')
}
const load = (env: Record<string, string>) => loadConfig({ JWT_SECRET: SECRET, ...env }, noDevSecret)

function tempDir(t: { teardown(fn: () => unknown): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'agw-config-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

t.test('defaults match design.md', async (t) => {
  const config = load({})
  t.match(config, {
    NODE_ENV: 'development',
    HOST: '0.0.0.0',
    PORT: 8080,
    LOG_LEVEL: 'info',
    TRUST_PROXY: false,
    JWT_ALGORITHMS: [],
    ALLOWED_ORIGINS: [],
    OPENAI_MODEL: 'gpt-4o-mini',
    HEARTBEAT_INTERVAL_MS: 30_000,
    RESUME_GRACE_MS: 15_000,
    RESUME_BUFFER_EVENTS: 2000,
    SESSION_TTL_SECONDS: 86_400,
    SHUTDOWN_GRACE_MS: 10_000,
    MAX_PAYLOAD_BYTES: 16_000 * 12 + 4096,
    MAX_CONTENT_CHARS: 16_000,
    MAX_CONNECTIONS_PER_USER: 20,
    RATE_LIMIT_MESSAGES: 60,
    RATE_LIMIT_WINDOW_MS: 60_000,
    UPSTREAM_TIMEOUT_MS: 120_000,
    UPSTREAM_IDLE_TIMEOUT_MS: 30_000,
    MAX_TOOL_ROUNDS: 5,
    HISTORY_MAX_MESSAGES: 50,
    SLOW_CLIENT_TIMEOUT_MS: 30_000,
    TOOLS: ['get_current_time', 'calculate'],
  })
  for (const unset of ['REDIS_URL', 'METRICS_TOKEN', 'OPENAI_API_KEY', 'OPENAI_BASE_URL', 'JWT_ISSUER', 'JWT_AUDIENCE', 'JWT_PUBLIC_KEY', 'MODEL_PROVIDER']) {
    t.equal(config[unset as keyof typeof config], undefined, `${unset} unset`)
  }
  t.equal(config.isProduction, false)
  t.equal(config.modelProvider, 'mock', 'mock without OPENAI_API_KEY')
  t.equal(config.demoUi, true, 'demo UI outside production')
  t.same(config.jwtAlgorithms, ['HS256'])
  t.equal(config.jwtSecret, SECRET)
  t.equal(config.devSecretFile, undefined)
})

t.test('derived values', async (t) => {
  t.equal(load({ OPENAI_API_KEY: 'sk-x' }).modelProvider, 'openai', 'openai when a key is set')
  t.equal(load({ OPENAI_API_KEY: 'sk-x', MODEL_PROVIDER: 'mock' }).modelProvider, 'mock', 'explicit provider wins')
  t.equal(load({ MODEL_PROVIDER: 'openai', OPENAI_BASE_URL: 'http://127.0.0.1:11434/v1' }).modelProvider, 'openai', 'keyless local server')
  const production = load({ NODE_ENV: 'production' })
  t.equal(production.isProduction, true)
  t.equal(production.demoUi, false)
  t.equal(load({ NODE_ENV: 'production', DEMO_UI: 'yes' }).demoUi, true)
  t.equal(load({ DEMO_UI: '0' }).demoUi, false)
  const withKey = loadConfig({ JWT_PUBLIC_KEY: PEM }, noDevSecret)
  t.same(withKey.jwtAlgorithms, ['RS256', 'ES256'], 'asymmetric defaults with a public key')
  t.equal(withKey.jwtSecret, undefined)
  t.equal(withKey.devSecretFile, undefined)
  t.same(loadConfig({ JWT_PUBLIC_KEY: PEM, JWT_ALGORITHMS: 'ES256' }, noDevSecret).jwtAlgorithms, ['ES256'])
  t.same(load({ JWT_ALGORITHMS: 'HS256,HS512' }).jwtAlgorithms, ['HS256', 'HS512'])
})

t.test('types are coerced from env strings', async (t) => {
  const config = load({ PORT: ' 9000 ', TRUST_PROXY: 'TRUE', HEARTBEAT_INTERVAL_MS: '50', LOG_LEVEL: 'debug', MAX_TOOL_ROUNDS: '0' })
  t.equal(config.PORT, 9000)
  t.equal(config.TRUST_PROXY, true)
  t.equal(config.HEARTBEAT_INTERVAL_MS, 50)
  t.equal(config.LOG_LEVEL, 'debug')
  t.equal(config.MAX_TOOL_ROUNDS, 0)
  for (const [word, value] of [['1', true], ['yes', true], ['true', true], ['0', false], ['no', false], ['False', false]] as const) {
    t.equal(load({ TRUST_PROXY: word }).TRUST_PROXY, value, `TRUST_PROXY=${word}`)
  }
  t.equal(load({ PORT: '' }).PORT, 8080, 'an empty variable is unset')
})

t.test('lists: comma-separated, trimmed, empty items dropped', async (t) => {
  const config = load({
    ALLOWED_ORIGINS: ' https://a.example , https://b.example,,',
    TOOLS: 'calculate',
    JWT_ALGORITHMS: 'HS256, HS384',
  })
  t.same(config.ALLOWED_ORIGINS, ['https://a.example', 'https://b.example'])
  t.same(config.TOOLS, ['calculate'])
  t.same(config.JWT_ALGORITHMS, ['HS256', 'HS384'])
  t.same(load({ TOOLS: ',' }).TOOLS, [], 'no tools')
})

t.test('bad values are refused with a message naming the variable', async (t) => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ PORT: 'abc' }, /^Invalid PORT: .*"abc"/],
    [{ PORT: '70000' }, /^Invalid PORT/],
    [{ PORT: '1.5' }, /^Invalid PORT/],
    [{ HEARTBEAT_INTERVAL_MS: '-1' }, /^Invalid HEARTBEAT_INTERVAL_MS: .*"-1"/],
    [{ HEARTBEAT_INTERVAL_MS: '5' }, /^Invalid HEARTBEAT_INTERVAL_MS/],
    [{ HEARTBEAT_INTERVAL_MS: '99999999999' }, /^Invalid HEARTBEAT_INTERVAL_MS/],
    [{ RESUME_GRACE_MS: '1e3' }, /^Invalid RESUME_GRACE_MS/],
    [{ HISTORY_MAX_MESSAGES: '1' }, /^Invalid HISTORY_MAX_MESSAGES/],
    [{ LOG_LEVEL: 'loud' }, /^Invalid LOG_LEVEL: .*"loud"/],
    [{ MODEL_PROVIDER: 'x' }, /^Invalid MODEL_PROVIDER: .*"x"/],
    [{ MODEL_PROVIDER: 'foo' }, /^Invalid MODEL_PROVIDER: expected one of openai, mock \(got "foo"\)$/],
    [{ LOG_LEVEL: 'loud' }, /^Invalid LOG_LEVEL: expected one of fatal, error, warn, info, debug, trace, silent/],
    [{ LOG_FORMAT: 'xml' }, /^Invalid LOG_FORMAT: expected one of auto, json, pretty/],
    [{ DEV_TOKEN: 'lan' }, /^Invalid DEV_TOKEN: expected one of loopback, any, off/],
    [{ TOOLS: 'calculate,no_such_tool' }, /^Invalid TOOLS: unknown no_such_tool \(allowed: get_current_time, calculate\)$/],
    [{ MAX_PAYLOAD_BYTES: '10' }, /^Invalid MAX_PAYLOAD_BYTES/],
    [{ TRUST_PROXY: 'maybe' }, /^Invalid TRUST_PROXY: .*"maybe"/],
    [{ MODEL_PROVIDER: 'openai' }, /MODEL_PROVIDER=openai needs OPENAI_API_KEY/],
    [{ JWT_SECRET: 'short' }, /^Invalid JWT_SECRET: must be at least 32 bytes/],
    [{ JWT_PUBLIC_KEY: PEM }, /JWT_SECRET or JWT_PUBLIC_KEY, not both/],
    [{ JWT_ALGORITHMS: 'RS256' }, /^Invalid JWT_ALGORITHMS: only HS256\/HS384\/HS512 work with JWT_SECRET/],
    [{ JWT_ALGORITHMS: 'none' }, /^Invalid JWT_ALGORITHMS: unknown or unsafe none/],
    [{ JWT_ALGORITHMS: 'HS256,hs256' }, /^Invalid JWT_ALGORITHMS: unknown or unsafe hs256/],
  ]
  for (const [env, message] of cases) {
    t.throws(() => load(env), { name: 'ConfigError', message }, JSON.stringify(env))
  }
  const keyOnly = (env: Record<string, string>) => () => loadConfig({ JWT_PUBLIC_KEY: PEM, ...env }, noDevSecret)
  t.throws(keyOnly({ JWT_ALGORITHMS: 'HS256' }), { message: /^Invalid JWT_ALGORITHMS: HS256 cannot be used with JWT_PUBLIC_KEY/ }, 'HS alg with a public key')
  t.throws(keyOnly({ JWT_ALGORITHMS: 'RS256,HS512' }), { message: /HS512 cannot be used with JWT_PUBLIC_KEY/ })
  t.throws(keyOnly({ JWT_ALGORITHMS: 'none' }), { message: /unknown or unsafe none/ })
  t.throws(() => loadConfig({ JWT_PUBLIC_KEY: 'not a pem' }, noDevSecret), { message: /^Invalid JWT_PUBLIC_KEY: expected a PEM/ })
  t.ok(new ConfigError('x') instanceof Error)
})

t.test('production refuses to start without a JWT secret or key', async (t) => {
  t.throws(() => loadConfig({ NODE_ENV: 'production' }, noDevSecret), {
    name: 'ConfigError',
    message: 'JWT_SECRET or JWT_PUBLIC_KEY is required when NODE_ENV=production',
  })
  t.equal(loadConfig({ NODE_ENV: 'production', JWT_PUBLIC_KEY: PEM }, noDevSecret).isProduction, true)
})

t.test('outside production without a key: the dev secret, created once then reused', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, DEV_SECRET_FILE)
  let calls = 0
  const devSecret = () => {
    calls++
    return loadOrCreateDevSecret(file)
  }
  const first = loadConfig({}, devSecret)
  t.equal(calls, 1)
  t.equal(first.devSecretFile, DEV_SECRET_FILE)
  t.ok(Buffer.byteLength(first.jwtSecret ?? '') >= 32, 'at least 32 bytes')
  t.same(first.jwtAlgorithms, ['HS256'])
  t.equal(readFileSync(file, 'utf8'), `${first.jwtSecret}\n`)
  t.equal(statSync(file).mode & 0o777, 0o600, 'readable by its owner only')
  const second = loadConfig({}, devSecret)
  t.equal(second.jwtSecret, first.jwtSecret, 'reused across restarts')
})

t.test('loadOrCreateDevSecret', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'secret')
  const created = loadOrCreateDevSecret(file)
  t.equal(created.created, true)
  t.match(created.secret, /^[A-Za-z0-9_-]{43}$/)
  t.same(loadOrCreateDevSecret(file), { secret: created.secret, created: false })

  writeFileSync(file, 'too-short\n')
  const replaced = loadOrCreateDevSecret(file)
  t.equal(replaced.created, true, 'a secret under 32 bytes is replaced')
  t.not(replaced.secret, 'too-short')

  const unreadable = join(dir, 'a-directory')
  mkdirSync(unreadable)
  t.throws(() => loadOrCreateDevSecret(unreadable), { code: 'EISDIR' }, 'errors other than a missing file are not hidden')
})

t.test('loadConfig reads process.env by default', async (t) => {
  const saved = { ...process.env }
  t.teardown(() => {
    for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key]
    Object.assign(process.env, saved)
  })
  process.env.JWT_SECRET = SECRET
  process.env.PORT = '1234'
  t.equal(loadConfig().PORT, 1234)
})

t.test('MAX_PAYLOAD_BYTES follows MAX_CONTENT_CHARS unless set', async (t) => {
  t.equal(load({ MAX_CONTENT_CHARS: '1000' }).MAX_PAYLOAD_BYTES, 1000 * 12 + 4096, 'room for 1000 characters as 12-byte escapes')
  t.equal(load({ MAX_CONTENT_CHARS: '1000', MAX_PAYLOAD_BYTES: '2048' }).MAX_PAYLOAD_BYTES, 2048, 'an explicit value wins')
  t.equal(load({ MAX_CONTENT_CHARS: String(2 ** 31 - 1) }).MAX_PAYLOAD_BYTES, 2 ** 31 - 1, 'capped at the integer limit')
  t.equal(load({}).LOG_FORMAT, 'auto')
  t.equal(load({}).DEV_TOKEN, 'loopback')
})
