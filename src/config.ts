import { loadOrCreateDevSecret, DEV_SECRET_FILE } from './dev-secret.ts'
import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { builtinTools } from './agent/tools/index.ts'
import { parseMcpServers, type McpServerConfig } from './agent/tools/mcp/config.ts'

/** Larger values overflow Node's timers, which then fire after 1 ms. */
const MAX_INT = 2 ** 31 - 1
const Int = (defaultValue: number, minimum: number, description: string) =>
  Type.Integer({ default: defaultValue, minimum, maximum: MAX_INT, description })
const Text = (description: string) => Type.Optional(Type.String({ description }))
const Flag = (defaultValue: boolean, description: string) => Type.Boolean({ default: defaultValue, description })
const List = (description: string) => Type.Array(Type.String({ minLength: 1 }), { default: [], description })

/**
 * Every variable the service reads, with its default and meaning. This one schema is the
 * config's type, its validator and the source of `.env.example`'s documentation.
 */
export const ConfigSchema = Type.Object({
  NODE_ENV: Type.String({ default: 'development', description: 'production hardens defaults (no dev token route, JWT key required)' }),
  HOST: Type.String({ default: '0.0.0.0', description: 'interface to listen on' }),
  PORT: Type.Integer({ default: 8080, minimum: 0, maximum: 65535, description: 'port to listen on' }),
  LOG_LEVEL: Type.Union(
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((level) => Type.Literal(level)),
    { default: 'info', description: 'pino log level' },
  ),
  LOG_FORMAT: Type.Union([Type.Literal('auto'), Type.Literal('json'), Type.Literal('pretty')], {
    default: 'auto',
    description: 'auto: pretty one-line logs on a terminal outside production, JSON otherwise; json; pretty',
  }),
  TRUST_PROXY: Flag(false, 'honour X-Forwarded-* from the load balancer'),
  JWT_SECRET: Text('HS256 secret, at least 32 bytes'),
  JWT_PUBLIC_KEY: Text('PEM public key for RS256/ES256 tokens (instead of JWT_SECRET)'),
  JWT_ALGORITHMS: List('accepted JWT algorithms [HS256, or RS256,ES256 with a public key]'),
  JWT_ISSUER: Text('required iss claim, when set'),
  JWT_AUDIENCE: Text('required aud claim, when set'),
  ALLOWED_ORIGINS: List('comma-separated Origin allow-list for upgrades [empty: any]'),
  MODEL_PROVIDER: Type.Optional(
    Type.Union([Type.Literal('openai'), Type.Literal('mock')], {
      description: 'openai or mock [openai when OPENAI_API_KEY is set, else mock]',
    }),
  ),
  OPENAI_API_KEY: Text('upstream API key'),
  OPENAI_BASE_URL: Text('any OpenAI-compatible server, e.g. http://127.0.0.1:11434/v1'),
  OPENAI_MODEL: Type.String({ default: 'gpt-4o-mini', description: 'model name sent upstream' }),
  SYSTEM_PROMPT: Type.String({ default: 'You are a helpful assistant.', description: "the agent's instructions" }),
  MOCK_TOKEN_DELAY_MS: Int(20, 0, 'pace of the offline mock model, per token'),
  TOOLS: Type.Array(Type.String({ minLength: 1 }), {
    default: ['get_current_time', 'calculate'],
    description: 'built-in tools enabled for the agent (comma-separated; empty for none)',
  }),
  REDIS_URL: Text('Redis for sessions, event logs and cancel signals [empty: in-memory]'),
  REDIS_CLUSTER: Text('REDIS_URL is a Redis Cluster: true (REDIS_URL is the seed node) or comma-separated host:port seed nodes [empty: one Redis]'),
  REDIS_KEY_PREFIX: Type.String({
    default: 'agw:',
    pattern: '^[A-Za-z0-9:._-]*$',
    description: 'prefix of every Redis key and channel, so deployments can share one Redis',
  }),
  HEARTBEAT_INTERVAL_MS: Int(30_000, 10, 'protocol ping period'),
  RESUME_GRACE_MS: Int(15_000, 0, 'how long a run outlives its last subscriber'),
  RESUME_BUFFER_EVENTS: Int(2000, 1, 'events held per session for resume'),
  RUN_LEASE_MS: Int(10_000, 100, "how long a run's lease lives unrenewed; a dead instance's runs end as interrupted after it"),
  SESSION_TTL_SECONDS: Int(86_400, 1, 'how long a session lives after its last run, resume or REST read'),
  SHUTDOWN_GRACE_MS: Int(10_000, 0, 'how long runs may finish on SIGTERM'),
  MAX_PAYLOAD_BYTES: Type.Optional(
    Type.Integer({ minimum: 64, maximum: MAX_INT, description: 'largest accepted frame; bigger closes 1009 [room for MAX_CONTENT_CHARS characters JSON-escaped]' }),
  ),
  MAX_CONTENT_CHARS: Int(16_000, 1, 'largest chat content; longer gets payload_too_large'),
  MAX_CONNECTIONS_PER_USER: Int(20, 1, 'beyond it: close 4029'),
  RATE_LIMIT_MESSAGES: Int(60, 1, 'frames per user per window'),
  RATE_LIMIT_WINDOW_MS: Int(60_000, 1, 'rate-limit window'),
  // Three watchdogs, each ending the run with upstream_timeout (src/agent/resilience/watchdog.ts):
  // - UPSTREAM_FIRST_TOKEN_TIMEOUT_MS bounds each model call from its request to its first
  //   content chunk, retries and their backoff included (a stalled request is not retried:
  //   the budget is spent);
  // - UPSTREAM_IDLE_TIMEOUT_MS bounds the silence between content chunks after that
  //   (keep-alive comments do not count as content);
  // - UPSTREAM_TIMEOUT_MS bounds the whole run: measured from its first model request (time
  //   spent in tools counts too) and enforced while any of its model calls is waiting on the
  //   upstream, so no run keeps streaming past it. It is the outer bound of the other two.
  UPSTREAM_TIMEOUT_MS: Int(120_000, 1, "whole-run upstream limit, from the run's first model request"),
  UPSTREAM_FIRST_TOKEN_TIMEOUT_MS: Int(60_000, 1, 'limit from a model request to its first content chunk, retries included'),
  UPSTREAM_IDLE_TIMEOUT_MS: Int(30_000, 1, 'limit between upstream content chunks'),
  UPSTREAM_MAX_RETRIES: Int(2, 0, 'retries of a model request that failed before its first chunk (429, 5xx, connection)'),
  CIRCUIT_BREAKER_THRESHOLD: Int(5, 0, 'consecutive upstream failures that open the circuit (0: never)'),
  CIRCUIT_BREAKER_COOLDOWN_MS: Int(30_000, 1, 'how long an open circuit fails runs fast before one probe'),
  MAX_TOOL_ROUNDS: Int(5, 0, 'tool rounds per run'),
  MCP_SERVERS: Text('MCP tool servers: a JSON list of {name, url, headers?, tools?}, or a file path holding one [none]'),
  MCP_CALL_TIMEOUT_MS: Int(60_000, 1, 'limit of one MCP tool call; past it the call is cancelled and the model told'),
  HISTORY_MAX_MESSAGES: Int(50, 2, 'messages kept per session (system prompt excluded)'),
  SLOW_CLIENT_TIMEOUT_MS: Int(30_000, 1, 'how long a socket may stay above its high-water mark'),
  MAX_BUFFERED_BYTES: Int(4_194_304, 1024, 'unsent bytes past which a connection is closed 1008 at once'),
  MAX_PENDING_FRAMES: Int(64, 1, 'received frames that may wait to be served per connection; beyond it: close 1008'),
  MAX_SESSIONS_PER_USER: Int(500, 1, 'sessions one user may hold; a chat creating one more gets too_many_sessions'),
  TOOLS_REQUIRING_APPROVAL: List('tools that run only once a person approves each call (comma-separated; MCP tools by their exposed names)'),
  APPROVAL_TIMEOUT_MS: Int(600_000, 1, 'how long a tool call waits for its approval; then it does not run and the model is told'),
  CLIENT_TOOL_TIMEOUT_MS: Int(120_000, 1, "how long a client tool's call waits for its tool_output"),
  MAX_QUEUED_RUNS: Int(5, 0, 'runs a session may queue behind its active one (chat on_busy enqueue); beyond it: busy'),
  MAX_WATCHED_PER_CONNECTION: Int(32, 1, 'sessions one connection watches at once; one more drops the least recently named'),
  METRICS_TOKEN: Text('bearer token required by /metrics when set [empty: open outside production; in production /metrics answers 401 until it is set]'),
  DEV_TOKEN: Type.Union([Type.Literal('loopback'), Type.Literal('any'), Type.Literal('off')], {
    default: 'loopback',
    description: 'who may mint tokens at /dev/token, served only with the generated development secret (no JWT key set): loopback, any or off',
  }),
  DEMO_UI: Type.Optional(Type.Boolean({ description: 'serve the demo chat page at / [true outside production]' })),
})

