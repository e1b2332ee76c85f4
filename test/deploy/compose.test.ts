import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingHttpHeaders } from 'node:http'
import { createRequire } from 'node:module'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { Ajv } from 'ajv'
import addFormatsModule from 'ajv-formats'
import WebSocket, { WebSocketServer } from 'ws'
import { parse } from 'yaml'
import { ConfigSchema } from '../../src/config.ts'

/** Every variable the service reads (src/config.ts). */
const CONFIG_VARIABLES: readonly string[] = Object.keys(ConfigSchema.properties)
const HEARTBEAT_MS = 30_000
const SHUTDOWN_GRACE_MS = 10_000

const root = new URL('../../', import.meta.url)
const read = (path: string) => readFileSync(new URL(path, root), 'utf8')
const require = createRequire(import.meta.url)

// ajv-formats is CommonJS with only a default export; under nodenext its type is the module.
const addFormats = ((addFormatsModule as { default?: unknown }).default ?? addFormatsModule) as unknown as (
  ajv: Ajv,
) => Ajv

type Json = null | boolean | number | string | Json[] | { [key: string]: Json }
type Obj = { [key: string]: Json }
const isObj = (value: unknown): value is Obj => typeof value === 'object' && value !== null && !Array.isArray(value)
const obj = (value: unknown, what: string): Obj => {
  if (!isObj(value)) throw new Error(`${what} is not a mapping`)
  return value
}

/** Compose / nginx durations ("20s", "1m30s", "75", "1500ms") in milliseconds. */
function durationMs(text: string): number {
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, '': 1000 }
  const parts = [...text.trim().matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d|)/g)]
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== text.trim()) throw new Error(`bad duration ${text}`)
  return parts.reduce((sum, [, n, unit]) => sum + Number(n) * (units[unit ?? ''] ?? Number.NaN), 0)
}

// ---------------------------------------------------------------------------------------------
// docker-compose.yml

const compose = obj(parse(read('docker-compose.yml')), 'docker-compose.yml')
const services = obj(compose.services, 'services')
const service = (name: string) => obj(services[name], `services.${name}`)

t.test('docker-compose.yml is valid against the compose-spec schema', async (t) => {
  const schema = JSON.parse(read('test/fixtures/compose-spec.json')) as Obj
  const ajv = new Ajv({ allErrors: true, strict: false })
  addFormats(ajv)
  // The spec names the draft-07 meta-schema by its https URL; ajv knows it by http.
  const draft7 = require('ajv/dist/refs/json-schema-draft-07.json') as Obj
  ajv.addMetaSchema({ ...draft7, $id: 'https://json-schema.org/draft-07/schema' })
  const validate = ajv.compile(schema)
  t.ok(validate(compose), 'valid compose file')
  t.same(validate.errors ?? [], [], 'no schema errors')
  t.notOk('version' in compose, 'no obsolete version: key')
  t.notOk(validate({ services: { app: { image: 'x', no_such_key: true } } }), 'the schema rejects unknown keys')
})

