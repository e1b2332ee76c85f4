import t from 'tap'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createVerifier } from 'fast-jwt'
import { generateKeyPairSync } from 'node:crypto'
import { parseTtl } from '../../src/cli/token.ts'
import { runNode } from './spawn.ts'

const SECRET = 'cli-test-secret-cli-test-secret-cli!'

t.test('parseTtl', async (t) => {
  t.equal(parseTtl('90'), 90_000)
  t.equal(parseTtl('90s'), 90_000)
  t.equal(parseTtl('2m'), 120_000)
  t.equal(parseTtl(' 1h '), 3_600_000)
  t.equal(parseTtl('7d'), 604_800_000)
  for (const bad of ['', 'abc', '1w', '-5m', '1.5h', 'm']) t.throws(() => parseTtl(bad), { message: /invalid --ttl/ }, JSON.stringify(bad))
})

t.test('npm run token -- alice --ttl 2m prints a token valid for the configured secret', async (t) => {
  const ran = await runNode('src/cli/token.ts', ['alice', '--ttl', '2m'], { JWT_SECRET: SECRET })
  t.equal(ran.code, 0, ran.stderr)
  t.match(ran.stdout, /^[\w-]+\.[\w-]+\.[\w-]+\n$/)
  const claims = createVerifier({ key: SECRET, algorithms: ['HS256'] })(ran.stdout.trim())
  t.equal(claims.sub, 'alice')
  t.equal(claims.exp - claims.iat, 120)
  t.throws(() => createVerifier({ key: 'another-secret-another-secret-another' })(ran.stdout.trim()), 'not valid for another secret')
})

t.test('default ttl is one hour; issuer, audience and the first algorithm are honoured', async (t) => {
  const ran = await runNode('src/cli/token.ts', ['bob'], {
    JWT_SECRET: SECRET,
    JWT_ISSUER: 'https://issuer.example',
    JWT_AUDIENCE: 'agw',
    JWT_ALGORITHMS: 'HS512,HS256',
  })
  t.equal(ran.code, 0, ran.stderr)
  const token = ran.stdout.trim()
  t.equal(JSON.parse(Buffer.from(token.split('.')[0] as string, 'base64url').toString()).alg, 'HS512')
  const claims = createVerifier({ key: SECRET, algorithms: ['HS512'], allowedIss: 'https://issuer.example', allowedAud: 'agw' })(token)
  t.match(claims, { sub: 'bob', iss: 'https://issuer.example', aud: 'agw' })
  t.equal(claims.exp - claims.iat, 3600)
})

t.test('outside production without a secret: signs with the dev secret file, made once', async (t) => {
  const cwd = mkdtempSync(join(tmpdir(), 'agw-cli-'))
  t.teardown(() => rmSync(cwd, { recursive: true, force: true }))
  const first = await runNode('src/cli/token.ts', ['carol'], {}, { cwd })
  t.equal(first.code, 0, first.stderr)
  const secret = readFileSync(join(cwd, '.dev-secret'), 'utf8').trim()
  t.equal(createVerifier({ key: secret })(first.stdout.trim()).sub, 'carol')
  const second = await runNode('src/cli/token.ts', ['dave'], {}, { cwd })
  t.equal(createVerifier({ key: secret })(second.stdout.trim()).sub, 'dave', 'same secret the second time')
})

t.test('npm run token -- --help prints usage and exits 0', async (t) => {
  for (const flag of ['--help', '-h']) {
    const ran = await runNode('src/cli/token.ts', [flag], {})
    t.equal(ran.code, 0, flag)
    t.match(ran.stdout, /^usage: npm run token -- <user-id>/, flag)
    t.equal(ran.stderr, '')
  }
})

t.test('bad arguments exit 1 with a message', async (t) => {
  const pem = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString()
  const cases: Array<[string, string[], Record<string, string>, RegExp]> = [
    ['no user id', [], { JWT_SECRET: SECRET }, /^usage: npm run token -- <user-id>/],
    ['bad ttl', ['alice', '--ttl', 'soon'], { JWT_SECRET: SECRET }, /invalid --ttl "soon"/],
    ['unknown option', ['alice', '--admin'], { JWT_SECRET: SECRET }, /Unknown option '--admin'/],
    ['ttl without a value', ['alice', '--ttl'], { JWT_SECRET: SECRET }, /--ttl/],
    ['public key only', ['alice'], { JWT_PUBLIC_KEY: pem }, /JWT_PUBLIC_KEY, mint tokens with your identity provider/],
    ['bad config', ['alice'], { JWT_SECRET: SECRET, PORT: 'abc' }, /Invalid PORT/],
  ]
  const results = await Promise.all(cases.map(([, args, env]) => runNode('src/cli/token.ts', args, env)))
  for (const [index, [name, , , message]] of cases.entries()) {
    const ran = results[index]!
    t.equal(ran.code, 1, `${name}: exit 1`)
    t.match(ran.stderr, message, `${name}: says why`)
    t.equal(ran.stdout, '', `${name}: no token`)
  }
})

t.test('node src/server.ts refuses to start in production without a JWT secret', async (t) => {
  const ran = await runNode('src/server.ts', [], { NODE_ENV: 'production', PORT: '0', HOST: '127.0.0.1' })
  t.not(ran.code, 0)
  t.match(ran.stderr, /JWT_SECRET/)
  t.match(ran.stderr, /^agent-gateway: JWT_SECRET or JWT_PUBLIC_KEY is required when NODE_ENV=production/)
})

t.test('node src/server.ts names a bad variable and exits 1', async (t) => {
  const ran = await runNode('src/server.ts', [], { JWT_SECRET: SECRET, HEARTBEAT_INTERVAL_MS: '-1' })
  t.equal(ran.code, 1)
  t.match(ran.stderr, /^agent-gateway: Invalid HEARTBEAT_INTERVAL_MS/)
})