export type Env = Static<typeof ConfigSchema>

/**
 * Room for a chat of MAX_CONTENT_CHARS characters however a client escapes them: JSON's worst
 * case is 12 bytes a character (`\ud83d\ude00`, as Python's json.dumps writes an emoji), plus
 * the frame's other fields (ids of at most 128 characters, escaped too).
 */
export const ESCAPED_CHAR_BYTES = 12
export const FRAME_ENVELOPE_BYTES = 4096
export function payloadBytesFor(maxContentChars: number): number {
  return Math.min(maxContentChars * ESCAPED_CHAR_BYTES + FRAME_ENVELOPE_BYTES, MAX_INT)
}

export interface Config extends Omit<Env, 'MAX_PAYLOAD_BYTES'> {
  /** MAX_PAYLOAD_BYTES, or the room a chat of MAX_CONTENT_CHARS escaped characters needs. */
  MAX_PAYLOAD_BYTES: number
  isProduction: boolean
  modelProvider: 'openai' | 'mock'
  demoUi: boolean
  /** Set when no JWT key was configured outside production: the file holding the dev secret. */
  devSecretFile: string | undefined
  jwtSecret: string | undefined
  jwtAlgorithms: string[]
  /** MCP_SERVERS, parsed and validated. */
  mcpServers: McpServerConfig[]
  /** REDIS_CLUSTER's seed nodes (REDIS_URL's host for `true`); undefined for one Redis. */
  redisCluster: Array<{ host: string; port: number }> | undefined
}