t.test('compose uses only the service config variables', async (t) => {
  const interpolated = new Set<string>()
  const walk = (value: unknown) => {
    if (typeof value === 'string') {
      for (const m of value.replaceAll('$$', '').matchAll(/\$(?:\{([A-Za-z_]\w*)|([A-Za-z_]\w*))/g)) {
        interpolated.add((m[1] ?? m[2])!)
      }
    } else if (Array.isArray(value)) value.forEach(walk)
    else if (isObj(value)) for (const [k, v] of Object.entries(value)) (walk(k), walk(v))
  }
  walk(compose)
  t.ok(interpolated.has('JWT_SECRET') && interpolated.has('PORT'), 'found the interpolations')
  for (const name of interpolated) t.ok(CONFIG_VARIABLES.includes(name), `\${${name}} is a config variable`)

  for (const [name, svc] of Object.entries(services)) {
    const env = obj(svc, name).environment
    const keys = env === undefined ? [] : Array.isArray(env) ? env.map((e) => String(e).split('=')[0]!) : Object.keys(obj(env, name))
    for (const key of keys) t.ok(CONFIG_VARIABLES.includes(key), `${name}: environment ${key} is a config variable`)
  }
})

t.test('compose services', async (t) => {
  const redis = service('redis')
  t.match(redis.image, /^redis:7-alpine$/)
  t.match(JSON.stringify(redis.command), /--appendonly.*yes/, 'AOF on')
  t.ok(Array.isArray(redis.volumes) && redis.volumes.some((v) => /:\/data$/.test(String(v))), 'redis data on a volume')
  t.match(JSON.stringify(obj(redis.healthcheck, 'redis.healthcheck').test), /redis-cli.*ping/)

  const app = service('app')
  t.equal(app.build, '.')
  t.ok(Number(obj(app.deploy, 'app.deploy').replicas) >= 2, 'at least two replicas')
  t.equal(app.init, true, 'init reaps zombies')
  t.same(app.env_file, [{ path: '.env', required: false }], '.env is optional')
  const env = obj(app.environment, 'app.environment')
  t.equal(env.REDIS_URL, 'redis://redis:6379')
  t.equal(env.NODE_ENV, 'production')
  t.equal(env.TRUST_PROXY, 'true')
  t.equal(env.PORT, '8080', 'the app listens where nginx.conf expects it')
  t.match(env.JWT_SECRET, /^\$\{JWT_SECRET:\?.+\}$/, 'JWT_SECRET is required')
  const grace = durationMs(String(app.stop_grace_period))
  t.ok(grace > SHUTDOWN_GRACE_MS + 5000, `stop_grace_period ${grace} ms > SHUTDOWN_GRACE_MS + 5 s`)
  t.same(obj(app.depends_on, 'app.depends_on').redis, { condition: 'service_healthy' })

  const nginx = service('nginx')
  t.match(nginx.image, /^nginx:1\.\d+(\.\d+)?-alpine$/, 'a pinned nginx release')
  t.ok(Array.isArray(nginx.volumes) && nginx.volumes.includes('./deploy/nginx.conf:/etc/nginx/nginx.conf:ro'))
  t.same(nginx.ports, ['${PORT:-8080}:8080'])
  t.ok(isObj(nginx.depends_on) ? 'app' in nginx.depends_on : Array.isArray(nginx.depends_on) && nginx.depends_on.includes('app'))
})

// ---------------------------------------------------------------------------------------------
// Dockerfile

interface Instruction {
  op: string
  args: string
}

function dockerfile(): Instruction[][] {
  const lines: string[] = []
  let pending = ''
  for (const raw of read('Dockerfile').split('\n')) {
    if (/^\s*#/.test(raw)) continue
    if (raw.endsWith('\\')) pending += raw.slice(0, -1) + ' '
    else if (pending || raw.trim()) (lines.push((pending + raw).trim()), (pending = ''))
  }
  const stages: Instruction[][] = []
  for (const line of lines) {
    const [, op = '', args = ''] = /^(\S+)\s*(.*)$/.exec(line) ?? []
    if (op.toUpperCase() === 'FROM') stages.push([])
    stages.at(-1)?.push({ op: op.toUpperCase(), args })
  }
  return stages
}

t.test('Dockerfile', async (t) => {
  const stages = dockerfile()
  t.ok(stages.length >= 2, 'multi-stage')
  for (const stage of stages) t.match(stage[0]!.args, /^node:24-slim(@sha256:[0-9a-f]{64})?(\s+AS\s+\S+)?$/i, 'node:24-slim')
  const all = stages.flat()
  t.ok(all.some((i) => i.op === 'RUN' && /npm ci\b.*--omit=dev/.test(i.args)), 'npm ci --omit=dev')
  t.ok(all.some((i) => i.op === 'COPY' && /package-lock\.json/.test(i.args)), 'the lockfile is used')

  const final = stages.at(-1)!
  const args = (op: string) => final.filter((i) => i.op === op).map((i) => i.args)
  t.ok(args('ENV').some((a) => /(^|\s)NODE_ENV=production(\s|$)/.test(a)), 'ENV NODE_ENV=production')
  t.same(args('USER').at(-1), 'node', 'runs as node')
  t.same(args('EXPOSE'), ['8080'])
  t.same(args('STOPSIGNAL'), ['SIGTERM'])
  t.match(args('HEALTHCHECK').join(), /CMD \["node", "-e", ".*\/health\/live/)

  const copies = args('COPY')
  for (const c of copies) t.match(c, /--chown=node:node/, `COPY ${c} is owned by node`)
  t.ok(copies.some((c) => /--from=\S+.*node_modules/.test(c)), 'node_modules from the deps stage')
  for (const path of ['package.json', 'src', 'public']) {
    t.ok(copies.some((c) => c.split(/\s+/).includes(path)), `copies ${path}`)
  }
  t.notOk(copies.some((c) => /\s\.\s/.test(` ${c} `.replace(/\s\S+$/, ' '))), 'no COPY . of the whole context')

  const cmd = args('CMD')
  t.equal(cmd.length, 1, 'one CMD')
  const exec = JSON.parse(cmd[0]!) as unknown
  const pkg = JSON.parse(read('package.json')) as { scripts: { start: string } }
  // The start script checks the Node version first, then execs the same command the image runs.
  t.same(exec, pkg.scripts.start.split('&& exec ').at(-1)!.split(/\s+/), 'exec-form CMD is the start script')
})

t.test('.dockerignore', async (t) => {
  const lines = read('.dockerignore').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))
  for (const p of ['node_modules', '.git', '.env', 'test', 'coverage', '.tap']) t.ok(lines.includes(p), `ignores ${p}`)
  for (const p of ['src', 'public', 'package.json', 'package-lock.json']) t.notOk(lines.includes(p), `keeps ${p}`)
})

// ---------------------------------------------------------------------------------------------
// deploy/nginx.conf

const nginxConf = read('deploy/nginx.conf')
const nginxCode = nginxConf.replace(/#.*$/gm, '')

/** The body of the first `name {` block (braces balanced). */
function block(text: string, head: RegExp): string {
  const m = head.exec(text)
  if (!m) throw new Error(`no block ${head}`)
  let depth = 0
  for (let i = m.index + m[0].length - 1; i < text.length; i++) {
    if (text[i] === '{') depth++
    else if (text[i] === '}' && --depth === 0) return text.slice(m.index + m[0].length, i)
  }
  throw new Error(`unbalanced block ${head}`)
}
const directives = (text: string, name: string) =>
  [...text.matchAll(new RegExp(`(?:^|[;{}\\s])${name}\\s+([^;{]*);`, 'g'))].map((m) => m[1]!.trim())

t.test('nginx.conf', async (t) => {
  t.ok(/^events\s*\{/m.test(nginxCode) && /^http\s*\{/m.test(nginxCode), 'complete config: events {} and http {}')
  const http = block(nginxCode, /^http\s*\{/m)
  const upstream = block(http, /upstream\s+agent_gateway\s*\{/)
  t.notMatch(nginxCode, /\b(ip_hash|hash|sticky|least_conn|least_time|random)\b/, 'round-robin: no ip_hash, hash, sticky')
  const servers = directives(upstream, 'server')
  t.same(servers.map((s) => s.split(/\s+/)[0]), ['app:8080'], 'the compose app service')
  t.match(servers[0], /max_fails=\d+/)
  t.match(servers[0], /fail_timeout=\d+/)

  t.match(http, /map\s+\$http_upgrade\s+\$connection_upgrade\s*\{/, 'Connection map')
  const server = block(http, /server\s*\{/)
  t.same(directives(server, 'listen'), ['8080'])
  t.same(directives(server, 'proxy_http_version'), ['1.1'])
  const headers = directives(server, 'proxy_set_header')
  for (const h of [
    'Upgrade $http_upgrade',
    'Connection $connection_upgrade',
    'X-Forwarded-For $remote_addr',
    'X-Forwarded-Proto $scheme',
    'X-Forwarded-Host $host',
  ]) {
    t.ok(headers.includes(h), `proxy_set_header ${h}`)
  }
  t.ok(!/location[^{]*\{[^}]*proxy_set_header/.test(server), 'no location overrides (and so drops) the server headers')
  t.match(directives(server, 'proxy_next_upstream')[0], /\berror\b.*\btimeout\b/)
  const bodyLimit = directives(server, 'client_max_body_size')[0] ?? '1m'
  t.ok(/^\d+[kK]?$/.test(bodyLimit) && Number.parseInt(bodyLimit) <= 64, `client_max_body_size ${bodyLimit} is small`)

  const ws = block(server, /location\s+\/ws\/\s*\{/)
  t.match(ws, /proxy_pass\s+http:\/\/agent_gateway;/)
  t.same(directives(ws, 'proxy_buffering'), ['off'])
  for (const d of ['proxy_read_timeout', 'proxy_send_timeout']) {
    const value = directives(ws, d)[0] ?? '60s'
    t.ok(durationMs(value) > HEARTBEAT_MS, `${d} ${value} is above the ${HEARTBEAT_MS / 1000} s heartbeat`)
  }

  const formats = directives(http, 'log_format')
  t.ok(formats.length > 0, 'a log format of its own')
  for (const f of formats) {
    t.match(f, /\$uri\b/, 'logs the path')
    t.notMatch(f, /\$(request|request_uri|args|query_string|arg_\w+|http_referer|http_authorization|http_sec_websocket_protocol)\b/, 'no query string or credentials')
  }
  const names = formats.map((f) => f.split(/\s+/)[0])
  for (const a of directives(nginxCode, 'access_log')) {
    const [, format] = a.split(/\s+/)
    t.ok(a === 'off' || (format !== undefined && names.includes(format)), `access_log ${a} uses a safe format`)
  }
})

// ---------------------------------------------------------------------------------------------
// A real nginx, when one is installed (apt-get install nginx-light)

function findNginx(): string | undefined {
  for (const bin of ['nginx', '/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/local/nginx/sbin/nginx']) {
    if (spawnSync(bin, ['-v'], { stdio: 'ignore' }).status === 0) return bin
  }
  return undefined
}
const nginxBin = findNginx()
const noNginx = nginxBin ? false : 'no nginx binary on this machine (apt-get install nginx-light to run this check)'

/** nginx.conf with the compose upstream replaced (`resolve` dropped: it needs nginx >= 1.27.3 and a DNS). */
function nginxConfWith(upstreams: string[], listen?: string): string {
  const line = /^([ \t]*)server\s+app:8080\b([^;]*);/m
  const m = line.exec(nginxConf)
  if (!m) throw new Error('no `server app:8080` line in deploy/nginx.conf')
  const params = m[2]!.replace(/\s+resolve\b/, '')
  let conf = nginxConf.replace(line, () => upstreams.map((u) => `${m[1]}server ${u}${params};`).join('\n'))
  if (listen) conf = conf.replace(/^([ \t]*)listen\s+8080;/m, (_, indent: string) => `${indent}listen ${listen};`)
  return conf
}

/**
 * A prefix directory holding the config, and files for nginx's stdout and stderr: Node's
 * stdio pipes are sockets, and Linux cannot open /dev/stdout on a socket.
 */
function prefixDir(t: { teardown: (fn: () => void) => void }, conf: string) {
  const dir = mkdtempSync(join(tmpdir(), 'agw-nginx-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'nginx.conf'), conf)
  const out = join(dir, 'stdout.log')
  const err = join(dir, 'stderr.log')
  const fds = [openSync(out, 'w'), openSync(err, 'w')] as const
  t.teardown(() => fds.forEach((fd) => closeSync(fd)))
  return {
    args: ['-e', 'stderr', '-p', dir + '/', '-c', join(dir, 'nginx.conf')],
    stdio: ['ignore', fds[0], fds[1]] as ['ignore', number, number],
    stdout: () => readFileSync(out, 'utf8'),
    stderr: () => readFileSync(err, 'utf8'),
  }
}

t.test('nginx -t accepts nginx.conf', { skip: noNginx }, async (t) => {
  const nginx = prefixDir(t, nginxConfWith(['127.0.0.1:1']))
  const r = spawnSync(nginxBin!, ['-t', ...nginx.args], { stdio: nginx.stdio })
  t.equal(r.status, 0, nginx.stderr())
  t.match(nginx.stderr(), /test is successful/)
})

t.test('nginx round-robins, fails over and upgrades WebSockets', { skip: noNginx }, async (t) => {
  const seen: { id: string; url: string; headers: IncomingHttpHeaders }[] = []
  const backends = await Promise.all(
    ['a', 'b'].map(async (id) => {
      const server = createServer((req, res) => {
        seen.push({ id, url: req.url ?? '', headers: req.headers })
        res.end(id)
      })
      const wss = new WebSocketServer({ server, handleProtocols: (protocols) => [...protocols][0] ?? false })
      wss.on('connection', (socket, req) => {
        seen.push({ id, url: req.url ?? '', headers: req.headers })
        socket.on('message', (data) => socket.send(`${id}:${String(data)}`))
      })
      server.listen(0, '127.0.0.1')
      await once(server, 'listening')
      t.teardown(() => new Promise<void>((resolve) => (wss.close(), server.close(() => resolve()))))
      return `127.0.0.1:${(server.address() as AddressInfo).port}`
    }),
  )
  const probe = createServer().listen(0, '127.0.0.1')
  await once(probe, 'listening')
  const port = (probe.address() as AddressInfo).port
  await new Promise((resolve) => probe.close(resolve))

  // 127.0.0.1:1 refuses: a dead instance whose new connections must fail over.
  const nginx = prefixDir(t, nginxConfWith([...backends, '127.0.0.1:1'], `127.0.0.1:${port}`))
  const proc = spawn(nginxBin!, [...nginx.args, '-g', 'daemon off;'], { stdio: nginx.stdio })
  t.teardown(async () => {
    if (proc.exitCode === null) (proc.kill('SIGTERM'), await once(proc, 'exit'))
  })
  const base = `http://127.0.0.1:${port}`
  for (let i = 0; ; i++) {
    try {
      await fetch(`${base}/health/live`)
      break
    } catch (err) {
      if (i > 100 || proc.exitCode !== null) throw new Error(`nginx did not start: ${nginx.stderr()}`, { cause: err })
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
  seen.length = 0

  const ids: string[] = []
  for (let i = 0; i < 6; i++) {
    const res = await fetch(`${base}/health/live?token=s3cret`, { headers: { 'x-forwarded-for': '203.0.113.9' } })
    t.equal(res.status, 200, 'no request fails on the dead instance')
    ids.push(await res.text())
  }
  t.same(new Set(ids), new Set(['a', 'b']), `spread over both live instances: ${ids.join('')}`)
  const last = seen.at(-1)!
  t.equal(last.headers['x-forwarded-for'], '127.0.0.1', 'X-Forwarded-For is the peer, not what the client claimed')
  t.equal(last.headers['x-forwarded-proto'], 'http')
  t.equal(last.url, '/health/live?token=s3cret', 'the query reaches the app')

  const socket = new WebSocket(`ws://127.0.0.1:${port}/ws/agent?resume=1`, ['agent.v1', 'bearer.x'])
  await once(socket, 'open')
  t.equal(socket.protocol, 'agent.v1', 'subprotocols pass through')
  socket.send('ping')
  const [reply] = (await once(socket, 'message')) as [Buffer]
  t.match(String(reply), /^[ab]:ping$/, 'frames flow both ways')
  const upgrade = seen.at(-1)!
  t.equal(upgrade.headers.upgrade, 'websocket')
  t.match(upgrade.headers.connection, /upgrade/i)
  socket.close()
  await once(socket, 'close')

  // nginx writes a WebSocket's access-log line once it closes.
  for (let i = 0; i < 100 && !nginx.stdout().includes('/ws/agent'); i++) await new Promise((r) => setTimeout(r, 20))
  const stdout = nginx.stdout()
  t.match(stdout, /"GET \/health\/live HTTP\/1\.1" 200/, 'access log has the path')
  t.match(stdout, /"GET \/ws\/agent HTTP\/1\.1" 101/, 'and the WebSocket')
  t.notMatch(stdout, /s3cret|resume=/, 'but never the query string')
})