export class ConfigError extends Error {
  override name = 'ConfigError'
}

/** Signing algorithms a token may use; `none` is never one of them. */
const JWS_ALGORITHMS = new Set(['HS256', 'HS384', 'HS512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'])

const listKeys = new Set(['JWT_ALGORITHMS', 'ALLOWED_ORIGINS', 'TOOLS', 'TOOLS_REQUIRING_APPROVAL'])
const booleanWords: Record<string, boolean> = { true: true, '1': true, yes: true, false: false, '0': false, no: false }

function schemaOf(key: string): TSchema {
  return (ConfigSchema.properties as Record<string, TSchema>)[key] as TSchema
}

/** A choice names its allowed values; TypeBox alone would say "Expected union value". */
function describe(schema: TSchema, message: string): string {
  const choices = (schema.anyOf as TSchema[] | undefined)?.map((option) => option.const as unknown)
  return choices ? `expected one of ${choices.join(', ')}` : message
}

/** Env strings → typed values; anything that does not convert is left for the validator to name. */
function coerce(key: string, raw: string): unknown {
  if (listKeys.has(key)) return raw.split(',').map((item) => item.trim()).filter(Boolean)
  const { type } = schemaOf(key)
  if (type === 'integer') return /^-?\d+$/.test(raw.trim()) ? Number(raw) : raw
  if (type === 'boolean') return booleanWords[raw.trim().toLowerCase()] ?? raw
  return raw
}

/**
 * Reads the environment into a validated config. Throws ConfigError naming the variable
 * on the first bad value: the service fails at boot, never at request time.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, devSecret = loadOrCreateDevSecret): Config {
  const input: Record<string, unknown> = {}
  for (const key of Object.keys(ConfigSchema.properties)) {
    const raw = env[key]
    if (raw !== undefined && raw !== '') input[key] = coerce(key, raw)
  }
  const withDefaults = Value.Default(ConfigSchema, input)
  const firstError = Value.Errors(ConfigSchema, withDefaults).First()
  if (firstError) {
    // Only variables can fail (the object is ours), and only ones the environment set (defaults are valid).
    const variable = firstError.path.split('/')[1] as string
    throw new ConfigError(`Invalid ${variable}: ${describe(schemaOf(variable), firstError.message)} (got ${JSON.stringify(env[variable])})`)
  }
  return resolve(withDefaults as Env, devSecret)
}

function resolve(env: Env, devSecret: () => { secret: string }): Config {
  const isProduction = env.NODE_ENV === 'production'
  if (env.JWT_SECRET && env.JWT_PUBLIC_KEY) throw new ConfigError('Set JWT_SECRET or JWT_PUBLIC_KEY, not both')
  if (env.JWT_SECRET && Buffer.byteLength(env.JWT_SECRET) < 32) {
    throw new ConfigError('Invalid JWT_SECRET: must be at least 32 bytes')
  }
  if (env.JWT_PUBLIC_KEY && !env.JWT_PUBLIC_KEY.includes('-----BEGIN')) {
    throw new ConfigError('Invalid JWT_PUBLIC_KEY: expected a PEM public key')
  }
  const hasKey = Boolean(env.JWT_SECRET || env.JWT_PUBLIC_KEY)
  if (!hasKey && isProduction) {
    throw new ConfigError('JWT_SECRET or JWT_PUBLIC_KEY is required when NODE_ENV=production')
  }
  const jwtAlgorithms = env.JWT_ALGORITHMS.length > 0 ? env.JWT_ALGORITHMS : env.JWT_PUBLIC_KEY ? ['RS256', 'ES256'] : ['HS256']
  const unknown = jwtAlgorithms.filter((alg) => !JWS_ALGORITHMS.has(alg))
  if (unknown.length > 0) throw new ConfigError(`Invalid JWT_ALGORITHMS: unknown or unsafe ${unknown.join(',')}`)
  const symmetric = jwtAlgorithms.filter((alg) => alg.startsWith('HS'))
  if (env.JWT_PUBLIC_KEY && symmetric.length > 0) {
    throw new ConfigError(`Invalid JWT_ALGORITHMS: ${symmetric.join(',')} cannot be used with JWT_PUBLIC_KEY`)
  }
  if (!env.JWT_PUBLIC_KEY && symmetric.length !== jwtAlgorithms.length) {
    throw new ConfigError('Invalid JWT_ALGORITHMS: only HS256/HS384/HS512 work with JWT_SECRET')
  }
  if (env.MODEL_PROVIDER === 'openai' && !env.OPENAI_API_KEY && !env.OPENAI_BASE_URL) {
    throw new ConfigError('MODEL_PROVIDER=openai needs OPENAI_API_KEY (or OPENAI_BASE_URL for a keyless local server)')
  }
  const unknownTools = env.TOOLS.filter((name) => !Object.hasOwn(builtinTools, name))
  if (unknownTools.length > 0) {
    throw new ConfigError(`Invalid TOOLS: unknown ${unknownTools.join(',')} (allowed: ${Object.keys(builtinTools).join(', ')})`)
  }
  let mcpServers: McpServerConfig[]
  try {
    mcpServers = parseMcpServers(env.MCP_SERVERS)
  } catch (err) {
    throw new ConfigError(`Invalid MCP_SERVERS: ${(err as Error).message}`)
  }
  const redisCluster = clusterSeeds(env.REDIS_CLUSTER, env.REDIS_URL)
  return {
    ...env,
    redisCluster,
    MAX_PAYLOAD_BYTES: env.MAX_PAYLOAD_BYTES ?? payloadBytesFor(env.MAX_CONTENT_CHARS),
    isProduction,
    modelProvider: env.MODEL_PROVIDER ?? (env.OPENAI_API_KEY ? 'openai' : 'mock'),
    demoUi: env.DEMO_UI ?? !isProduction,
    devSecretFile: hasKey ? undefined : DEV_SECRET_FILE,
    jwtSecret: env.JWT_SECRET ?? (env.JWT_PUBLIC_KEY ? undefined : devSecret().secret),
    jwtAlgorithms,
    mcpServers,
  }
}

/** REDIS_CLUSTER → seed nodes: `true` takes REDIS_URL's host, a list names them (`host:port,…`). */
function clusterSeeds(value: string | undefined, url: string | undefined): Config['redisCluster'] {
  const flag = booleanWords[(value ?? '').trim().toLowerCase()]
  if (value === undefined || flag === false) return undefined
  if (!url) throw new ConfigError('REDIS_CLUSTER needs REDIS_URL (its credentials and TLS apply to every node)')
  if (flag === true) {
    const parsed = new URL(url)
    return [{ host: parsed.hostname, port: Number(parsed.port || 6379) }]
  }
  return value.split(',').map((item) => {
    const match = /^\s*\[?([^\]\s]+?)\]?:(\d{1,5})\s*$/.exec(item)
    const port = Number(match?.[2])
    if (!match || port < 1 || port > 65535) throw new ConfigError(`Invalid REDIS_CLUSTER: expected true or host:port seed nodes (got ${JSON.stringify(item.trim())})`)
    return { host: match[1] as string, port }
  })
}
